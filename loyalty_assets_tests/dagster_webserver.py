"""`dagster dev` serving the project for a test, and GraphQL calls to it (test_browser, test_cli_runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from loyalty_assets_tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DETACHED = REPO_ROOT / "scripts" / "run_detached.py"
SERVER_START_TIMEOUT_SECONDS = 90
SERVER_STOP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class DagsterDev:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def project_environment(home: Path) -> dict[str, str]:
    """This process's environment for a child working on ``home`` and its Dagster instance, with
    this checkout's code and no other ``LOYALTY_*`` or ``DAGSTER_*`` setting."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("LOYALTY_", "DAGSTER_"))
    }
    environment.update(LOYALTY_HOME=str(home), DAGSTER_HOME=str(home / "dagster_home"), PYTHONPATH=str(REPO_ROOT))
    return environment


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


RUN_STATUS_QUERY = "query Status($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }"
FINAL_RUN_STATUSES = ("SUCCESS", "FAILURE", "CANCELED")


def final_run_status(server: DagsterDev, run_id: str, timeout_seconds: float) -> str:
    """The run's status once it has ended; the test fails if it has not ended after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        status = graphql(server.url, RUN_STATUS_QUERY, {"runId": run_id})["data"]["runOrError"]["status"]
        if status in FINAL_RUN_STATUSES:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {status} after {timeout_seconds} s:\n{server.log_tail()}", pytrace=False)
        time.sleep(1)


def _wait_until_serving(server: DagsterDev, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{server.log_tail()}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(
        f"dagster dev did not answer /server_info within {SERVER_START_TIMEOUT_SECONDS} s:\n{server.log_tail()}",
        pytrace=False,
    )


def _stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group (dagster dev shuts its services down), SIGKILL if that takes too long."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
    try:  # anything of the group that outlived dagster dev
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone: the expected case


@contextmanager
def running_dagster_dev(environment: Mapping[str, str], log: Path) -> Iterator[DagsterDev]:
    """`dagster dev` on a free port, in its own process group, stopped as a group afterwards."""
    server = DagsterDev(port=free_port(), log=log)
    command = [
        sys.executable, str(RUN_DETACHED), sys.executable, "-m", "dagster", "dev",
        "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(server.port),
    ]  # fmt: skip
    with server.log.open("w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=dict(environment),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_serving(server, process)
        assert graphql(server.url, "mutation { setNuxSeen }") == {"data": {"setNuxSeen": True}}
        yield server
    finally:
        _stop_process_group(process)
