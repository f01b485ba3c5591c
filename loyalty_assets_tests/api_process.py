"""``loyalty-assets serve`` as a child process on a free loopback port, ready before use and always
stopped: shared by the serving tests and the serving benchmark."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from loyalty_assets_tests.ports import free_port


def _ready_process(port: int) -> int | None:
    """The id of the worker process that answered ``/readyz`` with 200, else None."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        return json.loads(response.read())["process_id"] if response.status == 200 else None
    except OSError:
        return None


@contextmanager
def api_process(
    environment: Mapping[str, str], log_path: Path, timeout: float = 180, workers: int = 1
) -> Iterator[tuple[int, subprocess.Popen]]:
    """Start the API with ``environment`` in ``workers`` processes, wait for ``/readyz``, yield its port
    and (supervising) process, then stop it."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "loyalty_assets.cli", "serve", "--port", str(port), "--workers", str(workers)],
            env=dict(environment),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        ready: set[int | None] = set()
        while len(ready - {None}) < workers:  # fresh connections until every worker has answered ready
            ready.add(_ready_process(port))
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become ready:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.3)
        yield port, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def running_api(
    environment: Mapping[str, str], log_path: Path, timeout: float = 180, workers: int = 1
) -> Iterator[int]:
    """``api_process``, yielding the port only."""
    with api_process(environment, log_path, timeout, workers) as (port, _):
        yield port
