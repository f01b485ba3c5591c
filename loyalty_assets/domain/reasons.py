"""Plain-language churn reasons: each feature's wording, the population's usual values, one reason's text.

A reason compares the member's value of a feature with its usual value (the reference median, or the
most common category of a categorical feature): "flights in the last 3 months: 0, below the usual 4".
Only a value outside the usual range (the reference's interquartile range; any other category) can
be a reason: a member in the middle half of the population is not unusual in that feature.
Wording is keyed by feature name; a feature without an entry (e.g. one added to the registry later)
gets a label derived from its name ("flights_24m" -> "flights in the last 24 months").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from loyalty_assets.domain.features import LOYALTY_CARD_TIERS

NO_SINGLE_REASON = "no single feature stands out: the risk comes from the combination"
_YES_NO = {0.0: "no", 1.0: "yes"}


@dataclass(frozen=True)
class FeatureWording:
    """How a feature reads in a reason: ``label``, then the value with ``decimals``, ``unit`` (or as a
    percentage when ``percent``), or the category name from ``categories`` (code -> name)."""

    label: str
    unit: str = ""
    decimals: int = 0
    percent: bool = False
    categories: Mapping[float, str] | None = None

    def format(self, value: float) -> str:
        if pd.isna(value):
            return "none recorded"
        if self.categories is not None:
            return self.categories.get(float(value), f"code {value:g}")
        if self.percent:
            return f"{value:.0%}"
        number = f"{value:,.{self.decimals}f}"
        return f"{number} {self.unit}" if self.unit else number


FEATURE_WORDING: dict[str, FeatureWording] = {
    "flights_3m": FeatureWording("flights in the last 3 months"),
    "flights_6m": FeatureWording("flights in the last 6 months"),
    "flights_12m": FeatureWording("flights in the last 12 months"),
    "distance_3m": FeatureWording("distance flown in the last 3 months", "km"),
    "distance_12m": FeatureWording("distance flown in the last 12 months", "km"),
    "points_accumulated_12m": FeatureWording("points earned in the last 12 months", "points"),
    "points_redeemed_3m": FeatureWording("points redeemed in the last 3 months", "points"),
    "points_redeemed_12m": FeatureWording("points redeemed in the last 12 months", "points"),
    "months_since_last_flight": FeatureWording("months since the last flight", "months"),
    "active_months_12m": FeatureWording("months with a flight, of the last 12", "months"),
    "flights_mom_change": FeatureWording("change in flights from the month before"),
    "flights_3m_minus_prior_3m": FeatureWording("flights in the last 3 months minus the 3 months before"),
    "flights_slope_6m": FeatureWording("6-month trend of monthly flights", "flights per month", decimals=1),
    "flights_cv_12m": FeatureWording("month-to-month swing of flights (coefficient of variation)", decimals=2),
    "redeemed_to_accumulated_12m": FeatureWording("points redeemed per point earned, last 12 months", decimals=2),
    "dollar_cost_per_redeemed_point_12m": FeatureWording("value per redeemed point", "CAD", decimals=3),
    "distance_per_flight_12m": FeatureWording("km per flight, last 12 months", "km"),
    "companion_share_12m": FeatureWording("share of flights with companions", percent=True),
    "tenure_months": FeatureWording("membership tenure", "months"),
    "loyalty_card_tier": FeatureWording(
        "loyalty card", categories={float(code): name.title() for name, code in LOYALTY_CARD_TIERS.items()}
    ),
    "promotion_enrollment": FeatureWording("enrolled through the 2018 promotion", categories=_YES_NO),
}


def feature_wording(name: str) -> FeatureWording:
    """The wording of ``name``; for a name without an entry, a label derived from the name."""
    if name in FEATURE_WORDING:
        return FEATURE_WORDING[name]
    stem, window = re.fullmatch(r"(.*?)(?:_(\d+)m)?", name.removesuffix("_code")).groups()
    label = stem.replace("_", " ")
    return FeatureWording(f"{label} in the last {window} months" if window else label, decimals=1)


def reason_text(name: str, value: float, usual: float, categorical: bool = False) -> str:
    """``"<label>: <value>, above|below the usual <usual>"``; a category or a missing value reads
    ``"<label>: <value> (usual: <usual>)"``."""
    wording = feature_wording(name)
    shown, usual_shown = wording.format(value), wording.format(usual)
    if categorical or wording.categories is not None or pd.isna(value):
        return f"{wording.label}: {shown} (usual: {usual_shown})"
    direction = "above" if value > usual else "below"
    return f"{wording.label}: {shown}, {direction} the usual {usual_shown}"


UsualValues = dict[str, dict[str, float]]
USUAL_QUANTILES = {"low": 0.25, "usual": 0.5, "high": 0.75}


def usual_values(
    features: pd.DataFrame, feature_columns: Sequence[str], categorical_columns: Sequence[str] = ()
) -> UsualValues:
    """Per feature the reference population's usual range, ``{"low", "usual", "high"}``: the quartiles
    and the median of the present values; for ``categorical_columns`` all three are the most common
    category. NaN when a column has no value at all. JSON-serialisable."""
    usual = {}
    for column in feature_columns:
        present = features[column].dropna().astype(float)
        if present.empty:
            values = dict.fromkeys(USUAL_QUANTILES, float("nan"))
        elif column in categorical_columns:
            values = dict.fromkeys(USUAL_QUANTILES, float(present.mode().iloc[0]))
        else:
            values = {name: float(present.quantile(q)) for name, q in USUAL_QUANTILES.items()}
        usual[column] = values
    return usual


def usual_values_from_drift_reference(reference: dict) -> UsualValues:
    """``usual_values`` of a model stored before they were, from its ``drift.build_reference`` dict:
    per numeric feature the decile edge where the cumulative share of present values reaches each
    quartile, per categorical feature the most common category."""
    usual = {}
    for column, spec in reference["numeric"].items():
        edges = np.asarray(spec["edges"], dtype=float)
        present_share = 1.0 - spec["missing_share"]
        if edges.size == 0 or present_share <= 0:
            usual[column] = dict.fromkeys(USUAL_QUANTILES, float("nan"))
            continue
        cumulative = np.cumsum(spec["shares"][: edges.size]) / present_share
        usual[column] = {
            name: float(edges[min(int(np.searchsorted(cumulative, q)), edges.size - 1)])
            for name, q in USUAL_QUANTILES.items()
        }
    for column, spec in reference["categorical"].items():
        shares = pd.Series(spec["shares"], dtype=float)
        shares.index = pd.to_numeric(shares.index, errors="coerce")  # the missing-value label is no code
        shares = shares[shares.index.notna()]
        usual[column] = dict.fromkeys(USUAL_QUANTILES, float(shares.idxmax()) if len(shares) else float("nan"))
    return usual
