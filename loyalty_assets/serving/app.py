"""The online churn-scoring API (Starlette under uvicorn).

- ``GET /v1/members/{loyalty_number}``: the member's row of the latest scored week.
- ``POST /v1/score``: one member scored from their attributes and monthly activity.
- ``GET /v1/model``: the champions, their metrics, how the churn model runs, when they loaded and
  which worker process answers.
- ``GET /healthz`` (the process answers) and ``GET /readyz`` (champions loaded), without a key.

``/v1`` needs ``Authorization: Bearer <key>`` with a key of ``LOYALTY_API_KEYS``. Every response
of a scored request carries ``x-churn-model-version`` and ``x-segmentation-model-version``; the
access log is one JSON line per request with the latency and those versions, never a header,
a body or a stack trace.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from loyalty_assets.domain.storage import ObjectStore
from loyalty_assets.serving.champions import ScoredWeek, ServingState
from loyalty_assets.serving.scoring import ScoreRequest, field_errors, score_request
from loyalty_assets.settings import ApiSettings

access_log = logging.getLogger("loyalty_assets.serving.access")
error_log = logging.getLogger("loyalty_assets.serving")
PUBLIC_PATHS = ("/healthz", "/readyz")


def _json_value(value: Any) -> Any:
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.strftime("%Y-%m-%d")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _encoded(body: Any) -> bytes:
    return json.dumps(body, default=_json_value, separators=(",", ":"), allow_nan=False).encode()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoded(body), status_code=status, headers=headers, media_type="application/json")


def _encoded_prediction(row: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = {key: _json_value(value) for key, value in row.items()}
    payload = _encoded(body)
    headers = {
        "x-churn-model-version": str(body["churn_model_version"]),
        "x-segmentation-model-version": str(body["segmentation_model_version"]),
    }
    return payload, headers


def _prediction(encoded: tuple[bytes, dict[str, str]]) -> Response:
    payload, headers = encoded
    return Response(payload, headers=headers, media_type="application/json")


class WeekAnswers:
    """The member look-up answers of one scored week, each encoded once, then reused while the week serves.

    At most ``MAX_ANSWERS`` are kept (about 600 bytes each): a full store starts again empty.
    """

    MAX_ANSWERS = 100_000

    def __init__(self) -> None:
        self.week: ScoredWeek | None = None
        self.answers: dict[int, tuple[bytes, dict[str, str]]] = {}

    def answer(self, week: ScoredWeek, loyalty_number: int) -> tuple[bytes, dict[str, str]] | None:
        if week is not self.week or len(self.answers) >= self.MAX_ANSWERS:
            self.week, self.answers = week, {}
        answer = self.answers.get(loyalty_number)
        if answer is None:
            row = week.row(loyalty_number)
            if row is None:
                return None
            answer = self.answers[loyalty_number] = _encoded_prediction(row)
        return answer


def _invalid(location: list, message: str, kind: str) -> Response:
    return json_response({"detail": [{"loc": location, "msg": message, "type": kind}]}, status=422)


def _unavailable() -> Response:
    return json_response({"detail": "no champion loaded yet"}, status=503)


class BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(store: ObjectStore, settings: ApiSettings, *, refresh_in_background: bool = True) -> Starlette:
    state = ServingState(store)
    week_answers = WeekAnswers()
    keys = [key.encode() for key in settings.api_keys]

    async def member(request: Request) -> Response:
        text = request.path_params["loyalty_number"]
        if not text.isdigit():
            return _invalid(["path", "loyalty_number"], "must be a positive integer", "int_parsing")
        week = state.week
        if week is None:
            return json_response({"detail": "no scored week in the lake yet"}, status=503)
        answer = week_answers.answer(week, int(text))
        if answer is None:
            return json_response({"detail": f"member {text} is not in the scored week {week.week}"}, status=404)
        return _prediction(answer)

    async def score(request: Request) -> Response:
        champions = state.champions  # one read: this request is served by these versions throughout
        if champions is None:
            return _unavailable()
        try:
            raw = await _read_body(request, settings.max_body_bytes)
        except BodyTooLarge:
            return json_response({"detail": f"body larger than {settings.max_body_bytes} bytes"}, status=413)
        try:
            body = ScoreRequest.model_validate_json(raw)
        except ValidationError as error:
            details = [
                {"loc": ["body", *error_detail["loc"]], "msg": error_detail["msg"], "type": error_detail["type"]}
                for error_detail in error.errors(include_url=False, include_input=False, include_context=False)
            ]
            return json_response({"detail": details}, status=422)
        errors = field_errors(body)
        if errors:
            return json_response({"detail": errors}, status=422)
        try:
            row = score_request(champions, body)
        except ValueError as error:  # the member is not enrolled and active at as_of
            return _invalid(["body", "as_of"], str(error), "value_error")
        return _prediction(_encoded_prediction(row))

    async def model(request: Request) -> Response:
        champions = state.champions
        body = {
            "champions": None if champions is None else champions.describe(),
            "scored_week": None if state.week is None else {"week": state.week.week, "loaded_at": state.week.loaded_at},
            "last_refresh": state.last_refresh,
            "last_refresh_error": state.last_error,
            "reload_seconds": settings.reload_seconds,
            "process_id": os.getpid(),  # which uvicorn worker answered: each loads the champions on its own
        }
        headers = None
        if champions is not None:
            headers = {
                "x-churn-model-version": champions.churn_version,
                "x-segmentation-model-version": champions.segmentation_version,
            }
        return json_response(body, headers=headers)

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if state.champions is None:
            return json_response({"status": "not ready", "detail": state.last_error or "loading"}, status=503)
        body = {"status": "ready", "churn_model_version": state.champions.churn_version, "process_id": os.getpid()}
        return json_response(body)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        stop = threading.Event()
        thread = None
        if refresh_in_background:
            arguments = (state, settings.reload_seconds, stop)
            thread = threading.Thread(target=_load_then_poll, args=arguments, name="champion-refresh", daemon=True)
            thread.start()
        yield
        stop.set()
        if thread is not None:
            thread.join(timeout=10)

    app = Starlette(
        routes=[
            Route("/v1/members/{loyalty_number}", member, methods=["GET"]),
            Route("/v1/score", score, methods=["POST"]),
            Route("/v1/model", model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return GuardedApp(app, keys)


def _load_then_poll(state: ServingState, interval: float, stop: threading.Event) -> None:
    state.refresh()
    state.run_refresh_loop(interval, stop)


def _authorized(header: bytes | None, keys: list[bytes]) -> bool:
    if not header or not header.startswith(b"Bearer "):
        return False
    presented = header[len(b"Bearer ") :].strip()
    # Every key is compared, each in constant time, so the answer time does not tell which one matched.
    matches = [hmac.compare_digest(presented, key) for key in keys]
    return any(matches)


class GuardedApp:
    """ASGI wrapper: API-key check on /v1, a plain 500 for any error, one JSON access-log line per request."""

    def __init__(self, app: Starlette, keys: list[bytes]):
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "headers": {}, "started": False}

        async def recording_send(message) -> None:
            if message["type"] == "http.response.start":
                seen.update(status=message["status"], headers=dict(message.get("headers", [])), started=True)
            await send(message)

        path = scope["path"]
        try:
            authorization = dict(scope["headers"]).get(b"authorization")
            if not path.startswith(PUBLIC_PATHS) and not _authorized(authorization, self.keys):
                response = json_response(
                    {"detail": "missing or invalid API key"}, status=401, headers={"www-authenticate": "Bearer"}
                )
                await response(scope, receive, recording_send)
            else:
                await self.app(scope, receive, recording_send)
        except Exception as error:  # answered as a plain 500; the type alone is logged, never a trace or body
            error_log.error("request %s %s failed: %s", scope["method"], path, type(error).__name__)
            if not seen["started"]:
                await json_response({"detail": "internal error"}, status=500)(scope, receive, recording_send)
        headers = seen["headers"]
        access_log.info(
            json.dumps(
                {
                    "method": scope["method"],
                    "path": path,
                    "status": seen["status"],
                    "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
                    "churn_model_version": headers.get(b"x-churn-model-version", b"").decode() or None,
                    "segmentation_model_version": headers.get(b"x-segmentation-model-version", b"").decode() or None,
                },
                separators=(",", ":"),
            )
        )


def app_from_environment() -> GuardedApp:
    """The API over the lake and keys of the environment, with its logging set up: what each uvicorn
    worker process builds for itself, so each loads and hot-reloads the champions on its own."""
    from loyalty_assets.runner import store_for_uri
    from loyalty_assets.settings import load_api_settings, load_settings

    api_settings = load_api_settings()
    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The lines print the message only: skip the caller, thread and process look-ups of every record
    # (the logging HOWTO's "Optimization" settings).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    return build_app(store_for_uri(settings.lake_uri, settings), api_settings)


def serve(host: str, port: int, workers: int = 1) -> None:
    """Run the API with uvicorn on ``host:port`` in ``workers`` processes sharing the socket."""
    import uvicorn

    from loyalty_assets.settings import load_api_settings, load_settings

    load_api_settings(), load_settings()  # a settings error stops here, not in every worker
    uvicorn.run(
        "loyalty_assets.serving.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        server_header=False,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
