"""Latency and sustained rate of the online API (``loyalty-assets serve``) over loopback.

Set-up (not timed): the demo's 15,000-member home (sample data, ingest, training, scoring), or the
home in ``BENCH_SERVING_HOME`` where that demo already ran, then the API on a free 127.0.0.1 port
in ``BENCH_SERVING_WORKERS`` uvicorn worker processes (default 2, one per core of the 2-core
machine the figures are from). The load generator is bounded in count and
time and talks to 127.0.0.1 only:

- latency: one client, one keep-alive HTTP/1.1 connection, requests back to back after a warm-up
  of 200: ``LATENCY_REQUESTS`` ``POST /v1/score`` with members of the scored week, then as many
  ``GET /v1/members/{id}``;
- sustained rate: ``RATE_PER_SECOND`` ``POST /v1/score`` per second for ``RATE_SECONDS`` seconds,
  open loop (each request has its scheduled send time), spread over ``RATE_CONNECTIONS``
  keep-alive connections in threads; any status but 200 or a transport error is an error, and a
  request more than ``RATE_GRACE_SECONDS`` behind its schedule is not sent but counted as missed.

Wall-clock latency on a shared machine depends on what else runs, so the report also gives the
server processes' CPU time per request (from ``/proc``, what one request costs the service) and the
load average during the run.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from loyalty_assets_tests.api_process import api_process

AS_OF = date(2026, 11, 27)
WEEK = "2026-11-23"
KEY = "bench-key"
LATENCY_REQUESTS = 2000
RATE_PER_SECOND = 500
RATE_SECONDS = 30
RATE_CONNECTIONS = 4
RATE_GRACE_SECONDS = 5.0
WORKERS = int(os.environ.get("BENCH_SERVING_WORKERS", "2"))


class _Connection:
    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def send(self, method: str, path: str, body: bytes | None = None) -> int:
        self.connection.request(method, path, body=body, headers=self.headers)
        response = self.connection.getresponse()
        response.read()
        return response.status


def _bodies(lake: Path) -> tuple[list[int], list[bytes]]:
    from loyalty_assets.domain.drop_commits import read_commit
    from loyalty_assets.domain.storage import LocalStore, parquet_bytes_to_dataframe

    def plain(value):
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return None
        return value.item() if isinstance(value, np.generic) else value

    week = parquet_bytes_to_dataframe((lake / "churn_predictions" / f"{WEEK}.parquet").read_bytes())
    store = LocalStore(lake)
    tables = read_commit(store, AS_OF.isoformat()).tables
    loyalty = parquet_bytes_to_dataframe(store.get_bytes(tables["raw_loyalty_history"]))
    activity = parquet_bytes_to_dataframe(store.get_bytes(tables["raw_flight_activity"]))
    activity = activity[activity["year"] * 12 + activity["month"] <= 2026 * 12 + 10].drop(
        columns=["flag_before_enrollment"]
    )
    months = {member: rows.drop(columns=["loyalty_number"]) for member, rows in activity.groupby("loyalty_number")}
    loyalty = loyalty.drop(columns=["flag_negative_salary", "flag_unknown_category"]).set_index("loyalty_number")
    members = week["loyalty_number"].sample(n=500, random_state=1).tolist()
    bodies = []
    for member in members:
        body = {name: plain(value) for name, value in loyalty.loc[member].items()}
        rows = [{name: plain(value) for name, value in row.items()} for row in months[member].to_dict("records")]
        bodies.append(json.dumps({"loyalty_number": member, **body, "as_of": "2026-10", "activity": rows}).encode())
    return members, bodies


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children, the uvicorn workers
    (Linux ``/proc/<pid>/stat`` and ``/proc/<pid>/task/<pid>/children``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_seconds(int(child)) for child in children)


def _percentiles(seconds: list[float]) -> str:
    values = np.array(seconds) * 1000.0
    return f"p50 {np.percentile(values, 50):.2f} ms, p99 {np.percentile(values, 99):.2f} ms"


def _latency(port: int, pid: int, members: list[int], bodies: list[bytes]) -> tuple[str, str]:
    client = _Connection(port)
    for index in range(200):
        assert client.send("POST", "/v1/score", bodies[index % len(bodies)]) == 200
    requests = {
        "POST": [("POST", "/v1/score", bodies[index % len(bodies)]) for index in range(LATENCY_REQUESTS)],
        "GET": [("GET", f"/v1/members/{members[index % len(members)]}", None) for index in range(LATENCY_REQUESTS)],
    }
    figures = []
    for kind in ("POST", "GET"):
        seconds = []
        cpu_before = _cpu_seconds(pid)
        for method, path, body in requests[kind]:
            started = time.perf_counter()
            status = client.send(method, path, body)
            seconds.append(time.perf_counter() - started)
            assert status == 200, status
        cpu_ms = (_cpu_seconds(pid) - cpu_before) * 1000.0 / LATENCY_REQUESTS
        figures.append(f"{_percentiles(seconds)}, server CPU {cpu_ms:.2f} ms/request")
    return figures[0], figures[1]


def _sustained(port: int, bodies: list[bytes]) -> str:
    total = RATE_PER_SECOND * RATE_SECONDS
    start = time.perf_counter() + 0.5
    errors: list[str] = []
    latencies: list[float] = []
    missed: list[int] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        client = _Connection(port)
        for index in range(offset, total, RATE_CONNECTIONS):
            due = start + index / RATE_PER_SECOND
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            if pause < -RATE_GRACE_SECONDS:  # the server fell behind: the rest counts as missed, not sent
                with lock:
                    missed.append(len(range(index, total, RATE_CONNECTIONS)))
                return
            try:
                status = client.send("POST", "/v1/score", bodies[index % len(bodies)])
            except OSError as error:
                status = type(error).__name__
                client = _Connection(port)
            # Latency from the scheduled send time, so a late start counts against the server.
            with lock:
                latencies.append(time.perf_counter() - due)
                if status != 200:
                    errors.append(str(status))

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(RATE_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return (
        f"{len(latencies)} POST in {elapsed:.1f} s ({len(latencies) / elapsed:.0f}/s, target {RATE_PER_SECOND}/s "
        f"over {RATE_CONNECTIONS} connections), {len(errors)} errors, {sum(missed)} not sent "
        f"(over {RATE_GRACE_SECONDS} s late), {_percentiles(latencies)}"
    )


def _scored_home() -> Path:
    """``BENCH_SERVING_HOME`` when it holds the demo's scored week, else a new home the demo runs in."""
    os.environ.pop("DAGSTER_HOME", None)
    reused = os.environ.get("BENCH_SERVING_HOME")
    if reused:
        home = Path(reused)
        if not (home / "lake" / "churn_predictions" / f"{WEEK}.parquet").exists():
            raise FileNotFoundError(f"BENCH_SERVING_HOME {home} holds no scored week {WEEK}")
        os.environ["LOYALTY_HOME"] = str(home)
        return home
    home = Path(tempfile.mkdtemp(prefix="loyalty_bench_serving_"))
    os.environ["LOYALTY_HOME"] = str(home)
    from loyalty_assets.runner import demo
    from loyalty_assets.settings import load_settings

    demo(load_settings(), AS_OF, echo=lambda line: None)
    return home


def bench_online_api():
    """POST /v1/score and GET /v1/members latency with one client, then 500 req/s for 30 s."""
    home = _scored_home()
    members, bodies = _bodies(home / "lake")
    environment = {**os.environ, "LOYALTY_API_KEYS": KEY, "PYTHONPATH": os.getcwd()}
    with api_process(environment, home / "serve.log", workers=WORKERS) as (port, process):
        started = time.perf_counter()
        post, get = _latency(port, process.pid, members, bodies)
        sustained = _sustained(port, bodies)
        seconds = time.perf_counter() - started
        churn = json.loads(_model(port))["champions"]["churn"]
    inference = churn["inference"]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return seconds, (
        f"{WORKERS} uvicorn worker(s); one client, {LATENCY_REQUESTS} each: POST /v1/score {post} (target p50 <= 2, p99 <= 10); "
        f"GET /v1/members {get} (target p99 <= 3); sustained: {sustained}; "
        f"engine {inference['engine']}, max |compiled - sklearn| {inference['compiled_max_abs_difference']:.2g}, "
        f"one-member path {'on' if churn['one_member_path']['enabled'] else 'off'}; "
        f"load average {load} on {os.cpu_count()} CPUs"
    )


def _model(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/v1/model", headers={"Authorization": f"Bearer {KEY}"})
    return connection.getresponse().read().decode()
