"""Sample landing drops: exact file format, determinism, snapshot semantics and the contract's facts."""

from __future__ import annotations

import gzip
import io
from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loyalty_assets.domain.sample_data import (
    ACTIVITY_HEADER,
    LOYALTY_HEADER,
    SampleConfig,
    default_drop_dates,
    drop_keys,
    extract_as_of,
    month_index,
    simulate_population,
    write_drops,
)
from loyalty_assets.domain.ingest import SourceFile, ingest_drop
from loyalty_assets.domain.storage import LocalStore, parquet_bytes_to_dataframe

LAST_DROP = date(2026, 3, 3)  # the week of drops spans a month boundary
SMALL = SampleConfig(customers=1500)
LOYALTY_HEADER_LINE = (
    b"\xef\xbb\xbfLoyalty Number,Country,Province,City,Postal Code,Gender,Education,Salary,Marital Status,"
    b"Loyalty Card,CLV,Enrollment Type,Enrollment Year,Enrollment Month,Cancellation Year,Cancellation Month\r\n"
)
ACTIVITY_HEADER_LINE = (
    b"\xef\xbb\xbfLoyalty Number,Year,Month,Flights Booked,Flights with Companions,Total Flights,Distance,"
    b"Points Accumulated,Points Redeemed,Dollar Cost Points Redeemed\r\n"
)
ACTIVITY_KEY = ["Loyalty Number", "Year", "Month"]


@pytest.fixture(scope="module")
def population():
    return simulate_population(SMALL, LAST_DROP)


@pytest.fixture(scope="module")
def last_extract(population):
    return extract_as_of(population, LAST_DROP)


def _month(frame: pd.DataFrame, year: str, month: str) -> pd.Series:
    return frame[year] * 12 + frame[month] - 1


def _deduplicated(activity: pd.DataFrame) -> pd.DataFrame:
    """Exact copies dropped, conflicting keys resolved to the row with the most flights (design rule)."""
    unique_rows = activity.drop_duplicates()
    return unique_rows.sort_values("Total Flights", ascending=False, kind="stable").drop_duplicates(ACTIVITY_KEY)


def _closed_months(activity: pd.DataFrame, members: pd.Series, before_month: int) -> pd.DataFrame:
    """Rows of ``members`` for months before ``before_month``, in a canonical order."""
    kept = activity["Loyalty Number"].isin(members) & (_month(activity, "Year", "Month") < before_month)
    return activity[kept].sort_values(list(ACTIVITY_HEADER)).reset_index(drop=True)


def _read_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")


def _as_read_back(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable integer columns as a CSV reader returns them (float with NaN)."""
    nullable = [column for column in frame.columns if isinstance(frame[column].dtype, pd.Int64Dtype)]
    return frame.astype({column: "float64" for column in nullable})


def test_same_seed_writes_identical_bytes_and_another_seed_does_not(tmp_path):
    dates = [date(2026, 2, 28), date(2026, 3, 1)]
    for file_format in ("csv", "csv.gz", "parquet"):
        config = SampleConfig(customers=400, file_format=file_format)
        first, second, other = (
            LocalStore(tmp_path / f"a-{file_format}"),
            LocalStore(tmp_path / f"b-{file_format}"),
            LocalStore(tmp_path / f"c-{file_format}"),
        )
        keys = write_drops(first, dates, config)
        assert write_drops(second, dates, config) == keys
        assert all(first.get_bytes(key) == second.get_bytes(key) for key in keys)
        write_drops(other, dates, SampleConfig(customers=400, file_format=file_format, seed=8))
        assert any(first.get_bytes(key) != other.get_bytes(key) for key in keys)


def test_csv_files_have_bom_crlf_exact_headers_and_original_number_formats(tmp_path, last_extract):
    store = LocalStore(tmp_path)
    loyalty_key, activity_key = write_drops(store, [LAST_DROP], SMALL)
    assert loyalty_key == "loyalty_history/dt=2026-03-03/Customer Loyalty History.csv"
    assert activity_key == "flight_activity/dt=2026-03-03/Customer Flight Activity.csv"
    loyalty_bytes, activity_bytes = store.get_bytes(loyalty_key), store.get_bytes(activity_key)
    assert loyalty_bytes.startswith(LOYALTY_HEADER_LINE)
    assert activity_bytes.startswith(ACTIVITY_HEADER_LINE)
    for data in (loyalty_bytes, activity_bytes):
        assert data.endswith(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n")
        assert b'"' not in data

    loyalty_lines = loyalty_bytes.decode("utf-8-sig").split("\r\n")[1:-1]
    assert len(loyalty_lines) == len(last_extract[0])
    assert any(line.endswith(",,") for line in loyalty_lines), "members without cancellation end in two empty fields"
    assert any(",College,," in line for line in loyalty_lines), "College members have an empty salary"
    activity_text = activity_bytes.decode("utf-8-sig")
    assert ".0," not in activity_text and ".0\r" not in activity_text, "integral numbers are written without decimals"
    assert any(point.endswith((".25", ".5", ".75")) for point in activity_text.split(",")), "bonus points like 183.75"

    pd.testing.assert_frame_equal(_read_csv(loyalty_bytes), _as_read_back(last_extract[0]), check_dtype=False)
    pd.testing.assert_frame_equal(_read_csv(activity_bytes), last_extract[1], check_dtype=False)


def test_gzip_and_parquet_drops_hold_the_same_extract(tmp_path, last_extract):
    csv_store, gzip_store, parquet_store = (LocalStore(tmp_path / name) for name in ("csv", "gz", "parquet"))
    csv_keys = write_drops(csv_store, [LAST_DROP], SMALL)
    gzip_keys = write_drops(gzip_store, [LAST_DROP], SampleConfig(customers=1500, file_format="csv.gz"))
    parquet_keys = write_drops(parquet_store, [LAST_DROP], SampleConfig(customers=1500, file_format="parquet"))
    assert [key.removesuffix(".gz") for key in gzip_keys] == csv_keys
    for csv_key, gzip_key in zip(csv_keys, gzip_keys):
        assert gzip.decompress(gzip_store.get_bytes(gzip_key)) == csv_store.get_bytes(csv_key)
    assert parquet_keys[0].endswith("Customer Loyalty History.parquet")
    for key, expected in zip(parquet_keys, last_extract):
        pd.testing.assert_frame_equal(parquet_bytes_to_dataframe(parquet_store.get_bytes(key)), expected)


def test_eight_column_variant_drops_only_the_booked_and_companion_counts(tmp_path, last_extract):
    config = SampleConfig(customers=1500, activity_variant="8-column")
    store = LocalStore(tmp_path)
    _, activity_key = write_drops(store, [LAST_DROP], config)
    assert store.get_bytes(activity_key).startswith(
        b"\xef\xbb\xbfLoyalty Number,Year,Month,Total Flights,Distance,Points Accumulated,Points Redeemed,"
        b"Dollar Cost Points Redeemed\r\n"
    )
    eight = extract_as_of(simulate_population(config, LAST_DROP), LAST_DROP)[1]
    ten = last_extract[1]
    assert list(ten.columns) == list(ACTIVITY_HEADER)
    pd.testing.assert_frame_equal(eight, ten.drop(columns=["Flights Booked", "Flights with Companions"]))
    assert (ten["Total Flights"] == ten["Flights Booked"] + ten["Flights with Companions"]).all()


def test_consecutive_drops_differ_only_by_what_happened_in_between(population):
    dates = default_drop_dates(LAST_DROP)
    assert dates == [date(2026, 2, 25 + offset) for offset in range(4)] + [date(2026, 3, day) for day in (1, 2, 3)]
    extracts = [extract_as_of(population, day) for day in dates]
    for (day, (loyalty, activity)), (next_day, (next_loyalty, next_activity)) in zip(
        zip(dates, extracts), zip(dates[1:], extracts[1:])
    ):
        assert list(loyalty.columns) == list(LOYALTY_HEADER)
        merged = loyalty.merge(next_loyalty, on="Loyalty Number", how="left", suffixes=("", "_next"), indicator=True)
        assert (merged["_merge"] == "both").all(), f"every member of {day} is still in {next_day}"
        for column in LOYALTY_HEADER[1:14]:
            assert merged[column].equals(merged[f"{column}_next"]), f"{column} changed between {day} and {next_day}"
        was_cancelled = merged["Cancellation Year"].notna()
        assert merged.loc[was_cancelled, "Cancellation Year"].equals(
            merged.loc[was_cancelled, "Cancellation Year_next"]
        )
        newcomers = next_loyalty[~next_loyalty["Loyalty Number"].isin(loyalty["Loyalty Number"])]
        assert (_month(newcomers, "Enrollment Year", "Enrollment Month") == month_index(next_day)).all()
        newly_cancelled = merged["Cancellation Year"].isna() & merged["Cancellation Year_next"].notna()
        assert (
            _month(merged[newly_cancelled], "Cancellation Year_next", "Cancellation Month_next")
            == month_index(next_day)
        ).all()

        members = loyalty["Loyalty Number"]
        pd.testing.assert_frame_equal(
            _closed_months(activity, members, month_index(day)),
            _closed_months(next_activity, members, month_index(day)),
        )
    assert sum(len(loyalty) for loyalty, _ in extracts[1:]) > sum(len(loyalty) for loyalty, _ in extracts[:-1])


def test_drop_month_is_month_to_date(population):
    last_activity = extract_as_of(population, date(2026, 2, 28))[1]
    early_activity = extract_as_of(population, date(2026, 2, 7))[1]
    month = month_index(date(2026, 2, 1))

    def february(frame: pd.DataFrame) -> pd.DataFrame:
        rows = _deduplicated(frame)
        return rows[_month(rows, "Year", "Month") == month].set_index("Loyalty Number")

    full, to_date = february(last_activity), february(early_activity)
    full = full.loc[to_date.index]
    for column in ("Flights Booked", "Flights with Companions"):
        assert (to_date[column] == full[column] * 7 // 28).all()
    assert (to_date["Distance"] <= full["Distance"]).all()
    assert 0.1 < to_date["Total Flights"].sum() / full["Total Flights"].sum() < 0.25
    months_shown = _month(last_activity, "Year", "Month")
    assert months_shown.min() == month_index(LAST_DROP) - SMALL.history_months
    assert months_shown.max() == month


def test_extract_rejects_dates_outside_the_population(population):
    with pytest.raises(ValueError, match="after the population's last drop date"):
        extract_as_of(population, date(2026, 3, 4))
    with pytest.raises(ValueError, match="before the population's first activity month"):
        extract_as_of(population, date(2024, 2, 29))


def test_contract_facts_and_quirks(last_extract):
    loyalty, activity = last_extract
    assert len(loyalty) == 1500
    card_share = loyalty["Loyalty Card"].value_counts(normalize=True)
    for card, share in {"Star": 0.456, "Nova": 0.339, "Aurora": 0.205}.items():
        assert card_share[card] == pytest.approx(share, abs=0.04)
    college = loyalty["Education"] == "College"
    assert 0.2 < college.mean() < 0.3
    assert loyalty.loc[college, "Salary"].isna().all() and loyalty.loc[~college, "Salary"].notna().all()
    assert loyalty.groupby("Loyalty Card")["CLV"].median()[["Star", "Nova", "Aurora"]].is_monotonic_increasing
    assert 0.08 < loyalty["Cancellation Year"].notna().mean() < 0.17
    assert loyalty["Cancellation Year"].isna().equals(loyalty["Cancellation Month"].isna())

    last_month = month_index(LAST_DROP)
    enrolled = _month(loyalty, "Enrollment Year", "Enrollment Month")
    assert enrolled.min() >= last_month - 84 and enrolled.max() <= last_month
    promotion = loyalty["Enrollment Type"] == "2018 Promotion"
    assert 0.04 < promotion.mean() < 0.08
    assert set(enrolled[promotion] - last_month) == {-11, -10, -9}  # Feb-Apr of the final year

    exact_copies = activity.duplicated().mean()
    conflicting_keys = activity.drop_duplicates().duplicated(ACTIVITY_KEY).mean()
    assert 0.002 < exact_copies < 0.008 and 0.002 < conflicting_keys < 0.009

    rows = _deduplicated(activity).merge(loyalty, on="Loyalty Number")
    month = _month(rows, "Year", "Month")
    flying = rows["Total Flights"] > 0
    early_flyers = rows.loc[flying & (month < _month(rows, "Enrollment Year", "Enrollment Month")), "Loyalty Number"]
    assert 0.02 < early_flyers.nunique() / len(loyalty) < 0.06
    cancelled_month = _month(rows, "Cancellation Year", "Cancellation Month")
    assert not (flying & (month > cancelled_month)).any(), "nobody flies after the cancellation month"
    in_cancel_month = rows[month == cancelled_month]
    assert (in_cancel_month["Total Flights"] > 0).mean() > 0.5, "most cancellers still fly in their cancellation month"

    complete = rows[month < last_month]
    active = complete[complete["Total Flights"] > 0]
    assert 0.45 < len(active) / len(complete) < 0.6
    assert 8.5 < active["Total Flights"].mean() < 11.5
    assert active["Flights Booked"].sum() / active["Total Flights"].sum() == pytest.approx(0.8, abs=0.04)
    assert (active["Distance"] / active["Total Flights"]).median() == pytest.approx(236, rel=0.1)
    assert active["Points Accumulated"].sum() / active["Distance"].sum() == pytest.approx(0.1, abs=0.005)
    redeemed = complete[complete["Points Redeemed"] > 0]
    assert 0.04 < len(redeemed) / len(complete) < 0.08
    assert redeemed["Dollar Cost Points Redeemed"].sum() / redeemed["Points Redeemed"].sum() == pytest.approx(
        0.081, abs=0.002
    )


def test_a_few_negative_salaries_appear():
    salary = simulate_population(SampleConfig(customers=6000), LAST_DROP).attributes["Salary"].dropna()
    assert 0 < (salary < 0).sum() <= 0.005 * len(salary)


def test_churn_is_signalled_by_tenure_and_fading_activity_but_no_attribute_reveals_it(last_extract):
    loyalty, activity = last_extract
    cancelled = loyalty["Cancellation Year"].notna().to_numpy()
    for column in ("CLV", "Salary"):
        known = loyalty[column].notna().to_numpy()
        auc = roc_auc_score(cancelled[known], loyalty.loc[known, column].astype(float))
        assert abs(auc - 0.5) < 0.08, f"{column} must not reveal cancellation (AUC {auc:.3f})"

    rows = _deduplicated(activity).merge(loyalty, on="Loyalty Number")
    months_before = _month(rows, "Cancellation Year", "Cancellation Month") - _month(rows, "Year", "Month")
    flights = rows["Total Flights"].groupby([rows["Loyalty Number"], months_before]).sum().unstack()
    window_start = month_index(LAST_DROP) - SMALL.history_months
    observed = loyalty.set_index("Loyalty Number")
    observed = observed.index[
        observed["Cancellation Year"].notna()
        & (_month(observed, "Cancellation Year", "Cancellation Month") - 6 >= window_start)
        & (
            _month(observed, "Cancellation Year", "Cancellation Month") - 6
            >= _month(observed, "Enrollment Year", "Enrollment Month")
        )
    ]
    recent, earlier = flights.loc[observed, [1, 2, 3]].sum(axis=1), flights.loc[observed, [4, 5, 6]].sum(axis=1)
    fading_share = (recent < earlier).mean()
    assert 0.5 < fading_share < 0.97, f"many but not all cancellers fade before cancelling ({fading_share:.2f})"

    tenure_at_cancel = (
        _month(loyalty, "Cancellation Year", "Cancellation Month")
        - _month(loyalty, "Enrollment Year", "Enrollment Month")
    ).dropna()
    assert (tenure_at_cancel < 60).all(), "members past five years of tenure do not cancel"
    assert np.median(tenure_at_cancel) < 30


@pytest.mark.parametrize("variant", ["10-column", "8-column"])
def test_generated_drop_passes_our_ingestion_with_only_the_intended_findings(tmp_path, variant):
    store = LocalStore(tmp_path)
    config = SampleConfig(customers=1500, activity_variant=variant)
    write_drops(store, [LAST_DROP], config)
    loyalty_key, activity_key = drop_keys(LAST_DROP, config.file_format)
    result = ingest_drop(
        [SourceFile(loyalty_key, store.get_bytes(loyalty_key))],
        [SourceFile(activity_key, store.get_bytes(activity_key))],
        drop_date=LAST_DROP,
    )
    assert result.quarantine.empty
    assert result.stats["activity_variant"] == variant
    assert result.stats["exact_duplicates_dropped"] > 0
    assert result.stats["conflicting_keys_resolved"] > 0
    assert result.stats["flights_before_enrollment_members"] > 0
    assert result.stats["unknown_category"] == 0
    assert len(result.loyalty) == result.stats["rows_read"]["loyalty_history"]
