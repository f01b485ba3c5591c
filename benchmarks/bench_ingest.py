"""Benchmark of ``ingest_drop`` on a realistic full-size CSV drop built in memory.

The drop follows the data contract's facts: 15,000 members, 27 activity months per member
(2016-10 .. 2018-12, about 405,000 rows), about 1,800 exact and 2,000 conflicting duplicate
activity rows, College members without salary, a few negative salaries and a few dozen bad rows.
Files are written like the originals: UTF-8 BOM, CRLF, the activity split into two parts.
"""

from __future__ import annotations

import io
import time
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from loyalty_assets.domain.completeness import (
    last_complete_month_problems,
    manifest_bytes,
    manifest_problems,
    row_count_problems,
)
from loyalty_assets.domain.ingest import (
    ACTIVITY_COLUMNS,
    ACTIVITY_TABLE,
    LOYALTY_COLUMNS,
    LOYALTY_TABLE,
    SourceFile,
    ingest_drop,
)

STAGE = "ingest_drop (15k members, ~405k activity rows)"
DROP_DATE = date(2018, 12, 31)
N_MEMBERS = 15_000
FIRST_MONTH = (2016, 10)
N_MONTHS = 27
PROVINCES = {
    "Ontario": ("Toronto", "M2Z 4K1"),
    "British Columbia": ("Vancouver", "V6E 3D9"),
    "Quebec": ("Montreal", "H2Y 2W2"),
    "Alberta": ("Edmonton", "T3G 6Y6"),
    "Manitoba": ("Winnipeg", "R2C 0M5"),
    "New Brunswick": ("Moncton", "E1A 2A7"),
    "Nova Scotia": ("Halifax", "B3J 9S2"),
    "Saskatchewan": ("Regina", "S1J 3C5"),
    "Newfoundland": ("St. John's", "A1C 6H9"),
    "Yukon": ("Whitehorse", "Y2K 6R0"),
    "Prince Edward Island": ("Charlottetown", "C1A 6E8"),
}
PROVINCE_WEIGHTS = [5404, 4409, 3300, 969, 658, 636, 518, 409, 258, 110, 66]
# College members have no salary in the real file; their median here is never written.
EDUCATION_MEDIAN_SALARY = {
    "High School or Below": 61915,
    "College": 0,
    "Bachelor": 71960,
    "Master": 105487,
    "Doctor": 182144,
}


def _csv_bytes(columns: dict[str, np.ndarray | pa.Array], names: tuple[str, ...]) -> bytes:
    """UTF-8 BOM + CRLF CSV with an unquoted header, like the original extracts."""
    buffer = io.BytesIO()
    options = pa_csv.WriteOptions(eol="\r\n", quoting_style="none", quoting_header="none")
    pa_csv.write_csv(pa.table(list(columns.values()), names=list(names)), buffer, write_options=options)
    return b"\xef\xbb\xbf" + buffer.getvalue()


def _loyalty_history(rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray]:
    numbers = rng.choice(np.arange(100_000, 1_000_000), size=N_MEMBERS, replace=False)
    place = rng.choice(len(PROVINCES), size=N_MEMBERS, p=np.array(PROVINCE_WEIGHTS) / sum(PROVINCE_WEIGHTS))
    province, city, postal = (
        np.array(values)[place] for values in zip(*((name, *town) for name, town in PROVINCES.items()))
    )
    education_names = np.array(list(EDUCATION_MEDIAN_SALARY))
    education = rng.choice(education_names, size=N_MEMBERS, p=[0.047, 0.25, 0.625, 0.04, 0.038])
    median_salary = np.array([EDUCATION_MEDIAN_SALARY[name] for name in education], dtype=float)
    salary = np.round(median_salary * rng.lognormal(0, 0.3, N_MEMBERS))
    salary[rng.choice(np.flatnonzero(education != "College"), 20, replace=False)] *= -1
    salary_array = pa.array(salary, mask=education == "College").cast(pa.int64())
    card = rng.choice(["Star", "Nova", "Aurora"], size=N_MEMBERS, p=[0.456, 0.339, 0.205])
    clv = np.round(rng.lognormal(np.log(5780), 0.55, N_MEMBERS), 2)
    enrollment_year = rng.choice(
        np.arange(2012, 2019), size=N_MEMBERS, p=np.array([1686, 2397, 2370, 2331, 2456, 2487, 3010]) / 16737
    )
    enrollment_month = rng.integers(1, 13, N_MEMBERS)
    enrolled = enrollment_year * 12 + enrollment_month - 1
    cancelled = rng.random(N_MEMBERS) < 0.123
    cancel_period = enrolled + rng.integers(1, 60, N_MEMBERS)
    cancelled &= cancel_period <= 2018 * 12 + 11
    columns = {
        "Loyalty Number": numbers,
        "Country": np.full(N_MEMBERS, "Canada"),
        "Province": province,
        "City": city,
        "Postal Code": postal,
        "Gender": rng.choice(["Female", "Male"], size=N_MEMBERS),
        "Education": education,
        "Salary": salary_array,
        "Marital Status": rng.choice(["Single", "Married", "Divorced"], size=N_MEMBERS, p=[0.27, 0.58, 0.15]),
        "Loyalty Card": card,
        "CLV": clv,
        "Enrollment Type": np.where(
            (enrollment_year == 2018) & (enrollment_month <= 4) & (rng.random(N_MEMBERS) < 0.5),
            "2018 Promotion",
            "Standard",
        ),
        "Enrollment Year": enrollment_year,
        "Enrollment Month": enrollment_month,
        "Cancellation Year": pa.array(cancel_period // 12, mask=~cancelled),
        "Cancellation Month": pa.array(cancel_period % 12 + 1, mask=~cancelled),
    }
    return columns, numbers, enrolled


def _flight_activity(rng: np.random.Generator, numbers: np.ndarray, enrolled: np.ndarray) -> dict[str, np.ndarray]:
    first = FIRST_MONTH[0] * 12 + FIRST_MONTH[1] - 1
    period = np.tile(np.arange(first, first + N_MONTHS), N_MEMBERS)
    member = np.repeat(numbers, N_MONTHS)
    n_rows = len(member)
    # About 4% of members fly before their enrollment month, as in the real file.
    early_flyer = np.repeat(rng.random(N_MEMBERS) < 0.04, N_MONTHS)
    active = (rng.random(n_rows) < 0.51) & ((period >= np.repeat(enrolled, N_MONTHS)) | early_flyer)
    total = np.where(active, np.clip(rng.poisson(10, n_rows), 1, 32), 0)
    companions = rng.binomial(total, 0.2)
    distance = np.where(active, np.round(total * rng.lognormal(np.log(236), 0.7, n_rows)), 0)
    redeemed = np.where(active & (rng.random(n_rows) < 0.12), np.round(rng.normal(500, 120, n_rows)).clip(0), 0)
    columns = {
        "Loyalty Number": member,
        "Year": period // 12,
        "Month": period % 12 + 1,
        "Flights Booked": total - companions,
        "Flights with Companions": companions,
        "Total Flights": total,
        "Distance": distance,
        "Points Accumulated": np.round(distance * 0.1, 1),
        "Points Redeemed": redeemed,
        "Dollar Cost Points Redeemed": np.round(redeemed * 0.081),
    }
    exact = rng.choice(n_rows, 1_800, replace=False)
    conflicting = rng.choice(n_rows, 2_000, replace=False)
    extra = np.concatenate([exact, conflicting])
    duplicated = {name: values[extra].copy() for name, values in columns.items()}
    duplicated["Distance"][len(exact) :] += rng.integers(1, 500, len(conflicting))
    bad = rng.choice(n_rows, 60, replace=False)
    broken = {name: values[bad].copy() for name, values in columns.items()}
    broken["Month"][:20] = 13
    broken["Flights Booked"][20:40] = -1
    broken["Loyalty Number"][40:] = rng.integers(10_000, 99_999, 20)
    return {name: np.concatenate([columns[name], duplicated[name], broken[name]]) for name in columns}


def build_drop(seed: int = 20261127) -> tuple[list[SourceFile], list[SourceFile]]:
    """A deterministic full-size drop: one loyalty file, the activity split into two parts."""
    rng = np.random.default_rng(seed)
    loyalty_columns, numbers, enrolled = _loyalty_history(rng)
    activity_columns = _flight_activity(rng, numbers, enrolled)
    half = len(activity_columns["Loyalty Number"]) // 2
    loyalty = [
        SourceFile(
            f"loyalty_history/dt={DROP_DATE}/customer_loyalty_history.csv", _csv_bytes(loyalty_columns, LOYALTY_COLUMNS)
        )
    ]
    activity = [
        SourceFile(
            f"flight_activity/dt={DROP_DATE}/part-{part}.csv",
            _csv_bytes({name: values[rows] for name, values in activity_columns.items()}, ACTIVITY_COLUMNS),
        )
        for part, rows in ((1, slice(None, half)), (2, slice(half, None)))
    ]
    return loyalty, activity


def bench_ingest_drop() -> str:
    """Build the drop (not timed), time ``ingest_drop`` on it; the note carries the ingest time.

    CPU time (all threads) is reported beside wall time: it stays meaningful on a busy machine.
    """
    loyalty, activity = build_drop()
    megabytes = sum(len(source.data) for source in loyalty + activity) / 1e6
    started, started_cpu = time.perf_counter(), time.process_time()
    result = ingest_drop(loyalty, activity, drop_date=DROP_DATE)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    stats = result.stats
    return (
        f"ingest {seconds:.2f} s wall / {cpu_seconds:.2f} s CPU for "
        f"{stats['rows_read']['flight_activity']:,} activity + {stats['rows_read']['loyalty_history']:,} "
        f"loyalty rows ({megabytes:.0f} MB CSV); {stats['exact_duplicates_dropped']} exact / "
        f"{stats['conflicting_rows_dropped']} conflicting dups, {stats['quarantined_rows']} quarantined"
    )


def bench_ingest_with_completeness() -> str:
    """``ingest_drop`` and then the completeness gate (manifest digests included) on the same drop;
    the note gives both times and the gate's share of the ingest (target <= 10 %)."""
    loyalty, activity = build_drop()
    tables = {LOYALTY_TABLE: loyalty, ACTIVITY_TABLE: activity}
    manifests = {table: _manifest(files) for table, files in tables.items()}
    started, started_cpu = time.perf_counter(), time.process_time()
    result = ingest_drop(loyalty, activity, drop_date=DROP_DATE)
    ingested, ingested_cpu = time.perf_counter(), time.process_time()
    rows_read = result.stats["rows_read"]
    problems, _ = last_complete_month_problems(result.activity, DROP_DATE, 0.01)
    for table, files in tables.items():
        problems += row_count_problems(table, rows_read[table], rows_read[table], "2018-12-30", 0.01)
        files_data = {source.name: source.data for source in files}
        problems += manifest_problems(f"{table}/_manifest.json", manifests[table], files_data, rows_read[table])
    gated, gated_cpu = time.perf_counter(), time.process_time()
    if problems:
        raise RuntimeError(f"the benchmark drop failed its completeness gate: {problems}")
    ingest_cpu, gate_cpu = ingested_cpu - started_cpu, gated_cpu - ingested_cpu
    return gated - started, (
        f"ingest {ingested - started:.2f} s wall / {ingest_cpu:.2f} s CPU, completeness gate "
        f"{gated - ingested:.3f} s wall / {gate_cpu:.3f} s CPU (+{gate_cpu / ingest_cpu:.1%} CPU; target <= 10%)"
    )


def _manifest(files: list[SourceFile]) -> bytes:
    """What the exporter would write beside ``files`` (data rows = lines after the header)."""
    return manifest_bytes(
        {source.name.rsplit("/", 1)[-1]: (source.data, source.data.count(b"\n") - 1) for source in files}
    )
