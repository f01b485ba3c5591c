"""Drop completeness signals and drop commits, directly on the domain modules."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from loyalty_assets.domain.completeness import (
    DropProfile,
    last_complete_month_problems,
    manifest_bytes,
    manifest_problems,
    row_count_problems,
    sha256_hex,
)
from loyalty_assets.domain.drop_commits import (
    CommitError,
    accepted_drop_dates,
    commit_drop,
    committed_drops,
    previous_accepted_commit,
    read_commit,
)
from loyalty_assets.domain.ingest import SourceFile, ingest_drop
from loyalty_assets.domain.lake_keys import table_version_key
from loyalty_assets.domain.sample_data import SampleConfig, drop_keys, write_drops
from loyalty_assets.domain.storage import LocalStore

DROP = date(2026, 11, 2)  # last complete month 2026-10


def _activity(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["loyalty_number", "year", "month", "total_flights"])


def _months(members: range, months: list[tuple[int, int]], flights: int = 3) -> list[tuple[int, int, int, int]]:
    return [(member, year, month, flights) for year, month in months for member in members]


# --- last complete month ------------------------------------------------------------------------


def test_complete_extract_passes_with_its_metadata():
    activity = _activity(_months(range(100), [(2026, 9), (2026, 10), (2026, 11)]))
    problems, metadata = last_complete_month_problems(activity, DROP, 0.01)
    assert problems == []
    assert metadata["last_complete_month"] == "2026-10"
    assert metadata["members_active_month_before"] == 100 and metadata["missing_in_last_complete_month"] == 0


def test_members_active_before_but_missing_in_the_last_complete_month_fail_above_the_tolerance():
    activity = _activity(_months(range(100), [(2026, 9)]) + _months(range(98), [(2026, 10)]))
    problems, metadata = last_complete_month_problems(activity, DROP, 0.01)
    assert metadata["missing_in_last_complete_month"] == 2
    assert problems == [
        "2 of 100 members who flew in 2026-09 (2.00%) have no row in the last complete month 2026-10 "
        "(limit 1.00%): the extract looks truncated"
    ]
    assert last_complete_month_problems(activity, DROP, 0.02)[0] == []


def test_only_members_who_flew_count_and_zero_rows_are_rows():
    # 50 members idle in September may be absent in October; a zero row in October counts as present.
    activity = _activity(
        _months(range(50), [(2026, 9)]) + _months(range(50, 100), [(2026, 9)], flights=0)
        + _months(range(50), [(2026, 10)], flights=0)
    )  # fmt: skip
    assert last_complete_month_problems(activity, DROP, 0.0)[0] == []


def test_a_missing_last_complete_month_fails_even_when_nobody_flew_before_it():
    activity = _activity(_months(range(10), [(2026, 8), (2026, 9)], flights=0))
    problems, _ = last_complete_month_problems(activity, DROP, 0.5)
    assert problems == ["the last complete month 2026-10 has no activity rows: the extract looks truncated"]


def test_a_first_month_drop_has_nothing_to_compare():
    activity = _activity(_months(range(10), [(2026, 11)]))
    assert last_complete_month_problems(activity, DROP, 0.0)[0] == []


def test_january_drop_checks_december_of_the_year_before():
    activity = _activity(_months(range(10), [(2026, 11)]) + _months(range(5), [(2026, 12)]))
    problems, metadata = last_complete_month_problems(activity, date(2027, 1, 5), 0.01)
    assert metadata["last_complete_month"] == "2026-12" and metadata["missing_in_last_complete_month"] == 5
    assert "flew in 2026-11" in problems[0]


# --- row counts ---------------------------------------------------------------------------------


def test_row_counts_may_grow_and_shrink_only_within_the_limit():
    assert row_count_problems("flight_activity", 1000, None, None, 0.01) == []
    assert row_count_problems("flight_activity", 5000, 1000, "2026-11-01", 0.01) == []
    assert row_count_problems("flight_activity", 990, 1000, "2026-11-01", 0.01) == []
    assert row_count_problems("flight_activity", 989, 1000, "2026-11-01", 0.01) == [
        "989 flight_activity rows, 1.10% fewer than the 1,000 of the previous accepted drop dt=2026-11-01 "
        "(limit 1.00%): a full extract only grows"
    ]


def test_profile_round_trips_through_a_dict():
    profile = DropProfile(loyalty_rows=10, activity_rows=250, members=9)
    assert DropProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


# --- manifest -----------------------------------------------------------------------------------

FILE = "/landing/flight_activity/dt=2026-11-02/part-1.csv"
DATA = b"\xef\xbb\xbfLoyalty Number,Year\r\n1,2026\r\n2,2026\r\n"


def test_no_manifest_means_nothing_to_match():
    assert manifest_problems("m.json", None, {FILE: DATA}, 2) == []


def test_matching_manifest_passes():
    manifest = manifest_bytes({"part-1.csv": (DATA, 2)})
    assert json.loads(manifest)["files"] == [{"name": "part-1.csv", "rows": 2, "sha256": sha256_hex(DATA)}]
    assert manifest_problems("m.json", manifest, {FILE: DATA}, 2) == []


def test_changed_file_missing_file_extra_file_and_row_count_each_fail():
    manifest = manifest_bytes({"part-1.csv": (DATA, 2), "part-2.csv": (DATA, 2)})
    cut = DATA[:-5]
    problems = manifest_problems("m.json", manifest, {FILE: cut, "/landing/x/extra.csv": DATA}, 3)
    assert problems == [
        "m.json: lists part-2.csv, which is not in the drop",
        "/landing/x/extra.csv: not listed in m.json",
        f"{FILE}: sha256 differs from m.json (the file changed or is incomplete)",
        "m.json: lists 4 data rows, the files hold 3",
    ]


@pytest.mark.parametrize(
    "manifest",
    [b"{not json", b'{"format": "other/2", "files": []}', b'{"format": "loyalty-drop-manifest/1"}', b"[]"],
)
def test_unreadable_manifest_is_one_problem_naming_it(manifest):
    problems = manifest_problems("/landing/m.json", manifest, {FILE: DATA}, 2)
    assert len(problems) == 1 and problems[0].startswith("/landing/m.json: unreadable manifest")


# --- honest drops pass --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        SampleConfig(customers=800),
        SampleConfig(customers=800, activity_variant="8-column", file_format="csv.gz"),
        SampleConfig(customers=800, file_format="parquet"),
    ],
    ids=["csv", "8-column-gzip", "parquet"],
)
def test_sample_drops_with_their_duplicates_and_manifests_pass_every_signal(tmp_path, config):
    store = LocalStore(tmp_path)
    days = [date(2026, 10, 31), date(2026, 11, 1), date(2026, 11, 2)]
    write_drops(store, days, config)
    previous = None
    for day in days:
        tables = {}
        for key in drop_keys(day, config.file_format):
            folder = key.rsplit("/", 1)[0]
            manifest = store.get_bytes(f"{folder}/_manifest.json")
            tables[key.split("/")[0]] = (SourceFile(key, store.get_bytes(key)), manifest)
        result = ingest_drop([tables["loyalty_history"][0]], [tables["flight_activity"][0]], drop_date=day)
        stats = result.stats
        assert stats["exact_duplicates_dropped"] > 0 and stats["conflicting_keys_resolved"] > 0
        assert last_complete_month_problems(result.activity, day, 0.0)[0] == []
        for table, (source, manifest) in tables.items():
            rows = stats["rows_read"][table]
            assert manifest_problems("m", manifest, {source.name: source.data}, rows) == []
            assert row_count_problems(table, rows, previous and previous[table], "before", 0.0) == []
        previous = stats["rows_read"]


# --- commits ------------------------------------------------------------------------------------

TABLES = ("raw_loyalty_history", "raw_flight_activity", "raw_quarantine")


def _write_version(store, drop_date: str, version: str) -> None:
    for table in TABLES:
        store.put_bytes(table_version_key(table, drop_date, version), version.encode())


def test_commit_names_every_table_version_and_is_found_by_date(tmp_path):
    store = LocalStore(tmp_path)
    _write_version(store, "2026-11-01", "run-a")
    commit = commit_drop(store, "2026-11-01", "run-a", {"loyalty_rows": 1, "activity_rows": 2, "members": 1})
    assert read_commit(store, "2026-11-01") == commit
    assert commit.tables["raw_flight_activity"] == "raw_flight_activity/2026-11-01/run-a.parquet"
    assert accepted_drop_dates(store) == [date(2026, 11, 1)]
    assert read_commit(store, "2026-11-02") is None


def test_an_incomplete_version_is_refused_and_the_old_commit_stays(tmp_path):
    store = LocalStore(tmp_path)
    _write_version(store, "2026-11-01", "run-a")
    commit_drop(store, "2026-11-01", "run-a", {})
    store.put_bytes(table_version_key("raw_loyalty_history", "2026-11-01", "run-b"), b"new")
    with pytest.raises(CommitError, match="run-b is incomplete, not committed: .*raw_flight_activity"):
        commit_drop(store, "2026-11-01", "run-b", {})
    assert read_commit(store, "2026-11-01").version == "run-a"


def test_previous_accepted_commit_and_committed_drops_skip_uncommitted_days(tmp_path):
    store = LocalStore(tmp_path)
    for day, version in (("2026-10-30", "a"), ("2026-11-01", "c")):
        _write_version(store, day, version)
        commit_drop(store, day, version, {})
    _write_version(store, "2026-10-31", "b")  # written, never committed (e.g. rejected)
    assert previous_accepted_commit(store, "2026-11-01").drop_date == "2026-10-30"
    assert previous_accepted_commit(store, "2026-10-30") is None
    window = ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"]
    assert {day: commit.version for day, commit in committed_drops(store, window).items()} == {
        "2026-10-30": "a",
        "2026-11-01": "c",
    }


def test_unreadable_commit_names_its_object(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("drop_commits/2026-11-01.json", b"{broken")
    with pytest.raises(CommitError, match=r"drop_commits/2026-11-01.json: unreadable drop commit"):
        read_commit(store, "2026-11-01")
