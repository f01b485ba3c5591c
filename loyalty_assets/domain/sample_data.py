"""Simulated landing drops in the exact format of the public Airline Loyalty Program files.

One population is simulated per call of :func:`simulate_population`: members with their
attributes, enrollment and (for some) cancellation dates, and a full month of activity for every
member and month of the history window. :func:`extract_as_of` cuts the full extract a given day
would deliver (snapshot semantics of the data contract), and :func:`write_drops` writes those
extracts as ``loyalty_history/dt=YYYY-MM-DD/...`` and ``flight_activity/dt=YYYY-MM-DD/...``.

Timeline. The simulation keeps the real data set's timeline relative to the last drop: its last
complete month plays the part of 2018-12, enrollments run over the seven years before it (the
real 2012..2018), the "2018 Promotion" cohort enrols in months 2-4 of the final year, and the
drop's own month continues the final year at the standard enrollment rate.

Churn. The monthly cancellation hazard depends on tenure (highest in the second year, zero from
the sixth year on), on the promotion flag and on an unobserved member frailty; for many cancellers the
activity fades over the two to four months before the cancellation month, and ordinary members
have dormant spells of the same shape, so behaviour carries signal without revealing the label.
No attribute (CLV, salary, card, ...) depends on cancellation.
"""

from __future__ import annotations

import calendar
import gzip
import io
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from loyalty_assets.domain.completeness import manifest_bytes
from loyalty_assets.domain.lake_keys import drop_file_key, manifest_key
from loyalty_assets.domain.storage import ObjectStore, dataframe_to_parquet_bytes

LOYALTY_HEADER = (
    "Loyalty Number", "Country", "Province", "City", "Postal Code", "Gender", "Education", "Salary",
    "Marital Status", "Loyalty Card", "CLV", "Enrollment Type", "Enrollment Year", "Enrollment Month",
    "Cancellation Year", "Cancellation Month",
)  # fmt: skip
ACTIVITY_HEADER = (
    "Loyalty Number", "Year", "Month", "Flights Booked", "Flights with Companions", "Total Flights",
    "Distance", "Points Accumulated", "Points Redeemed", "Dollar Cost Points Redeemed",
)  # fmt: skip
EIGHT_COLUMN_DROPPED = ("Flights Booked", "Flights with Companions")
LOYALTY_FILE_STEM = "Customer Loyalty History"
ACTIVITY_FILE_STEM = "Customer Flight Activity"

# --- calibration: figures measured on the public Airline Loyalty Program data set (16,737 members) ---

ENROLLMENT_YEARS = 7
# Enrollments per relative year (real 2012..2018); the final year's count excludes the promotion.
STANDARD_ENROLLMENTS_PER_YEAR = (1686, 2397, 2370, 2331, 2456, 2487, 3010 - 971)
PROMOTION_ENROLLMENTS = 971
PROMOTION_MONTHS_OF_FINAL_YEAR = (2, 3, 4)
PROMOTION_TYPE = "2018 Promotion"
STANDARD_TYPE = "Standard"

CARD_SHARES = {"Star": 7637, "Nova": 5671, "Aurora": 3429}
CLV_MEDIAN_BY_CARD = {"Star": 4787.0, "Nova": 5799.0, "Aurora": 8140.0}
CLV_LOG_SIGMAS = (0.55, 0.75)  # below / above the median: a long right tail
CLV_FLOOR = 1898.01
EDUCATION_SHARES = {"Bachelor": 10475, "College": 4238, "High School or Below": 782, "Master": 508, "Doctor": 734}
SALARY_MEDIAN_BY_EDUCATION = {
    "High School or Below": 61915.0,
    "Bachelor": 71960.0,
    "Master": 105487.0,
    "Doctor": 182144.0,
}
SALARY_LOG_SIGMA = 0.28
NEGATIVE_SALARY_SHARE = 20 / 16737
GENDER_SHARES = {"Female": 0.5, "Male": 0.5}
MARITAL_SHARES = {"Married": 0.58, "Single": 0.27, "Divorced": 0.15}
# (province, city, postal codes, members): provinces sum to the real counts.
ADDRESSES = (
    ("Ontario", "Toronto", ("M2Z 4K1", "P1W 1K4", "P5S 6R4", "M2M 7K8", "M2M 6J7", "M1R 4K3", "M8Y 4K8", "P1L 8X8", "P1J 8T7", "P2T 6G3", "M2P 4F6"), 3351),
    ("Ontario", "Ottawa", ("K1F 2R2",), 500),
    ("Ontario", "Trenton", ("K8V 4B2",), 400),
    ("Ontario", "Thunder Bay", ("K8T 5M5",), 350),
    ("Ontario", "London", ("M5B 3E4",), 300),
    ("Ontario", "Sudbury", ("M5V 1G5",), 250),
    ("Ontario", "Kingston", ("M9K 2P4",), 253),
    ("British Columbia", "Vancouver", ("V6E 3D9", "V5R 1W3", "V6E 3Z3", "V1E 4R6"), 2582),
    ("British Columbia", "Whistler", ("V6T 1Y8",), 582),
    ("British Columbia", "Victoria", ("V10 6T5",), 529),
    ("British Columbia", "West Vancouver", ("V6V 8Z3",), 422),
    ("British Columbia", "Dawson Creek", ("U5I 4F1",), 238),
    ("British Columbia", "Kelowna", ("V09 2E9",), 136),
    ("Quebec", "Montreal", ("H2T 2J6", "H2T 9K8", "H2Y 2W2", "H2Y 4R4", "H4G 3T4"), 2059),
    ("Quebec", "Quebec City", ("G1B 3L5",), 570),
    ("Quebec", "Hull", ("J8Y 3Z5",), 503),
    ("Quebec", "Tremblant", ("H5Y 2S9",), 168),
    ("Alberta", "Edmonton", ("T3G 6Y6", "T9G 1W3"), 486),
    ("Alberta", "Calgary", ("T3E 2V9",), 230),
    ("Alberta", "Peace River", ("T9O 2W2",), 164),
    ("Alberta", "Banff", ("T4V 1D4",), 89),
    ("Manitoba", "Winnipeg", ("R2C 0M5", "R6Y 4T5"), 658),
    ("New Brunswick", "Fredericton", ("E3B 2H2",), 532),
    ("New Brunswick", "Moncton", ("E1A 2A7",), 104),
    ("Nova Scotia", "Halifax", ("B3C 2M8", "B3J 9S2"), 518),
    ("Saskatchewan", "Regina", ("S6J 3G0",), 409),
    ("Newfoundland", "St. John's", ("A1C 6H9",), 258),
    ("Yukon", "Whitehorse", ("Y2K 6R0",), 110),
    ("Prince Edward Island", "Charlottetown", ("C1A 4Y9",), 66),
)  # fmt: skip

# Monthly cancellation hazard by tenure (months since the enrollment month), upper bounds exclusive.
STANDARD_HAZARD_BY_TENURE = ((12, 0.0046), (24, 0.0095), (60, 0.0070))
PROMOTION_HAZARD_FIRST_YEAR = 0.0210
# Program-wide churn grew over the years (real cancellations 43 .. 645 in 2013..2018).
HAZARD_FACTOR_BY_RELATIVE_YEAR = (0.35, 0.6, 0.75, 0.9, 1.0, 1.0, 1.0, 1.0)
FRAILTY_SHAPE = 0.4  # gamma frailty (mean 1): unobserved churn-proneness, the honest noise
ENGAGEMENT_HAZARD_LINK = 1.2  # hazard x exp(-link * standardised engagement)

ACTIVE_SHARE_ALPHA, ACTIVE_SHARE_BETA = 22.0, 9.5  # per-member monthly probability of flying
SEASONAL_ACTIVITY = np.array([0.94, 0.92, 1.0, 1.0, 1.02, 1.06, 1.1, 1.08, 1.0, 0.98, 0.94, 1.04])
MEAN_BOOKED_SHAPE, MEAN_BOOKED_SCALE = 7.0, 1.02  # gamma of a member's mean booked flights beyond one
MAX_BOOKED = 21
COMPANION_MONTH_SHARE, COMPANION_SHARE = 0.45, 0.5
MAX_COMPANIONS = 11
DISTANCE_PER_FLIGHT_MEDIAN, DISTANCE_PER_FLIGHT_LOG_SIGMAS = 236.0, (0.68, 0.86)  # p10 99, p90 714
BONUS_POINTS_SHARE, BONUS_POINTS_FACTOR_QUARTERS = 0.08, 5  # x1.25 points (e.g. 183.75) in the final year
REDEEM_SHARE_OF_ACTIVE = 0.118
REDEEM_POINTS_MEAN, REDEEM_POINTS_SD, REDEEM_POINTS_MIN, REDEEM_POINTS_MAX = 500.0, 130.0, 250, 900
DOLLARS_PER_POINT = 0.081

FADING_CANCELLER_SHARE = 0.8
FADE_LEAD_MONTHS = (2, 3, 4)
FADE_DEPTH_RANGE = (0.5, 0.95)
DORMANT_SPELL_START_SHARE = 0.006  # per member-month: a fade of the same shape, then recovery
CANCEL_MONTH_FLYING_SHARE = 0.8
CANCEL_MONTH_FLIGHT_SHARE = 0.35

EXACT_DUPLICATE_SHARE = 1864 / 401688
CONFLICT_CANDIDATE_SHARE = 2 * 2066 / 401688  # materialises on flying rows only (about half)
CONFLICT_RATIO_RANGE = (0.3, 0.85)
FLIES_BEFORE_ENROLLMENT_SHARE = 0.04  # of all members
FLIES_BEFORE_ENROLLMENT_MAX_LEAD = 6


@dataclass(frozen=True)
class SampleConfig:
    """What to simulate and how to write it."""

    customers: int = 15000
    history_months: int = 24
    seed: int = 7
    activity_variant: Literal["10-column", "8-column"] = "10-column"
    file_format: Literal["csv", "csv.gz", "parquet"] = "csv"

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"customers must be >= 1, got {self.customers}")
        if self.history_months < 1:
            raise ValueError(f"history_months must be >= 1, got {self.history_months}")
        if self.activity_variant not in ("10-column", "8-column"):
            raise ValueError(f"activity_variant must be '10-column' or '8-column', got {self.activity_variant!r}")
        if self.file_format not in ("csv", "csv.gz", "parquet"):
            raise ValueError(f"file_format must be 'csv', 'csv.gz' or 'parquet', got {self.file_format!r}")


@dataclass(frozen=True, eq=False)
class Population:
    """One simulated population up to ``last_drop_date``.

    Members are sorted by loyalty number. Month positions count from ``first_month`` (a month
    index ``year * 12 + month - 1``); the activity matrices hold one FULL month per member and
    month, zero where the member does not fly, and :func:`extract_as_of` scales the drop's own
    month to date.
    """

    config: SampleConfig
    last_drop_date: date
    first_month: int
    attributes: pd.DataFrame  # real headers except enrollment and cancellation, one row per member
    enrollment_month: np.ndarray  # month index
    enrollment_day: np.ndarray
    cancellation_month: np.ndarray  # month index, -1 = never cancels up to last_drop_date
    cancellation_day: np.ndarray
    booked: np.ndarray  # (members, months) int64
    companions: np.ndarray
    distance: np.ndarray
    bonus_points: np.ndarray  # bool: points at x1.25
    points_redeemed: np.ndarray
    redeem_day: np.ndarray  # day of month the redemption happens (for month-to-date cuts)
    duplicate_member: np.ndarray  # member position of each duplicate row
    duplicate_month: np.ndarray  # month position
    duplicate_conflicts: np.ndarray  # bool: a conflicting (partial) copy rather than an exact one
    duplicate_ratio: np.ndarray  # share of flights/distance kept by a conflicting copy
    duplicate_anchor: np.ndarray  # loyalty number after which the copy sits in its month block

    @property
    def loyalty_numbers(self) -> np.ndarray:
        return self.attributes["Loyalty Number"].to_numpy()


def month_index(day: date) -> int:
    """``year * 12 + month - 1``: consecutive months are consecutive integers."""
    return day.year * 12 + day.month - 1


def _days_in_month(month: np.ndarray | int) -> np.ndarray:
    years, months = np.divmod(np.asarray(month), 12)
    lookup = np.array([[calendar.monthrange(2000 + leap, m + 1)[1] for m in range(12)] for leap in (1, 0)])
    leap = (years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))
    return lookup[leap.astype(int), months]


def _choice(rng: np.random.Generator, shares: dict[str, float], size: int) -> np.ndarray:
    weights = np.array(list(shares.values()), dtype=float)
    return np.array(list(shares), dtype=object)[rng.choice(len(weights), size=size, p=weights / weights.sum())]


def _enrollment_months(
    rng: np.random.Generator, size: int, last_month: int, last_day_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Enrollment month index and promotion flag of every member (relative timeline, see module doc)."""
    final_month = last_month - 1  # plays 2018-12
    first_month = final_month - 12 * ENROLLMENT_YEARS + 1
    months = np.arange(first_month, last_month + 1)
    standard = np.repeat(np.array(STANDARD_ENROLLMENTS_PER_YEAR, dtype=float) / 12, 12)
    standard = np.append(standard, standard[-1] * last_day_share)
    promotion = np.zeros(months.size)
    final_year_start = final_month - 11
    promotion[[final_year_start - first_month + m - 1 for m in PROMOTION_MONTHS_OF_FINAL_YEAR]] = (
        PROMOTION_ENROLLMENTS / 3
    )
    weights = np.concatenate([standard, promotion])
    pick = rng.choice(weights.size, size=size, p=weights / weights.sum())
    return months[pick % months.size], pick >= months.size


def _tenure_hazard(tenure: np.ndarray, promotion: np.ndarray) -> np.ndarray:
    hazard = np.zeros(tenure.shape)
    lower = 1
    for upper, rate in STANDARD_HAZARD_BY_TENURE:
        hazard[(tenure >= lower) & (tenure < upper)] = rate
        lower = upper
    hazard[promotion[:, None] & (tenure >= 1) & (tenure <= 12)] = PROMOTION_HAZARD_FIRST_YEAR
    return hazard


@dataclass(frozen=True)
class HazardTreatment:
    """Retention actions in a simulation: the members at ``positions`` (population order) have their
    monthly cancellation hazard multiplied by ``factor`` from the month index ``from_month`` on."""

    positions: np.ndarray
    from_month: np.ndarray
    factor: np.ndarray


def _simulate_cancellations(
    rng: np.random.Generator,
    enrollment_month: np.ndarray,
    promotion: np.ndarray,
    churn_proneness: np.ndarray,
    last_month: int,
    last_day_share: float,
    treatment: HazardTreatment | None,
) -> np.ndarray:
    """First month whose monthly Bernoulli(hazard) fires, -1 if none up to ``last_month``.

    The uniform draws do not depend on ``treatment``, so a treated member cancels no earlier with a
    factor below 1 and every other member is unchanged: the counterfactual is the same draw."""
    first = int(enrollment_month.min())
    months = np.arange(first, last_month + 1)
    tenure = months[None, :] - enrollment_month[:, None]
    relative_year = np.clip(
        (months - (last_month - 12 * ENROLLMENT_YEARS)) // 12, 0, len(HAZARD_FACTOR_BY_RELATIVE_YEAR) - 1
    )
    hazard = _tenure_hazard(tenure, promotion) * churn_proneness[:, None]
    hazard *= np.array(HAZARD_FACTOR_BY_RELATIVE_YEAR)[relative_year][None, :]
    hazard[:, -1] *= last_day_share
    if treatment is not None:
        treated = months[None, :] >= treatment.from_month[:, None]
        hazard[treatment.positions] *= np.where(treated, treatment.factor[:, None], 1.0)
    fires = rng.random(hazard.shape) < hazard
    cancelled = fires.any(axis=1)
    return np.where(cancelled, months[fires.argmax(axis=1)], -1)


def _split_lognormal(
    rng: np.random.Generator, median: np.ndarray | float, sigmas: tuple[float, float], size: int | tuple[int, int]
) -> np.ndarray:
    """Log-normal with a different log-scale sigma below and above the median (a skewed log-normal)."""
    z = rng.standard_normal(size)
    return median * np.exp(z * np.where(z < 0, sigmas[0], sigmas[1]))


def _postal_codes(address: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """One of the postal codes of each member's city, picked by ``uniform`` in [0, 1)."""
    widest = max(len(row[2]) for row in ADDRESSES)
    table = np.array([[row[2][k % len(row[2])] for k in range(widest)] for row in ADDRESSES], dtype=object)
    count = np.array([len(row[2]) for row in ADDRESSES])
    return table[address, (uniform * count[address]).astype(int)]


def _attributes(rng: np.random.Generator, size: int, promotion: np.ndarray) -> pd.DataFrame:
    """Member attributes, all drawn independently of churn (none may reveal the label)."""
    loyalty_numbers = np.sort(rng.choice(900_000, size=size, replace=False) + 100_000).astype(np.int64)
    address_weights = np.array([row[3] for row in ADDRESSES], dtype=float)
    address = rng.choice(len(ADDRESSES), size=size, p=address_weights / address_weights.sum())
    postal_codes = _postal_codes(address, rng.random(size))
    education = _choice(rng, EDUCATION_SHARES, size)
    salary_median = pd.Series(education).map(SALARY_MEDIAN_BY_EDUCATION).to_numpy(dtype=float)  # NaN for College
    salary = np.round(salary_median * np.exp(rng.normal(0.0, SALARY_LOG_SIGMA, size)))
    salary = np.where(rng.random(size) < NEGATIVE_SALARY_SHARE, -salary, salary)
    card = _choice(rng, CARD_SHARES, size)
    clv_median = pd.Series(card).map(CLV_MEDIAN_BY_CARD).to_numpy(dtype=float)
    clv = np.maximum(np.round(_split_lognormal(rng, clv_median, CLV_LOG_SIGMAS, size), 2), CLV_FLOOR)
    return pd.DataFrame(
        {
            "Loyalty Number": loyalty_numbers,
            "Country": "Canada",
            "Province": np.array([row[0] for row in ADDRESSES], dtype=object)[address],
            "City": np.array([row[1] for row in ADDRESSES], dtype=object)[address],
            "Postal Code": postal_codes,
            "Gender": _choice(rng, GENDER_SHARES, size),
            "Education": education,
            "Salary": pd.array(salary, dtype="Int64"),
            "Marital Status": _choice(rng, MARITAL_SHARES, size),
            "Loyalty Card": card,
            "CLV": clv,
            "Enrollment Type": np.where(promotion, PROMOTION_TYPE, STANDARD_TYPE).astype(object),
        }
    )


def _fade_factor(
    months: np.ndarray, end_month: np.ndarray, lead: np.ndarray, depth: np.ndarray, selected: np.ndarray
) -> np.ndarray:
    """Activity multiplier falling linearly to ``1 - depth`` over the ``lead`` months before ``end_month``."""
    months_before = end_month[:, None] - months[None, :]
    inside = selected[:, None] & (months_before >= 1) & (months_before <= lead[:, None])
    fade = 1.0 - depth[:, None] * (lead[:, None] - months_before + 1) / lead[:, None]
    return np.where(inside, fade, 1.0)


def _simulate_activity(
    rng: np.random.Generator,
    population_months: np.ndarray,
    enrollment_month: np.ndarray,
    enrollment_day: np.ndarray,
    cancellation_month: np.ndarray,
    active_share: np.ndarray,
) -> dict[str, np.ndarray]:
    """Full-month activity of every member in every month of ``population_months``."""
    size, months = enrollment_month.size, population_months
    first_month, last_month = int(months[0]), int(months[-1])

    # Quirk: some members enrolled inside the window fly a few months before their enrollment.
    can_fly_early = enrollment_month > first_month
    early_share = min(1.0, FLIES_BEFORE_ENROLLMENT_SHARE * size / max(int(can_fly_early.sum()), 1))
    flies_early = can_fly_early & (rng.random(size) < early_share)
    early_lead = rng.integers(1, FLIES_BEFORE_ENROLLMENT_MAX_LEAD + 1, size)
    activity_start = np.where(flies_early, np.maximum(enrollment_month - early_lead, first_month), enrollment_month)
    cancels = cancellation_month >= 0
    activity_end = np.where(cancels, cancellation_month, last_month)
    present = (months[None, :] >= activity_start[:, None]) & (months[None, :] <= activity_end[:, None])

    fading = cancels & (rng.random(size) < FADING_CANCELLER_SHARE)
    factor = _fade_factor(
        months, cancellation_month, rng.choice(FADE_LEAD_MONTHS, size), rng.uniform(*FADE_DEPTH_RANGE, size), fading
    )
    # Dormant spells: the same fade shape at a random month, followed by a recovery, for non-cancellers too.
    has_spell = rng.random(size) < 1.0 - (1.0 - DORMANT_SPELL_START_SHARE) ** months.size
    spell_bottom = first_month + rng.integers(0, months.size + FADE_LEAD_MONTHS[-1], size)
    factor *= _fade_factor(
        months, spell_bottom + 1, rng.choice(FADE_LEAD_MONTHS, size), rng.uniform(*FADE_DEPTH_RANGE, size), has_spell
    )

    seasonal = SEASONAL_ACTIVITY[months % 12][None, :]
    flying = present & (rng.random((size, months.size)) < np.clip(active_share[:, None] * seasonal * factor, 0.0, 1.0))
    flying |= flies_early[:, None] & (months[None, :] == enrollment_month[:, None] - 1)
    in_cancel_month = cancels[:, None] & (months[None, :] == cancellation_month[:, None])
    flying = np.where(in_cancel_month, rng.random((size, months.size)) < CANCEL_MONTH_FLYING_SHARE, flying)

    mean_extra = rng.gamma(MEAN_BOOKED_SHAPE, MEAN_BOOKED_SCALE, size)[:, None] * seasonal
    booked = np.minimum(1 + rng.poisson(mean_extra, (size, months.size)), MAX_BOOKED)
    days = _days_in_month(months)[None, :]
    enrolled_share = (days - enrollment_day[:, None] + 1) / days
    keep = np.where(in_cancel_month, CANCEL_MONTH_FLIGHT_SHARE, factor)
    keep = np.where(months[None, :] == enrollment_month[:, None], keep * enrolled_share, keep)
    booked = np.where(flying, rng.binomial(booked, np.clip(keep, 0.0, 1.0)), 0)
    with_companions = rng.random((size, months.size)) < COMPANION_MONTH_SHARE
    companions = np.where(with_companions, np.minimum(rng.binomial(booked, COMPANION_SHARE), MAX_COMPANIONS), 0)
    total = booked + companions
    per_flight = _split_lognormal(rng, DISTANCE_PER_FLIGHT_MEDIAN, DISTANCE_PER_FLIGHT_LOG_SIGMAS, (size, months.size))
    distance = np.round(total * per_flight).astype(np.int64)
    final_year = (months >= last_month - 12)[None, :]
    bonus_points = final_year & (total > 0) & (rng.random((size, months.size)) < BONUS_POINTS_SHARE)
    redeems = (total > 0) & (rng.random((size, months.size)) < REDEEM_SHARE_OF_ACTIVE)
    redeem_points = np.clip(
        np.round(rng.normal(REDEEM_POINTS_MEAN, REDEEM_POINTS_SD, (size, months.size))),
        REDEEM_POINTS_MIN,
        REDEEM_POINTS_MAX,
    )
    redeem_day = np.minimum(rng.integers(1, 32, (size, months.size)), days)
    return {
        "booked": booked.astype(np.int64),
        "companions": companions.astype(np.int64),
        "distance": distance,
        "bonus_points": bonus_points,
        "points_redeemed": np.where(redeems, redeem_points, 0).astype(np.int64),
        "redeem_day": redeem_day.astype(np.int8),
    }


def simulate_population(
    config: SampleConfig, last_drop_date: date, treatment: HazardTreatment | None = None
) -> Population:
    """One population: members, their cancellations and their monthly activity up to ``last_drop_date``.

    Activity covers the ``config.history_months`` complete months before the month of
    ``last_drop_date`` plus that month (held as a full month; extracts scale it to date).
    Deterministic for a given ``config.seed``, ``customers``, ``history_months`` and date; a
    ``treatment`` changes only the treated members' cancellations (and their activity after them).
    """
    rng = np.random.default_rng([config.seed, last_drop_date.toordinal()])
    size = config.customers
    last_month = month_index(last_drop_date)
    last_days = int(_days_in_month(last_month))
    last_day_share = last_drop_date.day / last_days

    enrollment_month, promotion = _enrollment_months(rng, size, last_month, last_day_share)
    enrollment_days = _days_in_month(enrollment_month)
    enrollment_days = np.where(enrollment_month == last_month, last_drop_date.day, enrollment_days)
    enrollment_day = rng.integers(1, enrollment_days + 1)

    active_share = rng.beta(ACTIVE_SHARE_ALPHA, ACTIVE_SHARE_BETA, size)
    engagement = (active_share - active_share.mean()) / active_share.std()
    frailty = rng.gamma(FRAILTY_SHAPE, 1.0 / FRAILTY_SHAPE, size)
    # Less engaged members churn more; the -link**2/2 term keeps the mean multiplier near 1.
    churn_proneness = frailty * np.exp(-ENGAGEMENT_HAZARD_LINK * engagement - ENGAGEMENT_HAZARD_LINK**2 / 2)
    cancellation_month = _simulate_cancellations(
        rng, enrollment_month, promotion, churn_proneness, last_month, last_day_share, treatment
    )
    cancellation_days = np.where(
        cancellation_month == last_month, last_drop_date.day, _days_in_month(np.maximum(cancellation_month, 0))
    )
    cancellation_day = np.where(cancellation_month >= 0, rng.integers(1, cancellation_days + 1), 0)

    attributes = _attributes(rng, size, promotion)
    first_month = last_month - config.history_months
    population_months = np.arange(first_month, last_month + 1)
    activity = _simulate_activity(
        rng, population_months, enrollment_month, enrollment_day, cancellation_month, active_share
    )

    cells = size * population_months.size
    exact_count = rng.binomial(cells, EXACT_DUPLICATE_SHARE)
    conflict_count = rng.binomial(cells, CONFLICT_CANDIDATE_SHARE)
    duplicate_cells = rng.choice(cells, size=exact_count + conflict_count, replace=False)
    return Population(
        config=config,
        last_drop_date=last_drop_date,
        first_month=first_month,
        attributes=attributes,
        enrollment_month=enrollment_month,
        enrollment_day=enrollment_day,
        cancellation_month=cancellation_month,
        cancellation_day=cancellation_day,
        duplicate_member=duplicate_cells // population_months.size,
        duplicate_month=duplicate_cells % population_months.size,
        duplicate_conflicts=np.arange(duplicate_cells.size) >= exact_count,
        duplicate_ratio=rng.uniform(*CONFLICT_RATIO_RANGE, duplicate_cells.size),
        duplicate_anchor=attributes["Loyalty Number"].to_numpy()[rng.integers(0, size, duplicate_cells.size)],
        **activity,
    )


def _points_hundredths(distance: np.ndarray, bonus_points: np.ndarray) -> np.ndarray:
    """Points accumulated in hundredths: one point per 10 km (x1.25 in bonus months, e.g. 183.75)."""
    return (distance // 10) * np.where(bonus_points, 25 * BONUS_POINTS_FACTOR_QUARTERS, 100)


def extract_as_of(population: Population, drop_date: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The full extract a drop dated ``drop_date`` delivers: ``(loyalty_history, flight_activity)``.

    Members enrolled on or before the date; cancellations on or before it; one activity row per
    member and month from the window's first month to the drop's month, that last month scaled
    to date (``day / days in month``, floored), plus the duplicate rows of those months. Columns
    carry the real header names (the 8-column variant drops the booked/companion counts).
    """
    drop_month = month_index(drop_date)
    if drop_date > population.last_drop_date:
        raise ValueError(f"drop date {drop_date} is after the population's last drop date {population.last_drop_date}")
    if drop_month < population.first_month:
        raise ValueError(
            f"drop date {drop_date} is before the population's first activity month "
            f"{population.first_month // 12}-{population.first_month % 12 + 1:02d}"
        )
    day = drop_date.day
    enrolled = (population.enrollment_month < drop_month) | (
        (population.enrollment_month == drop_month) & (population.enrollment_day <= day)
    )
    cancelled = (population.cancellation_month >= 0) & (
        (population.cancellation_month < drop_month)
        | ((population.cancellation_month == drop_month) & (population.cancellation_day <= day))
    )
    loyalty = population.attributes[enrolled].reset_index(drop=True)
    loyalty["Enrollment Year"] = population.enrollment_month[enrolled] // 12
    loyalty["Enrollment Month"] = population.enrollment_month[enrolled] % 12 + 1
    cancellation_month = np.where(cancelled, population.cancellation_month, -1)[enrolled]
    loyalty["Cancellation Year"] = pd.array(
        np.where(cancellation_month >= 0, cancellation_month // 12, np.nan), dtype="Int64"
    )
    loyalty["Cancellation Month"] = pd.array(
        np.where(cancellation_month >= 0, cancellation_month % 12 + 1, np.nan), dtype="Int64"
    )
    return loyalty[list(LOYALTY_HEADER)], _activity_as_of(population, enrolled, drop_month, day)


def _activity_as_of(population: Population, enrolled: np.ndarray, drop_month: int, day: int) -> pd.DataFrame:
    shown = drop_month - population.first_month + 1
    booked = population.booked[enrolled, :shown].copy()
    companions = population.companions[enrolled, :shown].copy()
    distance = population.distance[enrolled, :shown].copy()
    redeemed = population.points_redeemed[enrolled, :shown].copy()
    bonus = population.bonus_points[enrolled, :shown]
    days = int(_days_in_month(drop_month))
    full_total = booked[:, -1] + companions[:, -1]
    booked[:, -1] = booked[:, -1] * day // days
    companions[:, -1] = companions[:, -1] * day // days
    distance[:, -1] = distance[:, -1] * (booked[:, -1] + companions[:, -1]) // np.maximum(full_total, 1)
    redeemed[:, -1] = np.where(population.redeem_day[enrolled, shown - 1] <= day, redeemed[:, -1], 0)

    members = int(enrolled.sum())
    # Month-major rows: month block after month block, members by loyalty number inside a block.
    rows = {
        "Loyalty Number": np.tile(population.loyalty_numbers[enrolled], shown),
        "month": np.repeat(population.first_month + np.arange(shown), members),
        "booked": booked.T.ravel(),
        "companions": companions.T.ravel(),
        "distance": distance.T.ravel(),
        "bonus": bonus.T.ravel(),
        "redeemed": redeemed.T.ravel(),
    }
    rank = np.cumsum(enrolled) - 1
    included = enrolled[population.duplicate_member] & (population.duplicate_month < shown)
    source = population.duplicate_month[included] * members + rank[population.duplicate_member[included]]
    copies = {name: values[source] for name, values in rows.items()}
    conflict = population.duplicate_conflicts[included]
    ratio = population.duplicate_ratio[included]
    source_total = copies["booked"] + copies["companions"]
    conflict_kept = ~conflict | (source_total > 0)  # a partial copy needs flights to differ from its original
    copies["booked"] = np.where(conflict, np.floor(copies["booked"] * ratio), copies["booked"]).astype(np.int64)
    copies["companions"] = np.where(conflict, np.floor(copies["companions"] * ratio), copies["companions"]).astype(
        np.int64
    )
    copy_total = copies["booked"] + copies["companions"]
    copies["distance"] = np.where(
        conflict, copies["distance"] * copy_total // np.maximum(source_total, 1), copies["distance"]
    )
    copies = {name: values[conflict_kept] for name, values in copies.items()}

    anchor = np.concatenate([rows["Loyalty Number"], population.duplicate_anchor[included][conflict_kept]])
    combined = {name: np.concatenate([rows[name], copies[name]]) for name in rows}
    is_copy = np.concatenate([np.zeros(rows["month"].size, dtype=bool), np.ones(copies["month"].size, dtype=bool)])
    order = np.lexsort((is_copy, anchor, combined["month"]))
    combined = {name: values[order] for name, values in combined.items()}

    total = combined["booked"] + combined["companions"]
    activity = pd.DataFrame(
        {
            "Loyalty Number": combined["Loyalty Number"],
            "Year": combined["month"] // 12,
            "Month": combined["month"] % 12 + 1,
            "Flights Booked": combined["booked"],
            "Flights with Companions": combined["companions"],
            "Total Flights": total,
            "Distance": combined["distance"],
            "Points Accumulated": _points_hundredths(combined["distance"], combined["bonus"]) / 100.0,
            "Points Redeemed": combined["redeemed"],
            "Dollar Cost Points Redeemed": np.round(combined["redeemed"] * DOLLARS_PER_POINT).astype(np.int64),
        }
    )
    if population.config.activity_variant == "8-column":
        activity = activity.drop(columns=list(EIGHT_COLUMN_DROPPED))
    return activity


_HUNDREDTHS_SUFFIX = np.array([""] + [f".{k:02d}".rstrip("0") for k in range(1, 100)])


def _decimal_text(values: pd.Series) -> np.ndarray:
    """Non-negative numbers with at most two decimals as the originals write them: 152, 1390.5, 3839.14."""
    hundredths = np.round(values.to_numpy(dtype=float) * 100).astype(np.int64)
    if (hundredths < 0).any():
        raise ValueError(f"column {values.name!r} holds negative values; only non-negative decimals are formatted")
    whole, part = np.divmod(hundredths, 100)
    return np.strings.add(whole.astype(str), _HUNDREDTHS_SUFFIX[part])


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    """UTF-8 with BOM and CRLF line ends, nothing quoted, integers without decimals, empty for missing."""
    text_frame = frame.copy()
    for column in frame.columns:
        if pd.api.types.is_float_dtype(frame[column]):
            text_frame[column] = _decimal_text(frame[column])
    buffer = io.BytesIO()
    buffer.write("\ufeff".encode("utf-8"))
    options = pa_csv.WriteOptions(quoting_style="none", quoting_header="none", eol="\r\n")
    pa_csv.write_csv(pa.Table.from_pandas(text_frame, preserve_index=False), buffer, write_options=options)
    return buffer.getvalue()


def encode_drop_file(frame: pd.DataFrame, file_format: Literal["csv", "csv.gz", "parquet"]) -> bytes:
    """The bytes of one landing file (gzip with a zero timestamp, so output is byte-identical)."""
    if file_format == "csv":
        return _csv_bytes(frame)
    if file_format == "csv.gz":
        return gzip.compress(_csv_bytes(frame), compresslevel=6, mtime=0)
    if file_format == "parquet":
        return dataframe_to_parquet_bytes(frame)
    raise ValueError(f"unknown file format {file_format!r}: expected 'csv', 'csv.gz' or 'parquet'")


def drop_keys(drop_date: date, file_format: str) -> tuple[str, str]:
    """Landing keys ``(loyalty_history, flight_activity)`` of the drop dated ``drop_date``."""
    return (
        drop_file_key("loyalty_history", drop_date.isoformat(), f"{LOYALTY_FILE_STEM}.{file_format}"),
        drop_file_key("flight_activity", drop_date.isoformat(), f"{ACTIVITY_FILE_STEM}.{file_format}"),
    )


def write_drops(
    store: ObjectStore, drop_dates: list[date], config: SampleConfig, population: Population | None = None
) -> list[str]:
    """Write one full extract per date from ``population`` (default: simulated once up to the latest
    date), each data file followed by its folder's ``_manifest.json`` as upstream exporters write it;
    the data keys."""
    if not drop_dates:
        raise ValueError("write_drops needs at least one drop date")
    dates = sorted(set(drop_dates))
    population = population or simulate_population(config, dates[-1])
    if dates[-1] > population.last_drop_date:
        raise ValueError(f"the population ends on {population.last_drop_date}, before the drop {dates[-1]}")
    keys: list[str] = []
    for drop_date in dates:
        loyalty, activity = extract_as_of(population, drop_date)
        for key, frame in zip(drop_keys(drop_date, config.file_format), (loyalty, activity)):
            data = encode_drop_file(frame, config.file_format)
            folder, name = key.rsplit("/", 1)
            store.put_bytes(key, data)
            store.put_bytes(manifest_key(folder), manifest_bytes({name: (data, len(frame))}))
            keys.append(key)
    return keys


def default_drop_dates(end: date, days: int = 7) -> list[date]:
    """The ``days`` consecutive dates ending on ``end``, oldest first."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    return [end - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
