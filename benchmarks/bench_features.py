"""Speed and memory of ``build_features`` at 15,000 and 1,000,000 members x 24 months.

The raw tables are synthetic, generated with numpy in the raw_loyalty_history /
raw_flight_activity schemas (docs/design.md) and shaped after the facts in the data contract:
enrollment years 2012..2018, about 12% cancellations, one activity row per member and month
(zeros included, as in the real file), about half the member-months active.

Run: ``python -m benchmarks.bench_features``.
"""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pandas as pd

from loyalty_assets.domain.features import all_snapshots, build_features, month_number

FIRST_ACTIVITY_YEAR = 2017
ACTIVITY_MONTHS = 24
DROP_DATE = date(2019, 1, 15)
SEED = 20190115

_ENROLLMENT_YEARS = np.arange(2012, 2019)
_ENROLLMENT_YEAR_WEIGHTS = np.array([1686, 2397, 2370, 2331, 2456, 2487, 3010], dtype=float)
_CARDS = np.array(["Star", "Nova", "Aurora"], dtype=object)
_CARD_WEIGHTS = np.array([7637, 5671, 3429], dtype=float)
_PROVINCES = np.array(["Ontario", "British Columbia", "Quebec", "Alberta", "Manitoba"], dtype=object)
_CITIES = np.array(["Toronto", "Vancouver", "Montreal", "Calgary", "Winnipeg"], dtype=object)
_POSTAL_CODES = np.array(["M2Z 4K1", "V6E 3D9", "H2Y 2W2", "T3G 6Y6", "R2C 0M5"], dtype=object)
_EDUCATION = np.array(["High School or Below", "College", "Bachelor", "Master", "Doctor"], dtype=object)
_MARITAL = np.array(["Single", "Married", "Divorced"], dtype=object)
_GENDERS = np.array(["Female", "Male"], dtype=object)


def _choice(rng: np.random.Generator, values: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Pick from ``values``; object arrays reuse the same str objects, so text columns stay small."""
    probabilities = None if weights is None else weights / weights.sum()
    return values[rng.choice(values.size, size=size, p=probabilities)]


def synthetic_loyalty(member_count: int, rng: np.random.Generator) -> pd.DataFrame:
    """Customer master in the raw_loyalty_history schema, rows in shuffled loyalty_number order."""
    loyalty_number = 100_000 + 7 * np.arange(member_count, dtype=np.int64) + rng.integers(0, 7, member_count)
    enrollment_year = _choice(rng, _ENROLLMENT_YEARS, member_count, _ENROLLMENT_YEAR_WEIGHTS).astype(np.int64)
    enrollment_month = rng.integers(1, 13, member_count)
    promotion = (enrollment_year == 2018) & (rng.random(member_count) < 971 / 3010)
    enrollment_month[promotion] = rng.integers(2, 5, int(promotion.sum()))
    enrolled = month_number(enrollment_year, enrollment_month)
    last_month = month_number(FIRST_ACTIVITY_YEAR, 1) + ACTIVITY_MONTHS - 1
    cancels = rng.random(member_count) < 0.123
    cancellation = enrolled + np.floor(rng.random(member_count) * (last_month - enrolled + 1)).astype(np.int64)
    education = _choice(rng, _EDUCATION, member_count)
    salary = np.round(rng.lognormal(np.log(75_000), 0.4, member_count), 0)
    salary[education == "College"] = np.nan
    loyalty = pd.DataFrame(
        {
            "loyalty_number": loyalty_number,
            "country": np.full(member_count, "Canada", dtype=object),
            "province": _choice(rng, _PROVINCES, member_count),
            "city": _choice(rng, _CITIES, member_count),
            "postal_code": _choice(rng, _POSTAL_CODES, member_count),
            "gender": _choice(rng, _GENDERS, member_count),
            "education": education,
            "salary": salary,
            "marital_status": _choice(rng, _MARITAL, member_count),
            "loyalty_card": _choice(rng, _CARDS, member_count, _CARD_WEIGHTS),
            "clv": np.round(rng.lognormal(np.log(5_780), 0.6, member_count), 2),
            "enrollment_type": np.where(promotion, "2018 Promotion", "Standard").astype(object),
            "enrollment_year": enrollment_year,
            "enrollment_month": enrollment_month,
            "cancellation_year": pd.Series(cancellation // 12).where(cancels).astype("Int64"),
            "cancellation_month": pd.Series(cancellation % 12 + 1).where(cancels).astype("Int64"),
            "flag_negative_salary": np.zeros(member_count, dtype=bool),
            "flag_unknown_category": np.zeros(member_count, dtype=bool),
        }
    )
    return loyalty.iloc[rng.permutation(member_count)].reset_index(drop=True)


def synthetic_activity(loyalty: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """One row per member and month (month-major, as the original file), raw_flight_activity schema."""
    member_count = len(loyalty)
    first_month = month_number(FIRST_ACTIVITY_YEAR, 1)
    month = first_month + np.arange(ACTIVITY_MONTHS)[:, None]
    enrolled = month_number(loyalty["enrollment_year"].to_numpy(), loyalty["enrollment_month"].to_numpy())
    cancelled = month_number(
        loyalty["cancellation_year"].to_numpy(dtype="int64", na_value=9999),
        loyalty["cancellation_month"].to_numpy(dtype="int64", na_value=12),
    )
    active_share = np.linspace(0.50, 0.64, ACTIVITY_MONTHS)[:, None]
    active = (month >= enrolled) & (month <= cancelled) & (rng.random((ACTIVITY_MONTHS, member_count)) < active_share)
    total_flights = np.where(active, np.minimum(1 + rng.poisson(9, active.shape), 32), 0).astype(np.int64)
    del active
    companions = rng.binomial(total_flights, 0.2).astype(np.int64)
    distance = np.round(total_flights * rng.lognormal(np.log(236), 0.8, total_flights.shape), 0)
    redeems = (total_flights > 0) & (rng.random(total_flights.shape) < 0.12)
    points_redeemed = np.where(redeems, rng.integers(300, 800, total_flights.shape), 0).astype(np.float64)
    del redeems

    # Columns are added one at a time so only one full-size temporary exists besides the frame.
    activity = pd.DataFrame({"loyalty_number": np.tile(loyalty["loyalty_number"].to_numpy(), ACTIVITY_MONTHS)})
    activity["year"] = np.repeat(month[:, 0] // 12, member_count)
    activity["month"] = np.repeat(month[:, 0] % 12 + 1, member_count)
    activity["flights_booked"] = pd.array((total_flights - companions).ravel(), dtype="Int64")
    activity["flights_with_companions"] = pd.array(companions.ravel(), dtype="Int64")
    del companions
    activity["total_flights"] = total_flights.ravel()
    activity["distance"] = distance.ravel()
    activity["points_accumulated"] = np.round(distance.ravel() * 0.2) / 2
    del distance
    activity["points_redeemed"] = points_redeemed.ravel()
    activity["dollar_cost_points_redeemed"] = np.round(points_redeemed.ravel() * 0.081, 0)
    del points_redeemed
    activity["flag_before_enrollment"] = (np.repeat(month[:, 0], member_count) < np.tile(enrolled, ACTIVITY_MONTHS)) & (
        total_flights.ravel() > 0
    )
    return activity


def _bench(member_count: int) -> str:
    rng = np.random.default_rng(SEED)
    loyalty = synthetic_loyalty(member_count, rng)
    activity = synthetic_activity(loyalty, rng)
    snapshots = all_snapshots(activity, DROP_DATE)
    started, cpu_started = time.perf_counter(), time.process_time()
    features = build_features(loyalty, activity, snapshots)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return (
        f"build_features {seconds:.2f} s (cpu {cpu_seconds:.2f} s); {len(activity):,} activity rows -> "
        f"{len(features):,} feature rows x {features.shape[1]} cols, {len(snapshots)} snapshots"
    )


def bench_features_15k() -> str:
    return _bench(15_000)


def bench_features_1m() -> str:
    return _bench(1_000_000)
