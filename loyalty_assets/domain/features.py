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
  ``redeemed_to_accumulated_12m`` (no points accumulated), ``dollar_cost_per_redeemed_point_12m``
  (nothing redeemed), ``distance_per_flight_12m`` (no flights), ``companion_share_12m`` (no
  flights with a known companion count, which includes every row of the 8-column variant),
  ``loyalty_card_tier`` and ``promotion_enrollment`` (category value not known to this module;
  the loader keeps and flags such values).
- ``months_since_last_flight`` is ``history_months`` when no flight is seen in the history: one
  more than the largest value a member who flew could have.
- Loyalty card tier and enrollment type are the values in the drop; the data holds no
  history of tier changes.
- CLV is deliberately absent: it is an as-of-extraction total that includes future flights.
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
LOYALTY_CARD_TIERS = {"star": 0, "nova": 1, "aurora": 2}
ENROLLMENT_TYPE_PROMOTION = {"standard": 0, "2018 promotion": 1}

LOYALTY_COLUMNS_USED = (
    "loyalty_number",
    "enrollment_year",
    "enrollment_month",
    "cancellation_year",
    "cancellation_month",
    "loyalty_card",
    "enrollment_type",
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
    name: str
    formula: str
    window: str
    why: str


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
    ),
    FeatureSpec(
        "promotion_enrollment",
        "1 if enrollment type is 2018 Promotion, else 0 (categorical code)",
        "value in the drop",
        "Promotion enrollees cancel far more often (11.8% vs 2.2% in year one).",
    ),
    FeatureSpec(
        "window_coverage_months",
        "complete months of history in the 12-month window: min(history_months, 12)",
        "history_start..s",
        "Lets the model train on early snapshots whose windows are truncated, and know they are.",
    ),
)
FEATURE_COLUMNS: list[str] = [feature.name for feature in FEATURES]
CATEGORICAL_FEATURES: list[str] = ["loyalty_card_tier", "promotion_enrollment"]


def features_markdown() -> str:
    """The feature catalogue as a Markdown table (name | formula | window | why it matters)."""
    table = pd.DataFrame(
        [(f"`{f.name}`", f.formula, f.window, f.why) for f in FEATURES],
        columns=["name", "formula", "window", "why it matters"],
    )
    return table.to_markdown(index=False)


FEATURES_MARKDOWN = features_markdown()


def month_number(year, month):
    """Months since year 0, so consecutive months differ by one (works on scalars and arrays)."""
    return year * 12 + month - 1


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


@dataclass(frozen=True)
class _Members:
    loyalty_number: np.ndarray  # sorted, unique
    enrollment_month_number: np.ndarray
    cancellation_month_number: np.ndarray  # int64 max when not cancelled
    loyalty_card_tier: np.ndarray
    promotion_enrollment: np.ndarray


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
    not_cancelled = cancel_year.isna().to_numpy()
    cancellation = month_number(
        cancel_year.to_numpy(dtype="int64", na_value=0), cancel_month.to_numpy(dtype="int64", na_value=0)
    )
    cancellation[not_cancelled] = np.iinfo(np.int64).max
    return _Members(
        loyalty_number=loyalty_number,
        enrollment_month_number=month_number(
            ordered["enrollment_year"].to_numpy(dtype="int64"), ordered["enrollment_month"].to_numpy(dtype="int64")
        ),
        cancellation_month_number=cancellation,
        loyalty_card_tier=_category_codes(ordered["loyalty_card"], LOYALTY_CARD_TIERS),
        promotion_enrollment=_category_codes(ordered["enrollment_type"], ENROLLMENT_TYPE_PROMOTION),
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


def _snapshot_features(
    activity: _ActivityCumulative,
    members: _Members,
    month: int,
    snapshot_month_number: int,
    last_flight_month: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every feature at one snapshot for all members (eligibility is applied by the caller)."""
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
        "tenure_months": (snapshot_month_number - members.enrollment_month_number).astype(np.float64),
        "loyalty_card_tier": members.loyalty_card_tier,
        "promotion_enrollment": members.promotion_enrollment,
        "window_coverage_months": np.full(
            members.loyalty_number.size, min(month + 1, LONGEST_WINDOW_MONTHS), dtype=np.float64
        ),
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
    snapshot_month, then loyalty_number. Columns: ``ID_COLUMNS + FEATURE_COLUMNS``.
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
    # One float64 block, feature-major, filled in place; wrapped below without a copy.
    feature_values = np.empty((len(FEATURE_COLUMNS), int(row_offsets[-1])), dtype=np.float64)

    last_flight_month = np.full(members.loyalty_number.size, -1, dtype=np.int64)
    snapshot_index = 0
    for month in range(months):
        flew = cumulative.flights[month + 1] > cumulative.flights[month]
        last_flight_month[flew] = month
        if month != snapshot_positions[snapshot_index]:
            continue
        values = _snapshot_features(cumulative, members, month, start_number + month, last_flight_month)
        eligible = eligible_by_snapshot[snapshot_index]
        rows = slice(row_offsets[snapshot_index], row_offsets[snapshot_index + 1])
        for feature_index, name in enumerate(FEATURE_COLUMNS):
            feature_values[feature_index, rows] = values[name][eligible]
        snapshot_index += 1
    del cumulative, values

    features = pd.DataFrame(feature_values.T, columns=FEATURE_COLUMNS, copy=False)
    features.insert(0, "loyalty_number", members.loyalty_number[np.concatenate(eligible_by_snapshot)])
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
    """The ``FEATURE_COLUMNS`` of one member at one snapshot, from plain values: the online path.

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
        loyalty_card_tier=np.array([_category_code(loyalty["loyalty_card"], LOYALTY_CARD_TIERS)]),
        promotion_enrollment=np.array([_category_code(loyalty["enrollment_type"], ENROLLMENT_TYPE_PROMOTION)]),
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
    flown = np.flatnonzero(np.diff(cumulative.flights[:, 0]) > 0)
    last_flight_month = np.array([flown[-1] if flown.size else -1], dtype=np.int64)
    values = _snapshot_features(cumulative, members, months - 1, snapshot_number, last_flight_month)
    return np.array([values[name][0] for name in FEATURE_COLUMNS], dtype=np.float64)


def feature_summary_markdown(features: pd.DataFrame) -> str:
    """Markdown table of each feature's min, median, max and share of nulls."""
    require_columns(features, FEATURE_COLUMNS, "features")
    values = features[FEATURE_COLUMNS]
    summary = pd.DataFrame(
        {
            "feature": FEATURE_COLUMNS,
            "min": values.min().to_numpy(),
            "median": values.median().to_numpy(),
            "max": values.max().to_numpy(),
            "null share": values.isna().mean().to_numpy(),
        }
    )
    return summary.to_markdown(index=False, floatfmt=".4g")
