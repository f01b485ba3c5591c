"""Faulty drops never reach the lake: truncated or altered files are rejected by the completeness
gate, a drop's tables are committed together or not at all, and coarse partitions read the latest
accepted drop (issue 11, points 1, 2 and 6)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest

from loyalty_assets.defs.features.assets import customer_features, scoring_features
from loyalty_assets.defs.ingestion.assets import raw_loyalty_tables
from loyalty_assets.defs.storage import LakeParquetIOManager
from loyalty_assets.domain.completeness import manifest_bytes
from loyalty_assets.domain.drop_commits import accepted_drop_dates, read_commit
from loyalty_assets.domain.lake_keys import table_version_key
from loyalty_assets.domain.sample_data import SampleConfig, drop_keys, write_drops
from loyalty_assets.domain.storage import LocalStore, S3Store, parquet_bytes_to_dataframe
from loyalty_assets_tests.dagster_helpers import local_test_resources
from loyalty_assets_tests.drop_files import activity_row, member_row, write_drop

GOOD, LATEST = "2026-11-02", "2026-11-03"  # both in week 2026-11-02 and month 2026-11
ACTIVITY_KEY = {day: drop_keys(pd.Timestamp(day).date(), "csv")[1] for day in (GOOD, LATEST)}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample_landing(tmp_path_factory) -> Path:
    """Two honest sample drops (with manifests), written once and copied by each test."""
    root = tmp_path_factory.mktemp("sample_landing")
    write_drops(LocalStore(root), [pd.Timestamp(day).date() for day in (GOOD, LATEST)], SampleConfig(customers=600))
    return root


@pytest.fixture
def home(tmp_path, sample_landing) -> Path:
    shutil.copytree(sample_landing, tmp_path / "landing")
    return tmp_path


def cut_point(data: bytes, mode: str) -> int:
    """90 % of the bytes, at a line break, or inside the last field of a row (a 40 becomes a 4)."""
    end = data.rfind(b"\r\n", 0, int(len(data) * 0.9))
    if mode == "line":
        return end + 2
    while not data[end - 2 : end].isdigit():
        end = data.rfind(b"\r\n", 0, end)
    return end - 1


def cut_activity(landing: LocalStore, day: str, mode: str, keep_manifest: bool = False) -> None:
    key = ACTIVITY_KEY[day]
    data = landing.get_bytes(key)
    landing.put_bytes(key, data[: cut_point(data, mode)])
    if not keep_manifest:
        landing.delete(f"{key.rsplit('/', 1)[0]}/_manifest.json")


def lake_files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def ingest(resources, day: str, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize([raw_loyalty_tables], partition_key=day, resources=resources, raise_on_error=raise_on_error)


def failed_checks(result: dg.ExecuteInProcessResult) -> set[str]:
    return {
        f"{check.asset_key.to_user_string()}.{check.check_name}"
        for check in result.get_asset_check_evaluations()
        if not check.passed
    }


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return result.get_step_failure_events()[0].step_failure_data.error.message


def committed_table(store, table: str, day: str) -> pd.DataFrame:
    return parquet_bytes_to_dataframe(store.get_bytes(read_commit(store, day).tables[table]))


@pytest.mark.parametrize("mode", ["line", "field"])
def test_cut_drop_is_rejected_and_the_lake_stays_byte_identical(home, mode):
    resources = local_test_resources(home)
    ingest(resources, GOOD)
    cut_activity(LocalStore(home / "landing"), LATEST, mode)
    before = lake_files(home / "lake")

    result = ingest(resources, LATEST, raise_on_error=False)

    assert not result.success
    assert failed_checks(result) == {
        "raw_flight_activity.last_complete_month_complete",
        "raw_flight_activity.rows_within_bounds_of_previous_drop",
    }
    assert "the last complete month 2026-10 has no activity rows" in failure_message(result)
    after = lake_files(home / "lake")
    assert {key: after[key] for key in before} == before
    assert set(after) - set(before) == {table_version_key("raw_quarantine", LATEST, result.run_id)}
    assert accepted_drop_dates(LocalStore(home / "lake")) == [pd.Timestamp(GOOD).date()]


def test_cut_first_drop_is_rejected_without_a_previous_drop_or_manifest(home):
    cut_activity(LocalStore(home / "landing"), GOOD, "line")
    result = ingest(local_test_resources(home), GOOD, raise_on_error=False)
    assert failed_checks(result) == {"raw_flight_activity.last_complete_month_complete"}
    assert read_commit(LocalStore(home / "lake"), GOOD) is None


def test_cut_drop_with_its_manifest_fails_the_manifest_too(home):
    resources = local_test_resources(home)
    ingest(resources, GOOD)
    cut_activity(LocalStore(home / "landing"), LATEST, "field", keep_manifest=True)
    result = ingest(resources, LATEST, raise_on_error=False)
    assert "raw_flight_activity.matches_manifest" in failed_checks(result)
    assert "sha256 differs from" in failure_message(result)


def test_manifest_mismatch_alone_rejects_the_drop(home):
    landing = LocalStore(home / "landing")
    key = ACTIVITY_KEY[GOOD]
    data = landing.get_bytes(key)
    position = data.rfind(b",1", 0, len(data) // 2) + 1  # one digit changes, the size and the rows stay
    landing.put_bytes(key, data[:position] + b"2" + data[position + 1 :])
    result = ingest(local_test_resources(home), GOOD, raise_on_error=False)
    assert failed_checks(result) == {"raw_flight_activity.matches_manifest"}
    assert f"{landing.url(key)}: sha256 differs from" in failure_message(result)
    assert accepted_drop_dates(LocalStore(home / "lake")) == []


def test_a_correct_manifest_for_several_split_files_is_accepted(home):
    landing = LocalStore(home / "landing")
    key = ACTIVITY_KEY[GOOD]
    folder = key.rsplit("/", 1)[0]
    lines = landing.get_bytes(key).split(b"\r\n")
    header, rows = lines[0], [line for line in lines[1:] if line]
    half = len(rows) // 2
    parts = {
        "part-1.csv": (b"\r\n".join([header, *rows[:half]]) + b"\r\n", half),
        "part-2.csv": (b"\r\n".join([header, *rows[half:]]) + b"\r\n", len(rows) - half),
    }
    landing.delete(key)
    for name, (data, _) in parts.items():
        landing.put_bytes(f"{folder}/{name}", data)
    landing.put_bytes(f"{folder}/_manifest.json", manifest_bytes(parts))
    result = ingest(local_test_resources(home), GOOD)
    assert result.success and not failed_checks(result)


@pytest.mark.parametrize("mode", ["line", "field"])
def test_cut_drop_is_rejected_by_the_cli_run(home, mode):
    cut_activity(LocalStore(home / "landing"), LATEST, mode)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LOYALTY_", "DAGSTER_")) and not key.startswith("AWS_")
    }
    env.update(LOYALTY_HOME=str(home), PYTHONPATH=str(REPO))
    completed = subprocess.run(
        [sys.executable, "-m", "loyalty_assets.cli", "run", "--as-of", LATEST],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert f"daily_ingest_job [{LATEST}] failed" in completed.stderr
    assert "raw_flight_activity.last_complete_month_complete" in completed.stderr
    lake = LocalStore(home / "lake")
    assert accepted_drop_dates(lake) == [pd.Timestamp(GOOD).date()]
    assert {key.split("/")[0] for key in lake.list_keys("")} == {
        "drop_commits",
        "raw_loyalty_history",
        "raw_flight_activity",
        "raw_quarantine",
    }


class SecondTableWriteFails(LakeParquetIOManager):
    """The lake IO manager, with the connection lost while the second raw table is written."""

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        if context.asset_key.to_user_string() == "raw_flight_activity":
            raise ConnectionError("connection reset while writing raw_flight_activity")
        super().handle_output(context, obj)


def _small_drop_members(members: int) -> tuple[list[str], list[str]]:
    """``members`` members flying every month 2026-05 .. 2026-10 (the drop's last complete month)."""
    months = [(2026, month) for month in range(5, 11)]
    return (
        [member_row(100000 + index) for index in range(members)],
        [activity_row(100000 + index, year, month) for index in range(members) for year, month in months],
    )


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_failure_between_raw_writes_leaves_the_previous_drop_visible_together(tmp_path, where, request):
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        client = boto3.client("s3", endpoint_url=request.getfixturevalue("aws_env"))
        landing, lake = S3Store(client, bucket, "landing"), S3Store(client, bucket, "lake")
        resources = local_test_resources(
            tmp_path, landing_uri=f"s3://{bucket}/landing", lake_uri=f"s3://{bucket}/lake"
        )
    else:
        landing, lake = LocalStore(tmp_path / "landing"), LocalStore(tmp_path / "lake")
        resources = local_test_resources(tmp_path)
    write_drop(landing, GOOD, *_small_drop_members(10))
    ingest(resources, GOOD)
    old_loyalty = committed_table(lake, "raw_loyalty_history", GOOD)
    old_activity = committed_table(lake, "raw_flight_activity", GOOD)

    write_drop(landing, GOOD, *_small_drop_members(20))  # re-landed with 10 new members who fly every month
    failing = {**resources, "lake_io_manager": SecondTableWriteFails(lake=resources["lake"])}
    result = ingest(failing, GOOD, raise_on_error=False)

    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    assert 'handling output "raw_flight_activity"' in error.message and "connection reset" in error.cause.message
    assert lake.exists(table_version_key("raw_loyalty_history", GOOD, result.run_id))  # written, not visible
    stored = LakeParquetIOManager(lake=resources["lake"])
    visible = {
        table: stored.stored_partitions(lake, dg.AssetKey(table), [GOOD])[GOOD]()
        for table in ("raw_loyalty_history", "raw_flight_activity")
    }
    pd.testing.assert_frame_equal(visible["raw_loyalty_history"], old_loyalty)
    pd.testing.assert_frame_equal(visible["raw_flight_activity"], old_activity)
    assert len(visible["raw_loyalty_history"]) == 10

    assert ingest(resources, GOOD).success  # the same drop without the fault: both tables move together
    assert len(committed_table(lake, "raw_loyalty_history", GOOD)) == 20
    assert len(committed_table(lake, "raw_flight_activity", GOOD)) == 20 * 6


def test_rejected_relanded_drop_keeps_the_stored_quarantine_on_s3(tmp_path, s3_bucket, aws_env):
    client = boto3.client("s3", endpoint_url=aws_env)
    landing, lake = S3Store(client, s3_bucket, "landing"), S3Store(client, s3_bucket, "lake")
    resources = local_test_resources(
        tmp_path, landing_uri=f"s3://{s3_bucket}/landing", lake_uri=f"s3://{s3_bucket}/lake"
    )
    members, activity = _small_drop_members(50)
    write_drop(landing, GOOD, members, [*activity, "100001,2026,13,1,0,1,200,20,0,0"])
    ingest(resources, GOOD)
    stored_quarantine = committed_table(lake, "raw_quarantine", GOOD)
    assert stored_quarantine["reason"].tolist() == ["month_out_of_range"]

    # Re-landed without October for most members (cut short), plus bad rows of its own.
    truncated = [row for row in activity if ",2026,10," not in row or row.startswith("10000")]
    write_drop(landing, GOOD, members, [*truncated, "999999,2026,9,1,0,1,200,20,0,0"])
    result = ingest(resources, GOOD, raise_on_error=False)

    assert failed_checks(result) == {"raw_flight_activity.last_complete_month_complete"}
    pd.testing.assert_frame_equal(committed_table(lake, "raw_quarantine", GOOD), stored_quarantine)
    rejected_key = table_version_key("raw_quarantine", GOOD, result.run_id)
    assert lake.url(rejected_key) in failure_message(result)
    assert parquet_bytes_to_dataframe(lake.get_bytes(rejected_key))["reason"].tolist() == ["unknown_member"]


def test_coarse_partitions_read_the_accepted_drop_before_a_rejected_latest_day(home):
    resources = local_test_resources(home)
    ingest(resources, GOOD)
    cut_activity(LocalStore(home / "landing"), LATEST, "line")
    assert not ingest(resources, LATEST, raise_on_error=False).success

    assets = [raw_loyalty_tables, customer_features, scoring_features]
    for asset, partition in ((customer_features, "2026-11-01"), (scoring_features, "2026-11-02")):
        result = dg.materialize(assets, selection=[asset], partition_key=partition, resources=resources)
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["source_drop"].value == GOOD, asset.key
