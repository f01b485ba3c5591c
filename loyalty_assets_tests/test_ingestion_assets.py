"""The daily raw assets through Dagster: local folder and S3 (moto), reruns, failures, gates."""

from __future__ import annotations

import os

import boto3
import dagster as dg
import pandas as pd
import pytest

from loyalty_assets.defs.ingestion.assets import raw_loyalty_tables
from loyalty_assets.domain.drop_commits import read_commit
from loyalty_assets.domain.ingest import SourceFile, ingest_drop
from loyalty_assets.domain.lake_keys import table_version_key
from loyalty_assets.domain.storage import LocalStore, S3Store, parquet_bytes_to_dataframe
from loyalty_assets_tests.dagster_helpers import local_test_resources
from loyalty_assets_tests.drop_files import (
    ACTIVITY_HEADER,
    LOYALTY_HEADER,
    activity_row,
    csv_bytes,
    member_row,
    small_drop,
    write_drop,
)

DAY = "2026-11-02"


def _materialize(resources, partition=DAY, raise_on_error=True):
    return dg.materialize(
        [raw_loyalty_tables], partition_key=partition, resources=resources, raise_on_error=raise_on_error
    )


def _lake_table(store, asset: str, partition: str = DAY) -> pd.DataFrame:
    return parquet_bytes_to_dataframe(store.get_bytes(read_commit(store, partition).tables[asset]))


def test_local_materialization_matches_the_domain_ingest(tmp_path):
    landing = LocalStore(tmp_path / "landing")
    small_drop(landing, DAY)
    result = _materialize(local_test_resources(tmp_path))
    assert result.success
    lake = LocalStore(tmp_path / "lake")
    expected = ingest_drop(
        [SourceFile("l.csv", landing.get_bytes(f"loyalty_history/dt={DAY}/customer_loyalty_history.csv"))],
        [SourceFile("a.csv", landing.get_bytes(f"flight_activity/dt={DAY}/customer_flight_activity.csv"))],
        drop_date=DAY,
    )
    pd.testing.assert_frame_equal(_lake_table(lake, "raw_loyalty_history"), expected.loyalty)
    pd.testing.assert_frame_equal(_lake_table(lake, "raw_flight_activity"), expected.activity)
    materializations = {
        event.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert materializations["raw_flight_activity"]["dagster/row_count"].value == 20 * 6
    assert materializations["raw_quarantine"]["quarantined_rows"].value == 0
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 11 and all(check.passed for check in checks)


def test_s3_materialization_through_moto(tmp_path, s3_bucket, aws_env):
    client = boto3.client("s3", endpoint_url=aws_env)
    landing = S3Store(client, s3_bucket, "landing")
    small_drop(landing, DAY, members=12)
    resources = local_test_resources(
        tmp_path, landing_uri=f"s3://{s3_bucket}/landing", lake_uri=f"s3://{s3_bucket}/lake"
    )
    assert _materialize(resources).success
    lake = S3Store(client, s3_bucket, "lake")
    loyalty = _lake_table(lake, "raw_loyalty_history")
    assert sorted(loyalty["loyalty_number"]) == list(range(100000, 100012))
    assert len(_lake_table(lake, "raw_flight_activity")) == 12 * 6


def test_rematerializing_replaces_the_partition(tmp_path):
    small_drop(LocalStore(tmp_path / "landing"), DAY)
    resources = local_test_resources(tmp_path)
    _materialize(resources)
    first = _lake_table(LocalStore(tmp_path / "lake"), "raw_flight_activity")
    _materialize(resources)
    second = _lake_table(LocalStore(tmp_path / "lake"), "raw_flight_activity")
    pd.testing.assert_frame_equal(first, second)
    assert len(second) == 20 * 6


def test_failure_in_the_middle_of_a_write_keeps_the_previous_version(tmp_path, monkeypatch):
    landing = LocalStore(tmp_path / "landing")
    small_drop(landing, DAY, members=5)
    resources = local_test_resources(tmp_path)
    _materialize(resources)
    lake = LocalStore(tmp_path / "lake")
    before = _lake_table(lake, "raw_flight_activity")
    small_drop(landing, DAY, members=9)

    def broken_fsync(fd):
        raise OSError("disk vanished mid-write")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    result = _materialize(resources, raise_on_error=False)
    monkeypatch.undo()
    assert not result.success
    pd.testing.assert_frame_equal(_lake_table(lake, "raw_flight_activity"), before)
    assert not [path for path in (tmp_path / "lake").rglob("*.tmp")]


def test_missing_column_fails_naming_file_and_column_and_writes_nothing(tmp_path):
    landing = LocalStore(tmp_path / "landing")
    header = ACTIVITY_HEADER.replace(",Total Flights", "")
    rows = [",".join(activity_row(100000, 2026, 10).split(",")[:5] + activity_row(100000, 2026, 10).split(",")[6:])]
    landing.put_bytes(f"loyalty_history/dt={DAY}/l.csv", csv_bytes(LOYALTY_HEADER, [member_row(100000)]))
    landing.put_bytes(f"flight_activity/dt={DAY}/a.csv", csv_bytes(header, rows))
    result = _materialize(local_test_resources(tmp_path), raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "a.csv" in failure.message and "Total Flights" in failure.message
    assert not (tmp_path / "lake").exists() or not list((tmp_path / "lake").rglob("*.parquet"))


def test_no_files_for_the_partition_fails_clearly(tmp_path):
    result = _materialize(local_test_resources(tmp_path), raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert f"dt={DAY}" in message and "no files" in message


def test_quarantine_above_the_limit_rejects_the_drop_but_keeps_its_quarantine(tmp_path):
    members = [member_row(100000 + index) for index in range(10)]
    activity = [activity_row(100000 + index, 2026, 10) for index in range(10)]
    activity += [f"{999000 + index},2026,10,1,0,1,200,20,0,0" for index in range(5)]  # unknown members
    write_drop(LocalStore(tmp_path / "landing"), DAY, members, activity)
    result = _materialize(local_test_resources(tmp_path), raise_on_error=False)
    assert not result.success
    failed = {check.check_name for check in result.get_asset_check_evaluations() if not check.passed}
    assert failed == {"quarantine_share_within_limit"}
    lake = LocalStore(tmp_path / "lake")
    assert read_commit(lake, DAY) is None and not lake.list_keys("raw_flight_activity")
    quarantine_key = table_version_key("raw_quarantine", DAY, result.run_id)
    quarantine = parquet_bytes_to_dataframe(lake.get_bytes(quarantine_key))
    assert quarantine["reason"].tolist() == ["unknown_member"] * 5
    assert lake.url(quarantine_key) in result.get_step_failure_events()[0].step_failure_data.error.message


@pytest.mark.parametrize("limit", [0.5])
def test_quarantine_limit_is_configurable(tmp_path, limit):
    members = [member_row(100000 + index) for index in range(10)]
    activity = [activity_row(100000 + index, 2026, 10) for index in range(10)]
    activity += ["100001,2026,13,1,0,1,200,20,0,0"]
    write_drop(LocalStore(tmp_path / "landing"), DAY, members, activity)
    result = dg.materialize(
        [raw_loyalty_tables],
        partition_key=DAY,
        resources=local_test_resources(tmp_path),
        run_config={"ops": {"raw_loyalty_tables": {"config": {"max_quarantine_share": limit}}}},
    )
    assert result.success
    quarantine = _lake_table(LocalStore(tmp_path / "lake"), "raw_quarantine")
    assert quarantine[["row_number", "column", "reason"]].values.tolist() == [[11, "Month", "month_out_of_range"]]
