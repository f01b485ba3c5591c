"""Point-in-time member features from one drop's validated raw tables.

A snapshot ``s`` is the end of a complete month, written as the first day of that month.
Features at ``s`` read only activity months ``<= s``; a member appears at ``s`` only when
enrolled in or before month ``s`` and not cancelled in or before month ``s``.

How it is computed: activity is scattered once into dense ``month x member`` cumulative-sum
matrices (one per measure, months relative to ``history_start``). A window sum ending at
month ``j`` is then ``cum[j + 1] - cum[j + 1 - w]``, and each snapshot costs a handful of
vector operations over all members. A cumulative sum at month ``j`` depends only on months
``<= j``, so nothing after a snapshot (later months, the month-to-date month) can reach it.

Conventions worth knowing downstream:

- Months before ``history_start`` are unobserved. Windows that reach before it are truncated,
  i.e. those months count as zero. ``history_months`` says how many complete months a
  snapshot has, so a consumer that needs full 12-month windows keeps
  ``history_months >= LONGEST_WINDOW_MONTHS`` (see ``labels.training_snapshots``).
- A member with no activity rows gets 0 for every sum, count and difference.
- NaN appears only where a value is undefined: ``flights_cv_12m`` (no flights in 12 months),
  ``redeemed_to_accumulated_12m`` and ``redeemed_to_accumulated_24m`` (no points accumulated),
  ``dollar_cost_per_redeemed_point_12m`` (nothing redeemed), ``distance_per_flight_12m`` (no
  flights), ``companion_share_12m`` (no flights with a known companion count, which includes
  every row of the 8-column variant), ``salary_amount`` (empty salary), and every categorical code
  (category value not known to this module; the loader keeps and flags such values).
- ``months_since_last_flight`` is ``history_months`` when no flight is seen in the history: one
  more than the largest value a member who flew could have.
- Loyalty card tier, enrollment type, salary, education, marital status, gender and province are
  the values in the drop; the data holds no history of their changes.
- CLV is deliberately absent: it is an as-of-extraction total that includes future flights.

``FEATURE_COLUMNS`` are the 21 documented features; ``MODEL_FEATURES`` adds the member attributes
and the lifetime and redemption features. "Lifetime" means the ``LIFETIME_WINDOW_MONTHS`` (24)
months up to ``s``: the data contract's span and the online API's history, so the values agree
between batch and online and do not grow as drops accumulate history. ``window_coverage_24m``
says how much of that window was observed. ``CATEGORICAL_FEATURES`` hold small non-negative
integer codes from fixed tables (unknown or missing value: NaN).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

LONGEST_WINDOW_MONTHS = 12
LIFETIME_WINDOW_MONTHS = 24
LOYALTY_CARD_TIERS = {"star": 0, "nova": 1, "aurora": 2}
ENROLLMENT_TYPE_PROMOTION = {"standard": 0, "2018 promotion": 1}
# Code tables of the member attributes: a value's code is its position. Append only, never reorder:
# a trained model reads the codes.
GENDERS = ("Female", "Male")
EDUCATION_LEVELS = ("High School or Below", "College", "Bachelor", "Master", "Doctor")
MARITAL_STATUSES = ("Single", "Married", "Divorced")
PROVINCES = (
    "Alberta",
    "British Columbia",
    "Manitoba",
    "New Brunswick",
    "Newfoundland",
    "Nova Scotia",
    "Ontario",
    "Prince Edward Island",
    "Quebec",
    "Saskatchewan",
    "Yukon",
)

LOYALTY_COLUMNS_USED = (
    "loyalty_number",
    "enrollment_year",
    "enrollment_month",
    "cancellation_year",
    "cancellation_month",
    "loyalty_card",
    "enrollment_type",
    "salary",
    "education",
    "marital_status",
    "gender",
    "province",
)
ACTIVITY_COLUMNS_USED = (
    "loyalty_number",
    "year",
    "month",
    "total_flights",
    "flights_with_companions",
    "distance",
    "points_accumulated",
    "points_redeemed",
    "dollar_cost_points_redeemed",
)
ID_COLUMNS = ["loyalty_number", "snapshot_month", "history_months"]


@dataclass(frozen=True)
class FeatureSpec:
    """One documented feature; ``point_in_time`` says which data at snapshot ``s`` it reads."""

    name: str
    formula: str
    point_in_time: str
    why: str
    categorical: bool = False


def _code_table(values: Sequence[str]) -> str:
    return ", ".join(f"{value} {code}" for code, value in enumerate(values))


def _codes(values: Sequence[str]) -> dict[str, int]:
    """Code table keyed by the casefolded value (see ``_category_codes``)."""
    return {value.casefold(): code for code, value in enumerate(values)}


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "flights_3m",
        "sum of total flights",
        "3 months, s-2..s",
        "Recent activity: a member who stops flying is the clearest sign of drifting away.",
    ),
    FeatureSpec(
        "flights_6m", "sum of total flights", "6 months, s-5..s", "Medium-term activity, less noisy than 3 months."
    ),
    FeatureSpec("flights_12m", "sum of total flights", "12 months, s-11..s", "Yearly volume; evens out seasonality."),
    FeatureSpec(
        "distance_3m",
        "sum of distance (km)",
        "3 months, s-2..s",
        "Recent travel size: long-haul flyers value the programme differently.",
    ),
    FeatureSpec("distance_12m", "sum of distance (km)", "12 months, s-11..s", "Yearly travel size."),
    FeatureSpec(
        "points_accumulated_12m",
        "sum of points accumulated",
        "12 months, s-11..s",
        "Points balance growth, what the member stands to lose by leaving (about 0.1 x "
        "distance, so one window is enough).",
    ),
    FeatureSpec(
        "points_redeemed_3m",
        "sum of points redeemed",
        "3 months, s-2..s",
        "Cashing in points shortly before leaving is a classic exit pattern.",
    ),
    FeatureSpec(
        "points_redeemed_12m",
        "sum of points redeemed",
        "12 months, s-11..s",
        "Engagement with rewards over a year (redemptions are rare, about 6% of months).",
    ),
    FeatureSpec(
        "months_since_last_flight",
        "s minus the last month with flights > 0; history_months if none in the history",
        "all history up to s",
        "Recency: the longer the silence, the likelier the exit.",
    ),
    FeatureSpec(
        "active_months_12m",
        "count of months with flights > 0",
        "12 months, s-11..s",
        "Regularity of use, independent of volume.",
    ),
    FeatureSpec(
        "flights_mom_change", "flights(s) - flights(s-1)", "2 months, s-1..s", "Most recent change in activity."
    ),
    FeatureSpec(
        "flights_3m_minus_prior_3m",
        "flights(s-2..s) - flights(s-5..s-3)",
        "6 months, s-5..s",
        "Quarter-on-quarter trend.",
    ),
    FeatureSpec(
        "flights_slope_6m",
        "least-squares slope of monthly flights on month number (flights per month per month)",
        "6 months, s-5..s",
        "Steady decline shows before the last flight.",
    ),
    FeatureSpec(
        "flights_cv_12m",
        "population std / mean of monthly flights; NaN if no flights",
        "12 months, s-11..s",
        "Volatility: erratic flyers are less attached.",
    ),
    FeatureSpec(
        "redeemed_to_accumulated_12m",
        "points redeemed / points accumulated; NaN if none accumulated",
        "12 months, s-11..s",
        "Burning more than earning runs the balance down.",
    ),
    FeatureSpec(
        "dollar_cost_per_redeemed_point_12m",
        "dollar cost of redeemed points / points redeemed; NaN if none redeemed",
        "12 months, s-11..s",
        "Value the member got per point (CAD).",
    ),
    FeatureSpec(
        "distance_per_flight_12m",
        "distance / total flights; NaN if no flights",
        "12 months, s-11..s",
        "Trip length profile: business shuttle vs long haul.",
    ),
    FeatureSpec(
        "companion_share_12m",
        "flights with companions / total flights over months where the companion count "
        "is known; NaN if none (always NaN for the 8-column variant)",
        "12 months, s-11..s",
        "Travelling with family or friends ties the member to the programme.",
    ),
    FeatureSpec(
        "tenure_months",
        "s minus enrollment month, in months",
        "enrollment..s",
        "Tenure and cohort carry most of the honest churn signal in this data.",
    ),
    FeatureSpec(
        "loyalty_card_tier",
        "Star 0, Nova 1, Aurora 2 (categorical code)",
        "value in the drop",
        "Higher tiers have more to lose by leaving.",
        categorical=True,
    ),
    FeatureSpec(
        "promotion_enrollment",
        "1 if enrollment type is 2018 Promotion, else 0 (categorical code)",
        "value in the drop",
        "Promotion enrollees cancel far more often (11.8% vs 2.2% in year one).",
        categorical=True,
    ),
)
"""The 21 documented features."""

_IN_THE_DROP = "value in the drop (no history of changes is kept)"
ATTRIBUTE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "membership_month_of_year",
        "tenure_months modulo 12 (0 = the enrollment anniversary month)",
        "enrollment..s",
        "Calendar phase of the membership year: cancellations gather around the renewal window.",
    ),
    FeatureSpec(
        "enrollment_calendar_month",
        "enrollment month, 1-12",
        "value in the drop",
        "Season of enrollment; the 2018 promotion enrolled in February-April.",
    ),
    FeatureSpec(
        "salary_amount",
        "salary as in the drop (negative values kept, the loader flags them); NaN if empty",
        _IN_THE_DROP,
        "Spending power; missing for every College member.",
    ),
    FeatureSpec(
        "salary_missing",
        "1 if salary is empty, else 0",
        _IN_THE_DROP,
        "Tells the model the salary was imputed rather than known.",
    ),
    FeatureSpec(
        "education_code",
        f"{_code_table(EDUCATION_LEVELS)} (categorical code); NaN if unknown",
        _IN_THE_DROP,
        "Education goes with salary and travel purpose.",
        categorical=True,
    ),
    FeatureSpec(
        "marital_status_code",
        f"{_code_table(MARITAL_STATUSES)} (categorical code); NaN if unknown",
        _IN_THE_DROP,
        "Household situation shapes leisure travel.",
        categorical=True,
    ),
    FeatureSpec(
        "gender_code",
        f"{_code_table(GENDERS)} (categorical code); NaN if unknown",
        _IN_THE_DROP,
        "Member attribute of the customer master; expected to carry little signal.",
        categorical=True,
    ),
    FeatureSpec(
        "province_code",
        f"{_code_table(PROVINCES)} (categorical code); NaN if unknown",
        _IN_THE_DROP,
        "Home market: competition and routes differ by province.",
        categorical=True,
    ),
)
"""Static member attributes known at the snapshot."""

LIFETIME_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "window_coverage_24m",
        "months of s-23..s inside the observed history: min(history_months, 24)",
        "24 months, s-23..s",
        "How much of the lifetime window is observed, so short histories are not read as inactivity.",
    ),
    FeatureSpec(
        "flights_24m",
        "sum of total flights",
        "24 months, s-23..s",
        "Lifetime volume: long-standing heavy flyers rarely leave.",
    ),
    FeatureSpec(
        "active_months_24m",
        "count of months with flights > 0",
        "24 months, s-23..s",
        "Lifetime regularity of use.",
    ),
    FeatureSpec(
        "redeemed_to_accumulated_24m",
        "points redeemed / points accumulated; NaN if none accumulated",
        "24 months, s-23..s",
        "Lifetime use of rewards: members who never redeem get little from the programme.",
    ),
    FeatureSpec(
        "redemptions_12m",
        "count of months with points redeemed > 0",
        "12 months, s-11..s",
        "How often the member cashes in points, independent of amounts.",
    ),
    FeatureSpec(
        "months_since_last_redemption",
        "s minus the last month with points redeemed > 0; window_coverage_24m if none in s-23..s",
        "24 months, s-23..s",
        "Recency of reward use: a fresh redemption can be a member emptying the account.",
    ),
)
"""Lifetime and redemption activity over the ``LIFETIME_WINDOW_MONTHS`` up to the snapshot."""

FEATURE_COLUMNS: list[str] = [feature.name for feature in FEATURES]
MODEL_FEATURE_SPECS: tuple[FeatureSpec, ...] = FEATURES + ATTRIBUTE_FEATURES + LIFETIME_FEATURES
MODEL_FEATURES: list[str] = [feature.name for feature in MODEL_FEATURE_SPECS]
"""Every model input column, in the order of the feature tables: ``FEATURE_COLUMNS`` first."""
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(feature.name for feature in MODEL_FEATURE_SPECS if feature.categorical)


def categorical_among(columns: Sequence[str]) -> list[str]:
    """The ``CATEGORICAL_FEATURES`` among ``columns`` (e.g. a model's feature list), in their order."""
    return [column for column in columns if column in CATEGORICAL_FEATURES]


def features_markdown() -> str:
    """The feature catalogue as a Markdown table (name | formula | point-in-time rule | why it matters)."""
    table = pd.DataFrame(
        [(f"`{f.name}`", f.formula, f.point_in_time, f.why) for f in MODEL_FEATURE_SPECS],
        columns=["name", "formula", "point-in-time rule", "why it matters"],
    )
    return table.to_markdown(index=False)


def month_number(year, month):
    """Months since year 0, so consecutive months differ by one (works on scalars and arrays)."""
    return year * 12 + month - 1


def cancellation_month_numbers(loyalty: pd.DataFrame) -> np.ndarray:
    """``month_number`` of each loyalty row's cancellation; int64 max when not cancelled."""
    cancel_year = loyalty["cancellation_year"].astype("Int64")
    cancel_month = loyalty["cancellation_month"].astype("Int64")
    cancellation = month_number(
        cancel_year.to_numpy(dtype="int64", na_value=0), cancel_month.to_numpy(dtype="int64", na_value=0)
    )
    cancellation[(cancel_year.isna() | cancel_month.isna()).to_numpy()] = np.iinfo(np.int64).max
    return cancellation


def timestamp_month_number(timestamp: pd.Timestamp) -> int:
    """``month_number`` of a timestamp's month."""
    return month_number(timestamp.year, timestamp.month)


def require_month_start(timestamp: pd.Timestamp, what: str) -> pd.Timestamp:
    """``timestamp`` as a Timestamp; raises unless it is the first day of a month at midnight."""
    timestamp = pd.Timestamp(timestamp)
    if timestamp != timestamp.to_period("M").to_timestamp():
        raise ValueError(f"{what} must be the first day of a month at midnight, got {timestamp}")
    return timestamp


def require_columns(frame: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    """Raise naming every column of ``columns`` that ``frame`` lacks."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{table} lacks required columns {missing}")


def last_complete_month(drop_date: date) -> pd.Timestamp:
    """First day of the month before ``drop_date``'s month (the drop's own month is month-to-date)."""
    return pd.Timestamp(drop_date).to_period("M").to_timestamp() - pd.DateOffset(months=1)


def first_activity_month(activity: pd.DataFrame) -> pd.Timestamp:
    """First day of the earliest month present in ``activity``."""
    require_columns(activity, ("year", "month"), "activity")
    if activity.empty:
        raise ValueError("activity is empty: there is no first activity month")
    first = int(month_number(activity["year"].to_numpy(), activity["month"].to_numpy()).min())
    return pd.Timestamp(year=first // 12, month=first % 12 + 1, day=1)


def all_snapshots(activity: pd.DataFrame, drop_date: date) -> list[pd.Timestamp]:
    """Every complete month of the drop: first activity month .. ``last_complete_month(drop_date)``.

    Empty when the drop holds only its month-to-date month. Raises if activity is dated after
    the drop's own month.
    """
    first = first_activity_month(activity)
    last_complete = last_complete_month(drop_date)
    drop_month = timestamp_month_number(pd.Timestamp(drop_date))
    latest = int(month_number(activity["year"].to_numpy(), activity["month"].to_numpy()).max())
    if latest > drop_month:
        raise ValueError(f"activity holds month {latest // 12}-{latest % 12 + 1:02d}, after the drop dated {drop_date}")
    return list(pd.date_range(first, last_complete, freq="MS"))


def _category_codes(values: pd.Series, codes: dict[str, int]) -> np.ndarray:
    """Map text categories case-insensitively to codes; unknown or missing values become NaN."""
    normalised = values.astype("string").str.strip().str.casefold()
    return normalised.map(codes).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


_GENDER_CODES = _codes(GENDERS)
_EDUCATION_CODES = _codes(EDUCATION_LEVELS)
_MARITAL_STATUS_CODES = _codes(MARITAL_STATUSES)
_PROVINCE_CODES = _codes(PROVINCES)


@dataclass(frozen=True)
class _Members:
    loyalty_number: np.ndarray  # sorted, unique
    enrollment_month_number: np.ndarray
    cancellation_month_number: np.ndarray  # int64 max when not cancelled
    attributes: dict[str, np.ndarray]  # float64 values of the features that do not depend on the snapshot


def _attributes(loyalty: Mapping[str, Any], code) -> dict[str, np.ndarray]:
    """Static feature values from loyalty columns; ``code(column, table)`` maps text to float codes."""
    salary = np.asarray(loyalty["salary"], dtype=np.float64)
    return {
        "loyalty_card_tier": code("loyalty_card", LOYALTY_CARD_TIERS),
        "promotion_enrollment": code("enrollment_type", ENROLLMENT_TYPE_PROMOTION),
        "enrollment_calendar_month": np.asarray(loyalty["enrollment_month"], dtype=np.float64),
        "salary_amount": salary,
        "salary_missing": np.isnan(salary).astype(np.float64),
        "education_code": code("education", _EDUCATION_CODES),
        "marital_status_code": code("marital_status", _MARITAL_STATUS_CODES),
        "gender_code": code("gender", _GENDER_CODES),
        "province_code": code("province", _PROVINCE_CODES),
    }


def _members(loyalty: pd.DataFrame) -> _Members:
    require_columns(loyalty, LOYALTY_COLUMNS_USED, "loyalty")
    if loyalty.empty:
        raise ValueError("loyalty is empty: there are no members to build features for")
    ordered = loyalty.sort_values("loyalty_number", kind="stable")
    loyalty_number = ordered["loyalty_number"].to_numpy(dtype="int64")
    repeated = loyalty_number[1:][loyalty_number[1:] == loyalty_number[:-1]]
    if repeated.size:
        raise ValueError(f"loyalty holds {repeated.size} repeated loyalty_number values, e.g. {repeated[0]}")
    cancel_year = ordered["cancellation_year"].astype("Int64")
    cancel_month = ordered["cancellation_month"].astype("Int64")
    half_set = (cancel_year.isna() != cancel_month.isna()).to_numpy()
    if half_set.any():
        raise ValueError(
            f"{int(half_set.sum())} members have only one of cancellation_year / cancellation_month, "
            f"e.g. loyalty_number {loyalty_number[half_set][0]}"
        )
    return _Members(
        loyalty_number=loyalty_number,
        enrollment_month_number=month_number(
            ordered["enrollment_year"].to_numpy(dtype="int64"), ordered["enrollment_month"].to_numpy(dtype="int64")
        ),
        cancellation_month_number=cancellation_month_numbers(ordered),
        attributes=_attributes(ordered, lambda column, codes: _category_codes(ordered[column], codes)),
    )


def _counts_as_int32(values: np.ndarray, months: int, column: str) -> np.ndarray:
    """Monthly counts as int32, so their cumulative sums take half the memory and stay exact."""
    if values.size and int(values.max()) * (months + 1) >= np.iinfo(np.int32).max:
        raise ValueError(f"{column} holds {int(values.max())} in one month: implausible for a flight count")
    return values.astype(np.int32)


def _scatter_cumulative(flat_index: np.ndarray, values: np.ndarray, months: int, members: int, dtype) -> np.ndarray:
    """Cumulative sums over months, shape (months + 1, members); row 0 is all zeros."""
    cumulative = np.zeros((months + 1) * members, dtype=dtype)
    cumulative[flat_index] = values
    cumulative = cumulative.reshape(months + 1, members)
    np.cumsum(cumulative, axis=0, out=cumulative)
    return cumulative


@dataclass(frozen=True)
class _ActivityCumulative:
    flights: np.ndarray  # int32; exact for counts
    distance: np.ndarray
    points_accumulated: np.ndarray
    points_redeemed: np.ndarray
    dollar_cost: np.ndarray
    active_months: np.ndarray  # int32 count of months with flights > 0
    redemption_months: np.ndarray  # int32 count of months with points redeemed > 0
    companion_flights: np.ndarray | None  # None when no row has a companion count
    flights_with_known_companions: np.ndarray | None


def _activity_cumulative(activity: pd.DataFrame, members: _Members, start: int, months: int) -> _ActivityCumulative:
    require_columns(activity, ACTIVITY_COLUMNS_USED, "activity")
    member_count = members.loyalty_number.size
    row_month = (
        month_number(activity["year"].to_numpy(dtype="int64"), activity["month"].to_numpy(dtype="int64")) - start
    )
    in_range = (row_month >= 0) & (row_month < months)
    rows = slice(None) if in_range.all() else np.flatnonzero(in_range)
    row_month = row_month[rows]

    row_member = activity["loyalty_number"].to_numpy(dtype="int64")[rows]
    position = pd.Index(members.loyalty_number).get_indexer(row_member)
    if (position < 0).any():
        raise ValueError(
            f"activity holds {int((position < 0).sum())} rows for members absent from loyalty, "
            f"e.g. loyalty_number {row_member[position < 0][0]}"
        )
    del row_member
    flat_index = (row_month + 1) * member_count + position
    del position, row_month
    rows_per_cell = np.bincount(flat_index, minlength=(months + 1) * member_count)
    if rows_per_cell.max(initial=0) > 1:
        cell = int(np.argmax(rows_per_cell))
        month = start + cell // member_count - 1
        raise ValueError(
            f"activity holds {int((rows_per_cell > 1).sum())} (member, month) keys with more than one row "
            f"(de-duplicate upstream), e.g. loyalty_number {members.loyalty_number[cell % member_count]} "
            f"in {month // 12}-{month % 12 + 1:02d}"
        )
    del rows_per_cell

    def column(name: str, dtype) -> np.ndarray:
        return activity[name].to_numpy(dtype=dtype)[rows]

    companions = activity["flights_with_companions"]
    companions_known = companions.notna().to_numpy()[rows]
    return _cumulative_measures(
        flat_index,
        months,
        member_count,
        flights=column("total_flights", "int64"),
        flights_with_companions=(
            companions.to_numpy(dtype="int64", na_value=0)[rows] if companions_known.any() else None
        ),
        companions_known=companions_known,
        distance=column("distance", "float64"),
        points_accumulated=column("points_accumulated", "float64"),
        points_redeemed=column("points_redeemed", "float64"),
        dollar_cost=column("dollar_cost_points_redeemed", "float64"),
    )


def _cumulative_measures(
    flat_index: np.ndarray,
    months: int,
    member_count: int,
    *,
    flights: np.ndarray,
    flights_with_companions: np.ndarray | None,
    companions_known: np.ndarray,
    distance: np.ndarray,
    points_accumulated: np.ndarray,
    points_redeemed: np.ndarray,
    dollar_cost: np.ndarray,
) -> _ActivityCumulative:
    """Cumulative matrices of every measure from per-row values placed at ``flat_index``.

    ``flights_with_companions`` may be None when ``companions_known`` is all false.
    """

    def cumulative(values: np.ndarray, dtype) -> np.ndarray:
        return _scatter_cumulative(flat_index, values, months, member_count, dtype)

    flights_values = _counts_as_int32(flights, months, "total_flights")
    companion_flights = flights_with_known_companions = None
    if companions_known.any():
        companion_values = _counts_as_int32(flights_with_companions, months, "flights_with_companions")
        companion_flights = cumulative(companion_values, np.int32)
        if not companions_known.all():
            flights_with_known_companions = cumulative(np.where(companions_known, flights_values, 0), np.int32)
    flights_cumulative = cumulative(flights_values, np.int32)
    if companion_flights is not None and flights_with_known_companions is None:
        flights_with_known_companions = flights_cumulative
    return _ActivityCumulative(
        flights=flights_cumulative,
        distance=cumulative(distance, np.float64),
        points_accumulated=cumulative(points_accumulated, np.float64),
        points_redeemed=cumulative(points_redeemed, np.float64),
        dollar_cost=cumulative(dollar_cost, np.float64),
        active_months=cumulative(flights_values > 0, np.int32),
        redemption_months=cumulative(points_redeemed > 0, np.int32),
        companion_flights=companion_flights,
        flights_with_known_companions=flights_with_known_companions,
    )


def _window_sum(cumulative: np.ndarray, month: int, window: int) -> np.ndarray:
    """Sum over months ``month - window + 1 .. month`` (months before the history count as zero)."""
    return (cumulative[month + 1] - cumulative[max(month + 1 - window, 0)]).astype(np.float64)


def _monthly_values(cumulative: np.ndarray, month: int, window: int) -> np.ndarray:
    """Per-month values for the window ending at ``month``, shape (window, members), oldest first."""
    first = month + 1 - window
    values = np.diff(cumulative[max(first, 0) : month + 2], axis=0).astype(np.float64)
    if first < 0:
        values = np.concatenate([np.zeros((-first, values.shape[1])), values])
    return values


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.full(numerator.shape, np.nan), where=denominator > 0)


# Least-squares slope over x = 0..5 is sum((x - 2.5) * y) / 17.5 = sum((2x - 5) * y) / 35.
_SLOPE_6M_WEIGHTS = (2.0 * np.arange(6) - 5.0)[:, None]
_SLOPE_6M_DENOMINATOR = 35.0


def _last_month_with(cumulative: np.ndarray, month: int, last: np.ndarray) -> None:
    """Set ``last`` to ``month`` where the count in ``cumulative`` rose in that month."""
    last[cumulative[month + 1] > cumulative[month]] = month


def _snapshot_features(
    activity: _ActivityCumulative,
    members: _Members,
    month: int,
    snapshot_month_number: int,
    last_flight_month: np.ndarray,
    last_redemption_month: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every feature at one snapshot for all members (eligibility is applied by the caller).

    ``month`` counts from the history start; ``last_*_month`` likewise, -1 when none yet.
    """
    flights_12m = _window_sum(activity.flights, month, 12)
    points_accumulated_12m = _window_sum(activity.points_accumulated, month, 12)
    points_redeemed_12m = _window_sum(activity.points_redeemed, month, 12)
    distance_12m = _window_sum(activity.distance, month, 12)
    monthly_flights = _monthly_values(activity.flights, month, 12)
    mean_flights = flights_12m / 12.0
    # Summed month by month: numpy's pairwise sum over one member's column would round differently
    # from its row-wise sum over many members, and the online path scores one member at a time.
    flights_std = np.sqrt(functools.reduce(np.add, (monthly_flights - mean_flights) ** 2) / 12.0)
    if activity.companion_flights is None:
        companion_share = np.full(flights_12m.shape, np.nan)
    else:
        companion_share = _ratio(
            _window_sum(activity.companion_flights, month, 12),
            _window_sum(activity.flights_with_known_companions, month, 12),
        )
    flights_3m = monthly_flights[9:].sum(axis=0)
    tenure_months = (snapshot_month_number - members.enrollment_month_number).astype(np.float64)
    lifetime = LIFETIME_WINDOW_MONTHS
    window_coverage = min(month + 1, lifetime)
    return {
        "flights_3m": flights_3m,
        "flights_6m": monthly_flights[6:].sum(axis=0),
        "flights_12m": flights_12m,
        "distance_3m": _window_sum(activity.distance, month, 3),
        "distance_12m": distance_12m,
        "points_accumulated_12m": points_accumulated_12m,
        "points_redeemed_3m": _window_sum(activity.points_redeemed, month, 3),
        "points_redeemed_12m": points_redeemed_12m,
        "months_since_last_flight": (month - last_flight_month).astype(np.float64),
        "active_months_12m": (monthly_flights > 0).sum(axis=0).astype(np.float64),
        "flights_mom_change": monthly_flights[11] - monthly_flights[10],
        "flights_3m_minus_prior_3m": flights_3m - monthly_flights[6:9].sum(axis=0),
        "flights_slope_6m": (_SLOPE_6M_WEIGHTS * monthly_flights[6:]).sum(axis=0) / _SLOPE_6M_DENOMINATOR,
        "flights_cv_12m": _ratio(flights_std, mean_flights),
        "redeemed_to_accumulated_12m": _ratio(points_redeemed_12m, points_accumulated_12m),
        "dollar_cost_per_redeemed_point_12m": _ratio(_window_sum(activity.dollar_cost, month, 12), points_redeemed_12m),
        "distance_per_flight_12m": _ratio(distance_12m, flights_12m),
        "companion_share_12m": companion_share,
        "tenure_months": tenure_months,
        **members.attributes,
        "membership_month_of_year": np.mod(tenure_months, 12.0),
        "window_coverage_24m": np.full(tenure_months.shape, float(window_coverage)),
        "flights_24m": _window_sum(activity.flights, month, lifetime),
        "active_months_24m": _window_sum(activity.active_months, month, lifetime),
        "redeemed_to_accumulated_24m": _ratio(
            _window_sum(activity.points_redeemed, month, lifetime),
            _window_sum(activity.points_accumulated, month, lifetime),
        ),
        "redemptions_12m": _window_sum(activity.redemption_months, month, 12),
        # A redemption before the window, or none in the history, gives the window's coverage.
        "months_since_last_redemption": np.minimum(month - last_redemption_month, window_coverage).astype(np.float64),
    }


def _eligible(members: _Members, snapshot_month_number: int) -> np.ndarray:
    """Positions of members enrolled in or before the snapshot month and not cancelled by then."""
    return np.flatnonzero(
        (members.enrollment_month_number <= snapshot_month_number)
        & (members.cancellation_month_number > snapshot_month_number)
    )


def build_features(
    loyalty: pd.DataFrame,
    activity: pd.DataFrame,
    snapshots: Sequence[pd.Timestamp],
    *,
    history_start: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Point-in-time features: one row per (eligible member, snapshot).

    ``loyalty`` and ``activity`` follow the raw_loyalty_history / raw_flight_activity schemas
    of one drop; (member, month) keys must be unique. ``history_start`` is the first month of
    observed activity (default: the earliest month in ``activity``); activity before it and
    after the last snapshot (e.g. the month-to-date month) is ignored. Rows are ordered by
    snapshot_month, then loyalty_number. Columns: ``ID_COLUMNS + MODEL_FEATURES``.
    """
    if len(snapshots) == 0:
        raise ValueError("no snapshots requested")
    ordered_snapshots = sorted({require_month_start(s, "snapshot") for s in snapshots})
    start = require_month_start(
        first_activity_month(activity) if history_start is None else history_start, "history_start"
    )
    if ordered_snapshots[0] < start:
        raise ValueError(f"snapshot {ordered_snapshots[0].date()} precedes history_start {start.date()}")
    start_number = timestamp_month_number(start)
    snapshot_positions = [timestamp_month_number(s) - start_number for s in ordered_snapshots]
    months = snapshot_positions[-1] + 1

    members = _members(loyalty)
    cumulative = _activity_cumulative(activity, members, start_number, months)

    eligible_by_snapshot = [_eligible(members, start_number + position) for position in snapshot_positions]
    row_counts = np.array([positions.size for positions in eligible_by_snapshot], dtype=np.int64)
    row_offsets = np.concatenate([[0], np.cumsum(row_counts)])
    # One float64 block of the features that change with the snapshot, feature-major, filled in place
    # and wrapped below without a copy. Member attributes are gathered after the cumulative matrices
    # are freed, so the two never share the peak.
    by_snapshot = [name for name in MODEL_FEATURES if name not in members.attributes]
    feature_values = np.empty((len(by_snapshot), int(row_offsets[-1])), dtype=np.float64)

    last_flight_month = np.full(members.loyalty_number.size, -1, dtype=np.int64)
    last_redemption_month = last_flight_month.copy()
    snapshot_index = 0
    for month in range(months):
        _last_month_with(cumulative.flights, month, last_flight_month)
        _last_month_with(cumulative.redemption_months, month, last_redemption_month)
        if month != snapshot_positions[snapshot_index]:
            continue
        values = _snapshot_features(
            cumulative, members, month, start_number + month, last_flight_month, last_redemption_month
        )
        eligible = eligible_by_snapshot[snapshot_index]
        rows = slice(row_offsets[snapshot_index], row_offsets[snapshot_index + 1])
        for feature_index, name in enumerate(by_snapshot):
            feature_values[feature_index, rows] = values[name][eligible]
        snapshot_index += 1
    del cumulative, values

    member_rows = np.concatenate(eligible_by_snapshot)
    features = pd.DataFrame(feature_values.T, columns=by_snapshot, copy=False)
    for position, name in enumerate(MODEL_FEATURES):
        if name in members.attributes:
            features.insert(position, name, members.attributes[name][member_rows])
    features.insert(0, "loyalty_number", members.loyalty_number[member_rows])
    features.insert(1, "snapshot_month", np.repeat(np.array(ordered_snapshots, dtype="datetime64[ns]"), row_counts))
    features.insert(2, "history_months", np.repeat(np.array(snapshot_positions, dtype=np.int64) + 1, row_counts))
    return features


def _category_code(value: str | None, codes: dict[str, int]) -> float:
    """One value of :func:`_category_codes` (same normalisation) without a pandas round trip."""
    return float("nan") if value is None else float(codes.get(str(value).strip().casefold(), np.nan))


def member_features(
    loyalty: Mapping[str, Any],
    activity: Mapping[str, Sequence],
    snapshot: date,
    *,
    history_start: date,
) -> np.ndarray:
    """The ``MODEL_FEATURES`` of one member at one snapshot, from plain values: the online path.

    ``loyalty`` maps ``LOYALTY_COLUMNS_USED`` to scalars (cancellation year and month both None when
    not cancelled); ``activity`` maps ``ACTIVITY_COLUMNS_USED`` (without ``loyalty_number``) to
    equal-length sequences, one entry per month, ``flights_with_companions`` None where unknown.
    The formulas are those of :func:`build_features` (same cumulative matrices and
    ``_snapshot_features``), over the months ``history_start .. snapshot`` (only their year and month
    are read); months outside are ignored.
    Raises ValueError when the member is not eligible at the snapshot or a month appears twice.
    """
    snapshot_number = month_number(snapshot.year, snapshot.month)
    start = month_number(history_start.year, history_start.month)
    if snapshot_number < start:
        raise ValueError(f"snapshot {snapshot:%Y-%m} precedes history_start {history_start:%Y-%m}")
    cancelled = loyalty["cancellation_year"] is not None
    one_member = {name: [loyalty[name]] for name in LOYALTY_COLUMNS_USED}
    members = _Members(
        loyalty_number=np.array([loyalty["loyalty_number"]], dtype=np.int64),
        enrollment_month_number=np.array([month_number(loyalty["enrollment_year"], loyalty["enrollment_month"])]),
        cancellation_month_number=np.array(
            [
                month_number(loyalty["cancellation_year"], loyalty["cancellation_month"])
                if cancelled
                else np.iinfo(np.int64).max
            ],
            dtype=np.int64,
        ),
        attributes=_attributes(one_member, lambda column, codes: np.array([_category_code(loyalty[column], codes)])),
    )
    if _eligible(members, snapshot_number).size == 0:
        raise ValueError(f"member {loyalty['loyalty_number']} is not enrolled and active in {snapshot:%Y-%m}")
    months = snapshot_number - start + 1
    years, months_of_year = np.asarray(activity["year"], dtype=np.int64), np.asarray(activity["month"], dtype=np.int64)
    row_month = month_number(years, months_of_year) - start
    rows = np.flatnonzero((row_month >= 0) & (row_month < months))
    row_month = row_month[rows]
    if np.unique(row_month).size != row_month.size:
        raise ValueError(f"member {loyalty['loyalty_number']} has a month twice in its activity")
    companions = [activity["flights_with_companions"][row] for row in rows]
    companions_known = np.array([value is not None for value in companions], dtype=bool)

    def column(name: str, dtype) -> np.ndarray:
        return np.asarray(activity[name], dtype=dtype)[rows]

    cumulative = _cumulative_measures(
        row_month + 1,
        months,
        1,
        flights=column("total_flights", np.int64),
        flights_with_companions=np.array([value or 0 for value in companions], dtype=np.int64),
        companions_known=companions_known,
        distance=column("distance", np.float64),
        points_accumulated=column("points_accumulated", np.float64),
        points_redeemed=column("points_redeemed", np.float64),
        dollar_cost=column("dollar_cost_points_redeemed", np.float64),
    )
    last_flight_month = np.array([_last_rise(cumulative.flights[:, 0])])
    last_redemption_month = np.array([_last_rise(cumulative.redemption_months[:, 0])])
    values = _snapshot_features(
        cumulative, members, months - 1, snapshot_number, last_flight_month, last_redemption_month
    )
    return np.array([values[name][0] for name in MODEL_FEATURES], dtype=np.float64)


def _last_rise(cumulative: np.ndarray) -> int:
    """Last month (from 0) in which a one-member cumulative count rose; -1 if it never did."""
    risen = np.flatnonzero(np.diff(cumulative) > 0)
    return int(risen[-1]) if risen.size else -1


def feature_summary_markdown(features: pd.DataFrame) -> str:
    """Markdown table of each feature's min, median, max and share of nulls."""
    require_columns(features, MODEL_FEATURES, "features")
    values = features[MODEL_FEATURES]
    summary = pd.DataFrame(
        {
            "feature": MODEL_FEATURES,
            "min": values.min().to_numpy(),
            "median": values.median().to_numpy(),
            "max": values.max().to_numpy(),
            "null share": values.isna().mean().to_numpy(),
        }
    )
    return summary.to_markdown(index=False, floatfmt=".4g")
