"""Corrupted drops through ``dagster.materialize`` of the ingestion multi-asset (issue 11, points 3 and 9).

A file-level fault fails the partition with one line naming the file (row and column where known)
and what to do, and leaves the lake byte-identical to the previous good run. Implausible values,
months after the drop and conflicting duplicates are quarantined or resolved and counted.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from loyalty_assets.defs.ingestion.assets import raw_loyalty_tables
from loyalty_assets.domain.drop_commits import read_commit
from loyalty_assets.domain.storage import LocalStore, ObjectStore, S3Store, parquet_bytes_to_dataframe, s3_store_error
from loyalty_assets_tests.dagster_helpers import local_test_resources
from loyalty_assets_tests.drop_files import ACTIVITY_HEADER, LOYALTY_HEADER, activity_row, csv_bytes, member_row

DAY = "2026-11-02"
MONTHS = [(2026, month) for month in range(5, 11)]  # the six complete months before the drop's month
MEMBERS = [member_row(100000 + index) for index in range(50)]
ACTIVITY = [activity_row(100000 + index, year, month) for index in range(50) for year, month in MONTHS]
LOYALTY_FILE = f"loyalty_history/dt={DAY}/customer_loyalty_history.csv"
ACTIVITY_FILE = f"flight_activity/dt={DAY}/customer_flight_activity.csv"
AGAIN = "re-export the file and land it again"


def _land(store: ObjectStore, members: list[str] = MEMBERS, activity: list[str] = ACTIVITY) -> None:
    store.put_bytes(LOYALTY_FILE, csv_bytes(LOYALTY_HEADER, members))
    store.put_bytes(ACTIVITY_FILE, csv_bytes(ACTIVITY_HEADER, activity))


def _replace_file(store: ObjectStore, old_key: str, new_key: str, data: bytes) -> None:
    store.delete(old_key)
    store.put_bytes(new_key, data)


def _materialize(resources, run_config=None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_loyalty_tables], partition_key=DAY, resources=resources, run_config=run_config, raise_on_error=False
    )


def _contents(store: ObjectStore) -> dict[str, bytes]:
    return {key: store.get_bytes(key) for key in store.list_keys("")}


def _failure_description(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    return result.get_step_failure_events()[0].step_failure_data.user_failure_data.description


def _raised(result: dg.ExecuteInProcessResult, class_name: str) -> str:
    """The message of the ``class_name`` exception in the failed step's error chain."""
    assert not result.success
    error = result.get_step_failure_events()[0].step_failure_data.error
    while error is not None and error.cls_name != class_name:
        error = error.cause
    assert error is not None, f"no {class_name} in the step's error chain"
    return error.message.split(": ", 1)[1].rstrip("\n")


def _lake_table(lake: ObjectStore, asset: str) -> pd.DataFrame:
    """The committed version of the day's ``asset`` table."""
    return parquet_bytes_to_dataframe(lake.get_bytes(read_commit(lake, DAY).tables[asset]))


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    events = result.get_asset_materialization_events()
    materialization = next(event for event in events if event.asset_key.to_user_string() == asset).materialization
    return {key: value.value for key, value in materialization.metadata.items()}


def _corrupt_crc(data: bytes) -> bytes:
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


def _without_column(header: str, rows: list[str], column: str) -> bytes:
    position = header.split(",").index(column)

    def drop(line: str) -> str:
        return ",".join(value for index, value in enumerate(line.split(",")) if index != position)

    return csv_bytes(drop(header), [drop(row) for row in rows])


def _latin_1(header: str, rows: list[str]) -> bytes:
    return ("\r\n".join([header, *rows]) + "\r\n").encode("latin-1")


GZIPPED_ACTIVITY = gzip.compress(csv_bytes(ACTIVITY_HEADER, ACTIVITY))
FIFTY_MB_ROW = f"100000,2026,7,4,1,5,{'9' * 50_000_000},120,0,0"

# (table file replaced, new file name, its bytes (built lazily), expected message after "<path>: ")
FILE_FAULTS = {
    "empty": (ACTIVITY_FILE, ACTIVITY_FILE, lambda: b"", f"empty file (no header row): {AGAIN}"),
    "header-only": (
        ACTIVITY_FILE,
        ACTIVITY_FILE,
        lambda: csv_bytes(ACTIVITY_HEADER, []),
        f"empty file (no data rows, only the header): {AGAIN}",
    ),
    "missing-column": (
        ACTIVITY_FILE,
        ACTIVITY_FILE,
        lambda: _without_column(ACTIVITY_HEADER, ACTIVITY, "Distance"),
        "missing required column 'Distance' (columns found: Loyalty Number, Year, Month, Flights Booked, Flights "
        "with Companions, Total Flights, Points Accumulated, Points Redeemed, Dollar Cost Points Redeemed): export "
        "the data contract's columns and land it again",
    ),
    "semicolon-delimiter": (
        LOYALTY_FILE,
        LOYALTY_FILE,
        lambda: csv_bytes(LOYALTY_HEADER, MEMBERS).replace(b",", b";"),
        "the header has no commas but holds ';': the file looks ';'-delimited; re-export it comma-separated and "
        "land it again",
    ),
    "latin-1": (
        LOYALTY_FILE,
        LOYALTY_FILE,
        lambda: _latin_1(LOYALTY_HEADER, [*MEMBERS[:2], MEMBERS[2].replace("Toronto", "Montréal"), *MEMBERS[3:]]),
        "row 3, column 'City': invalid UTF-8 byte 0xe9; the file is not UTF-8 (a Latin-1 or Windows-1252 export?): "
        "re-export it as UTF-8 and land it again",
    ),
    "gzip-crc": (
        ACTIVITY_FILE,
        ACTIVITY_FILE + ".gz",
        lambda: _corrupt_crc(GZIPPED_ACTIVITY),
        f"unreadable file: not a valid gzip stream (CRC check failed); the file is damaged or cut short: {AGAIN}",
    ),
    "gzip-cut": (
        ACTIVITY_FILE,
        ACTIVITY_FILE + ".gz",
        lambda: GZIPPED_ACTIVITY[: len(GZIPPED_ACTIVITY) // 2],
        "unreadable file: not a valid gzip stream (Compressed file ended before the end-of-stream marker was "
        f"reached); the file is damaged or cut short: {AGAIN}",
    ),
    "50-MB-line": (
        ACTIVITY_FILE,
        ACTIVITY_FILE,
        lambda: csv_bytes(ACTIVITY_HEADER, [*ACTIVITY[:2], FIFTY_MB_ROW, *ACTIVITY[3:]]),
        "row 3, column 'Distance': a field of 50,000,000 bytes is over the 131,072-byte limit; the file is damaged "
        f"(a lost quote or line break?): {AGAIN}",
    ),
}


@pytest.fixture
def good_run(tmp_path: Path) -> Path:
    """A home whose lake holds the good drop of ``DAY``."""
    _land(LocalStore(tmp_path / "landing"))
    assert _materialize(local_test_resources(tmp_path)).success
    return tmp_path


@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_corrupted_file_fails_in_one_line_naming_it_and_leaves_the_lake_unchanged(good_run, fault):
    replaced, new_key, data, message = FILE_FAULTS[fault]
    landing, lake = LocalStore(good_run / "landing"), LocalStore(good_run / "lake")
    before = _contents(lake)
    _replace_file(landing, replaced, new_key, data())

    description = _failure_description(_materialize(local_test_resources(good_run)))

    assert description == f"{landing.url(new_key)}: {message}"
    assert _contents(lake) == before


def test_absurd_values_and_a_2099_enrollment_are_quarantined_with_their_reason(tmp_path):
    activity = list(ACTIVITY)
    activity[6] = "100001,2026,5,4,1,5,1200,1000000000000,0,0"  # 1e12 points
    activity[12] = "100002,2026,5,4,1,5,1000000000000000,120,0,0"  # 1e15 km
    members = [*MEMBERS, member_row(100050, enrolled=(2099, 1))]
    _land(LocalStore(tmp_path / "landing"), members, [*activity, activity_row(100050, 2026, 10)])

    result = _materialize(local_test_resources(tmp_path))

    assert result.success
    lake = LocalStore(tmp_path / "lake")
    quarantine = _lake_table(lake, "raw_quarantine")
    assert quarantine[["table", "row_number", "column", "reason"]].values.tolist() == [
        ["loyalty_history", 51, "Enrollment Year", "after_drop_date"],
        ["flight_activity", 7, "Points Accumulated", "implausible_value"],
        ["flight_activity", 13, "Distance", "implausible_value"],
        ["flight_activity", 301, "Loyalty Number", "unknown_member"],
    ]
    assert _metadata(result, "raw_quarantine")["quarantined_by_reason"] == {
        "after_drop_date": 1,
        "implausible_value": 2,
        "unknown_member": 1,
    }
    assert 100050 not in _lake_table(lake, "raw_loyalty_history")["loyalty_number"].tolist()
    activity_table = _lake_table(lake, "raw_flight_activity")
    assert len(activity_table) == 300 - 2
    assert activity_table["points_accumulated"].max() < 1_000_000 and activity_table["distance"].max() < 1_000_000


def test_activity_after_the_drop_month_is_quarantined_and_the_month_to_date_is_kept(tmp_path):
    future = [activity_row(100000, 2026, 11), activity_row(100000, 2026, 12), activity_row(100000, 2027, 1)]
    _land(LocalStore(tmp_path / "landing"), MEMBERS, [*ACTIVITY, *future])

    result = _materialize(local_test_resources(tmp_path))

    assert result.success
    lake = LocalStore(tmp_path / "lake")
    quarantine = _lake_table(lake, "raw_quarantine")
    assert quarantine[["row_number", "column", "reason"]].values.tolist() == [
        [302, "Year", "after_drop_date"],
        [303, "Year", "after_drop_date"],
    ]
    months = _lake_table(lake, "raw_flight_activity").query("loyalty_number == 100000")[["year", "month"]]
    assert months.values.tolist()[-1] == [2026, 11]


def test_conflicting_duplicates_are_resolved_by_the_rule_and_counted(tmp_path):
    exact_copy = ACTIVITY[3]  # member 100000, 2026-08
    conflicting = "100001,2026,6,4,1,5,9999,120,0,0"  # same flights as the original row, more distance: it wins
    _land(LocalStore(tmp_path / "landing"), MEMBERS, [*ACTIVITY, exact_copy, conflicting])

    result = _materialize(local_test_resources(tmp_path))

    assert result.success
    metadata = _metadata(result, "raw_flight_activity")
    assert (
        metadata["exact_duplicates_dropped"],
        metadata["conflicting_keys_resolved"],
        metadata["conflicting_rows_dropped"],
    ) == (1, 1, 1)
    activity = _lake_table(LocalStore(tmp_path / "lake"), "raw_flight_activity").set_index(
        ["loyalty_number", "year", "month"]
    )
    assert len(activity) == 300
    assert activity.loc[(100001, 2026, 6), "distance"] == 9999.0
    assert _metadata(result, "raw_quarantine")["quarantined_rows"] == 0


def test_corrupt_gzip_on_s3_names_the_object_and_leaves_the_s3_lake_unchanged(tmp_path, s3_bucket, aws_env):
    client = boto3.client("s3", endpoint_url=aws_env)
    landing, lake = S3Store(client, s3_bucket, "landing"), S3Store(client, s3_bucket, "lake")
    resources = local_test_resources(
        tmp_path, landing_uri=f"s3://{s3_bucket}/landing", lake_uri=f"s3://{s3_bucket}/lake"
    )
    _land(landing)
    assert _materialize(resources).success
    before = _contents(lake)
    _replace_file(landing, ACTIVITY_FILE, ACTIVITY_FILE + ".gz", _corrupt_crc(GZIPPED_ACTIVITY))

    description = _failure_description(_materialize(resources))

    assert description == (
        f"s3://{s3_bucket}/landing/{ACTIVITY_FILE}.gz: unreadable file: not a valid gzip stream (CRC check failed); "
        f"the file is damaged or cut short: {AGAIN}"
    )
    assert _contents(lake) == before


def test_missing_landing_bucket_fails_in_one_line_naming_the_bucket_and_endpoint(tmp_path, aws_env):
    result = _materialize(local_test_resources(tmp_path, landing_uri="s3://no-such-landing/landing"))

    assert _raised(result, "StoreError") == (
        f"s3://no-such-landing/landing/loyalty_history/dt={DAY}/ (endpoint {aws_env}): bucket 'no-such-landing' "
        "does not exist: create it or correct the s3:// URI"
    )
    assert not (tmp_path / "lake").exists()


def test_missing_lake_bucket_fails_in_one_line_naming_the_bucket_and_endpoint(tmp_path, aws_env):
    _land(LocalStore(tmp_path / "landing"))

    result = _materialize(local_test_resources(tmp_path, lake_uri="s3://no-such-lake/lake"))

    message = _raised(result, "StoreError")
    pattern = (
        rf"s3://no-such-lake/lake/\S+ \(endpoint {re.escape(aws_env)}\): bucket 'no-such-lake' does not exist: "
        r"create it or correct the s3:// URI"
    )
    assert re.fullmatch(pattern, message), message


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDenied", "access denied (AccessDenied): check the AWS credentials and the bucket policy"),
        ("InvalidAccessKeyId", "access denied (InvalidAccessKeyId): check the AWS credentials and the bucket policy"),
        ("SlowDown", "S3 GetObject failed (SlowDown: Please\nreduce your request rate.): check the bucket and the "
         "endpoint"),
    ],
)  # fmt: skip
def test_refused_s3_requests_become_one_line_store_errors(code, message):
    refusal = ClientError({"Error": {"Code": code, "Message": "Please\nreduce your request rate."}}, "GetObject")

    error = s3_store_error(refusal, "s3://landing/a.csv", "landing", "http://127.0.0.1:9")

    assert str(error) == f"s3://landing/a.csv (endpoint http://127.0.0.1:9): {message}".replace("\n", " ")
    assert "\n" not in str(error)
