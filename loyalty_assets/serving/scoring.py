"""One member scored online: the request body, its checks, and the same domain code as the batch.

Features come from ``features.member_features`` (the formulas of ``build_features``). The row is
the one-member fast path's (``one_member.MemberScorer``, checked against the batch when the
champions load); without it, segments come from ``segmentation.assign_segments`` and risk, tier,
action and reasons from the champion's ``ChurnScorer``, the object the weekly
``churn_predictions`` asset scores with.

The history is the 24 months ending at ``as_of`` (the data contract's span): months the body does
not list count as zero, as in a drop, where every member has a row per month.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loyalty_assets.domain.features import (
    ACTIVITY_COLUMNS_USED,
    LOYALTY_COLUMNS_USED,
    member_features,
)
from loyalty_assets.domain.segmentation import assign_segments
from loyalty_assets.serving.champions import Champions
from loyalty_assets.serving.one_member import current_week, feature_frame

HISTORY_MONTHS = 24
Count = Annotated[int, Field(ge=0, le=10_000)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class MonthlyActivity(BaseModel):
    """One row of the flight-activity file (columns in snake_case)."""

    model_config = ConfigDict(extra="forbid")

    year: int = Field(ge=1900, le=2200)
    month: int = Field(ge=1, le=12)
    flights_booked: Count | None = None
    flights_with_companions: Count | None = None
    total_flights: Count
    distance: Amount
    points_accumulated: Amount
    points_redeemed: Amount
    dollar_cost_points_redeemed: Amount


class ScoreRequest(BaseModel):
    """One member's row of the loyalty-history file, their monthly activity and the month to score."""

    model_config = ConfigDict(extra="forbid")

    loyalty_number: int = Field(gt=0)
    as_of: date = Field(description="the last complete month, YYYY-MM (or its first day)")
    week: date | None = Field(
        default=None, description="the scoring week's Monday, which decides the experiment arm (default: this week)"
    )
    country: str | None = None
    province: str | None = None
    city: str | None = None
    postal_code: str | None = None
    gender: str | None = None
    education: str | None = None
    salary: float | None = Field(default=None, allow_inf_nan=False)
    marital_status: str | None = None
    loyalty_card: str = Field(min_length=1, max_length=64)
    clv: float | None = Field(default=None, allow_inf_nan=False)
    enrollment_type: str = Field(min_length=1, max_length=64)
    enrollment_year: int = Field(ge=1900, le=2200)
    enrollment_month: int = Field(ge=1, le=12)
    cancellation_year: int | None = Field(default=None, ge=1900, le=2200)
    cancellation_month: int | None = Field(default=None, ge=1, le=12)
    activity: list[MonthlyActivity] = Field(max_length=HISTORY_MONTHS)

    @field_validator("as_of", mode="before")
    @classmethod
    def _month(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value) == 7:
            return f"{value}-01"
        return value

    @field_validator("as_of")
    @classmethod
    def _first_day(cls, value: date) -> date:
        if value.day != 1:
            raise ValueError("give a month, YYYY-MM")
        return value

    @field_validator("week")
    @classmethod
    def _monday(cls, value: date | None) -> date | None:
        if value is not None and value.weekday() != 0:
            raise ValueError("give the week's Monday, YYYY-MM-DD")
        return value


def _months_before(month: date, count: int) -> date:
    total = month.year * 12 + month.month - 1 - count
    return date(total // 12, total % 12 + 1, 1)


def field_errors(request: ScoreRequest) -> list[dict[str, Any]]:
    """What the schema cannot say alone, each with the location of the field at fault."""
    errors = []

    def error(location: tuple, message: str) -> None:
        errors.append({"loc": ["body", *location], "msg": message, "type": "value_error"})

    if (request.cancellation_year is None) != (request.cancellation_month is None):
        error(("cancellation_month",), "cancellation_year and cancellation_month are both set or both empty")
    first = _months_before(request.as_of, HISTORY_MONTHS - 1)
    seen: set[tuple[int, int]] = set()
    for position, row in enumerate(request.activity):
        month = date(row.year, row.month, 1)
        if not first <= month <= request.as_of:
            window = f"{first:%Y-%m}..{request.as_of:%Y-%m}"
            error(("activity", position, "month"), f"{month:%Y-%m} is outside the history {window}")
        if (row.year, row.month) in seen:
            error(("activity", position, "month"), f"{month:%Y-%m} appears twice")
        seen.add((row.year, row.month))
        if row.flights_booked is not None and row.flights_with_companions is not None:
            if row.total_flights != row.flights_booked + row.flights_with_companions:
                error(("activity", position, "total_flights"), "must equal flights_booked + flights_with_companions")
    return errors


def request_features(request: ScoreRequest) -> np.ndarray:
    """The member's ``MODEL_FEATURES`` at ``request.as_of`` (ValueError if not eligible)."""
    loyalty = {name: getattr(request, name) for name in LOYALTY_COLUMNS_USED}
    activity = {
        name: [getattr(row, name) for row in request.activity]
        for name in ACTIVITY_COLUMNS_USED
        if name != "loyalty_number"
    }
    history_start = _months_before(request.as_of, HISTORY_MONTHS - 1)
    return member_features(loyalty, activity, request.as_of, history_start=history_start)


def score_request(champions: Champions, request: ScoreRequest) -> dict[str, Any]:
    """The member's ``churn_predictions`` row as of ``request.as_of`` (ValueError if not eligible)."""
    values = request_features(request)
    week = request.week.isoformat() if request.week else current_week()
    if champions.member_scorer is not None:
        return champions.member_scorer.score(request.loyalty_number, request.as_of, values, week)
    features = feature_frame(request.loyalty_number, request.as_of, values)
    segments = assign_segments(champions.segmentation, features)
    row = champions.scorer.score(features, segments, week, champions.segmentation_version).iloc[0]
    return row.to_dict()
