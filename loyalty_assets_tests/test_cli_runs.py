"""`loyalty-assets run` as a new team and an operator use it, in child processes on a fresh home:
start from one history extract, skip a rejected day, and find every CLI run in `dagster dev`
(on its job's Runs tab, with the workspace's repository origin, re-executable from there)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from loyalty_assets.domain import registry
from loyalty_assets.domain.drop_commits import read_commit
from loyalty_assets.domain.storage import LocalStore
from loyalty_assets_tests.dagster_webserver import (
    REPO_ROOT,
    DagsterDev,
    final_run_status,
    graphql,
    project_environment,
)

EXTRACT_DAY = date(2026, 11, 24)  # the single history extract
BAD_DAY = date(2026, 11, 25)
NEXT_DAY = date(2026, 11, 26)
WEEK = "2026-11-23"
CUSTOMERS = "4000"
CLI_TIMEOUT_SECONDS = 900
RUN_TIMEOUT_SECONDS = 300
JOBS = ("daily_ingest_job", "quarterly_segmentation_job", "monthly_churn_training_job", "weekly_scoring_job")

pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning")


@dataclass(frozen=True)
class Home:
    path: Path
    env: dict[str, str]
    first_run: subprocess.CompletedProcess

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "loyalty_assets.cli", *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
        )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    """A fresh home whose landing zone holds one extract, after `run --as-of` that extract's day."""
    path = tmp_path_factory.mktemp("first_extract")
    env = project_environment(path)
    home = Home(path, env, subprocess.CompletedProcess([], 0))
    sample = home.cli("sample-data", "--customers", CUSTOMERS, "--dates", EXTRACT_DAY.isoformat())
    assert sample.returncode == 0, sample.stderr
    return Home(path, env, home.cli("run", "--as-of", EXTRACT_DAY.isoformat()))


def test_one_history_extract_trains_promotes_and_scores_and_says_so(home: Home) -> None:
    assert home.first_run.returncode == 0, home.first_run.stderr
    out = home.first_run.stdout
    assert "no segmentation champion yet and no accepted drop dated 2026-07-01 .. 2026-09-30" in out
    assert "no churn champion yet and no accepted drop dated 2026-10-01 .. 2026-10-31" in out
    assert "running quarterly_segmentation_job for 2026-10-01" in out
    assert "running monthly_churn_training_job for 2026-11-01" in out
    lake = LocalStore(home.path / "lake")
    for kind, partition in (("churn", "2026-11-01"), ("segmentation", "2026-10-01")):
        champion = registry.record(lake, kind, registry.history(lake, kind)[-1]["version"])
        assert champion["source_partition"] == partition and champion["gates_passed"] is True
    assert lake.exists(f"churn_predictions/{WEEK}.parquet")


def _land_drop_without_activity_column(home: Home, day: date) -> None:
    """The extract's data files (no manifest) re-landed on ``day`` with the activity file's
    ``Total Flights`` column cut."""
    landing = LocalStore(home.path / "landing")
    for key in landing.list_keys(""):
        if f"dt={EXTRACT_DAY}" not in key or key.endswith("_manifest.json"):
            continue
        data = landing.get_bytes(key)
        if key.startswith("flight_activity/"):
            lines = data.decode("utf-8-sig").splitlines()
            column = lines[0].split(",").index("Total Flights")
            data = "\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != column) for line in lines).encode()
        landing.put_bytes(key.replace(f"dt={EXTRACT_DAY}", f"dt={day}"), data)


def test_a_failed_day_is_one_summary_line_and_exit_code_1(home: Home) -> None:
    _land_drop_without_activity_column(home, BAD_DAY)
    result = home.cli("run", "--as-of", BAD_DAY.isoformat())
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"loyalty-assets: daily_ingest_job [{BAD_DAY}] failed (run ")
    assert len(lines) == 2 and "Total Flights" in lines[1], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    verbose = home.cli("run", "--as-of", BAD_DAY.isoformat(), "--verbose")
    assert verbose.returncode == 1
    # The Dagster log is on the terminal: the run's failure event and the step's error, then the summary.
    assert "RUN_FAILURE" in verbose.stderr and "Total Flights" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == lines[-1]


def test_the_day_after_a_rejected_drop_skips_it_and_scores(home: Home) -> None:
    sample = home.cli("sample-data", "--customers", CUSTOMERS, "--dates", NEXT_DAY.isoformat())
    assert sample.returncode == 0, sample.stderr
    result = home.cli("run", "--as-of", NEXT_DAY.isoformat())
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith(f"skipping the drop of {BAD_DAY}")]
    assert len(skipped) == 1 and "rejected by its ingest run" in skipped[0]
    assert f"running daily_ingest_job for {BAD_DAY}" not in result.stdout
    assert f"running daily_ingest_job for {NEXT_DAY}" in result.stdout
    assert "running weekly_scoring_job for 2026-11-23" in result.stdout
    lake = LocalStore(home.path / "lake")
    assert read_commit(lake, BAD_DAY.isoformat()) is None
    assert read_commit(lake, NEXT_DAY.isoformat()) is not None


@pytest.fixture(scope="module")
def e2e_env(home: Home) -> dict[str, str]:
    """What the `dagster_dev` fixture serves: the instance the CLI recorded its runs in."""
    return home.env


LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
ALL_RUNS = """
query AllRuns($job: String!) {
  runsOrError(filter: {pipelineName: $job}) {
    ... on Runs { results { runId status tags { key value } repositoryOrigin { repositoryLocationName repositoryName } } }
  }
}
"""
JOB_RUNS_TAB = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) { __typename ... on Pipeline { runs { runId } } }
}
"""
REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: ALL_STEPS}) {
    __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  }
}
"""


def _query(server: DagsterDev, query: str, **variables) -> dict:
    answer = graphql(server.url, query, variables)
    assert "errors" not in answer, answer
    return answer["data"]


def test_cli_runs_are_on_their_job_pages_with_the_workspace_origin(home: Home, dagster_dev: DagsterDev) -> None:
    (location,) = [entry["name"] for entry in _query(dagster_dev, LOCATIONS)["workspaceOrError"]["locationEntries"]]
    for job in JOBS:
        runs = _query(dagster_dev, ALL_RUNS, job=job)["runsOrError"]["results"]
        assert runs, f"no run of {job} in the instance"
        for run in runs:
            assert run["repositoryOrigin"] == {"repositoryLocationName": location, "repositoryName": "__repository__"}
        selector = {"pipelineName": job, "repositoryName": "__repository__", "repositoryLocationName": location}
        tab = _query(dagster_dev, JOB_RUNS_TAB, selector=selector)["pipelineOrError"]
        assert tab["__typename"] == "Pipeline", tab
        assert {run["runId"] for run in tab["runs"]} == {run["runId"] for run in runs}
    rejected = [
        run
        for run in _query(dagster_dev, ALL_RUNS, job="daily_ingest_job")["runsOrError"]["results"]
        if {"key": "dagster/partition", "value": BAD_DAY.isoformat()} in run["tags"]
    ]
    assert len(rejected) == 2 and {run["status"] for run in rejected} == {"FAILURE"}, "the rejected day stays visible"


def test_a_cli_run_is_re_executed_from_the_ui(dagster_dev: DagsterDev) -> None:
    parent = _query(dagster_dev, ALL_RUNS, job="weekly_scoring_job")["runsOrError"]["results"][0]["runId"]
    launched = _query(dagster_dev, REEXECUTE, parentRunId=parent)["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = final_run_status(dagster_dev, run_id, RUN_TIMEOUT_SECONDS)
    assert status == "SUCCESS", f"re-execution {run_id} ended {status}:\n{dagster_dev.log_tail()}"
