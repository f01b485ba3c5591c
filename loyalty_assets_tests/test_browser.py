"""End to end: `dagster dev` serves the project, the weekly scoring job runs through GraphQL,
and the asset graph renders in headless Chromium (screenshot in test-artifacts/asset_graph.png)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from playwright.sync_api import expect, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DETACHED = REPO_ROOT / "scripts" / "run_detached.py"
SCREENSHOT = REPO_ROOT / "test-artifacts" / "asset_graph.png"

START_DATE = "2024-01-01"
AS_OF = date(2025, 6, 4)
SCORING_WEEK = (AS_OF - timedelta(days=AS_OF.weekday())).isoformat()  # weekly keys are Mondays
SCORING_JOB = "weekly_scoring_job"
# The scores and everything upstream of them, down to the raw tables, with every group expanded
# (the global lineage page collapses groups once there are several).
GRAPH_PAGE = "/assets/churn_predictions?view=lineage&lineageScope=upstream&lineageDepth=100"
ASSETS_ON_THE_GRAPH = ("churn_predictions", "raw_flight_activity")
GRAPH_VIEWPORT = {"width": 3200, "height": 1800}  # large enough for Dagster to draw full-size nodes

PREPARE_TIMEOUT_SECONDS = 600
SERVER_START_TIMEOUT_SECONDS = 90
RUN_TIMEOUT_SECONDS = 300
SERVER_STOP_TIMEOUT_SECONDS = 30
GRAPH_TIMEOUT_MS = 60_000
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# dagster-graphql's own call into gql uses a deprecated signature.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning")


@dataclass(frozen=True)
class DagsterDev:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def e2e_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a fresh project home whose data is ready for the scoring job."""
    root = tmp_path_factory.mktemp("e2e")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("LOYALTY_")}
    env.update(
        LOYALTY_ENV="local",
        LOYALTY_HOME=str(root / "loyalty_home"),
        DAGSTER_HOME=str(dagster_home),
        LOYALTY_START_DATE=START_DATE,
    )
    # The README's own path, in a child process: sample data, the whole graph, a scored week.
    prepare = subprocess.run(
        [str(Path(sys.executable).with_name("loyalty-assets")), "demo", "--as-of", AS_OF.isoformat()],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=PREPARE_TIMEOUT_SECONDS,
    )
    if prepare.returncode != 0:
        pytest.fail(f"loyalty-assets demo --as-of {AS_OF} failed:\n{prepare.stderr[-4000:]}", pytrace=False)
    return env


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


@pytest.fixture(scope="module")
def dagster_dev(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """`dagster dev` on a free port, in its own process group, stopped as a group afterwards."""
    server = DagsterDev(port=_free_port(), log=tmp_path_factory.mktemp("dagster_dev") / "dagster_dev.log")
    command = [
        sys.executable, str(RUN_DETACHED), sys.executable, "-m", "dagster", "dev",
        "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(server.port),
    ]  # fmt: skip
    with server.log.open("w") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=e2e_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_serving(server, process)
        assert _graphql(server.url, "mutation { setNuxSeen }") == {"data": {"setNuxSeen": True}}
        yield server
    finally:
        _stop_process_group(process)


RUN_FAILURE_QUERY = """
query RunFailure($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      eventConnection {
        events {
          ... on ExecutionStepFailureEvent { stepKey error { message } }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}
"""


def _failure_messages(server: DagsterDev, run_id: str) -> str:
    events = _graphql(server.url, RUN_FAILURE_QUERY, {"runId": run_id})["data"]["runOrError"]["eventConnection"]
    return "\n".join(
        f"{event['stepKey']}: {event['error']['message']}" if "stepKey" in event else event["message"]
        for event in events["events"]
        if event
    )


def test_weekly_scoring_job_succeeds_when_launched_through_graphql(dagster_dev: DagsterDev) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_dev.port)
    run_id = client.submit_job_execution(SCORING_JOB, tags={"dagster/partition": SCORING_WEEK})

    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    status = client.get_run_status(run_id)
    while status != DagsterRunStatus.SUCCESS:
        if status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            pytest.fail(
                f"{SCORING_JOB} [{SCORING_WEEK}] ended {status.value} (run {run_id}):\n"
                f"{_failure_messages(dagster_dev, run_id)}",
                pytrace=False,
            )
        if time.monotonic() > deadline:
            pytest.fail(f"{SCORING_JOB} [{SCORING_WEEK}] still {status.value} after {RUN_TIMEOUT_SECONDS} s")
        time.sleep(1)
        status = client.get_run_status(run_id)

    assert status == DagsterRunStatus.SUCCESS


def test_asset_graph_renders_in_headless_chromium(dagster_dev: DagsterDev, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is not installed: apt-get install -y chromium"
    SCREENSHOT.parent.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            user_data_dir=tmp_path / "chromium_profile",
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=GRAPH_VIEWPORT,
        )
        try:
            page = browser.new_page()
            page.goto(f"{dagster_dev.url}{GRAPH_PAGE}")
            graph_nodes = page.locator("svg foreignObject")
            for name in ASSETS_ON_THE_GRAPH:
                expect(
                    graph_nodes.get_by_text(name, exact=True),
                    f"{name} is not drawn in full on {GRAPH_PAGE}; below zoom 0.6 Dagster draws "
                    "truncated names, so a larger graph needs a larger GRAPH_VIEWPORT",
                ).to_be_visible(timeout=GRAPH_TIMEOUT_MS)
            expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0, timeout=GRAPH_TIMEOUT_MS)
            page.screenshot(path=SCREENSHOT)
        finally:
            browser.close()

    assert SCREENSHOT.stat().st_size > 10_000
