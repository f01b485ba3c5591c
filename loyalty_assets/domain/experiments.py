"""Retention experiments: hold-out assignment in every weekly list, and realised uplift per action.

**Assignment.** An experiment runs for a calendar quarter (``experiment_id`` ``retention-2026Q4``).
A member's arm is a deterministic hash of ``(experiment_id, loyalty_number)``:

    u = int.from_bytes(sha256(f"{experiment_id}:{loyalty_number}".encode()).digest()[:8], "big") / 2**64
    arm = "control" if u < control_share(risk_tier) else "treatment"

so it is stable across re-runs and backfills of a week, stable for a member across the weeks of one
experiment, and recomputable by an analyst in any language. Within every (tier x segment x action)
cell the control share is the tier's configured share in expectation; the sample-ratio check says
when a cell drifts from it by more than binomial noise.

**Outcome.** The unit of analysis is a member's first list of the experiment (its tier and action
then). Its outcome is whether the member cancels within the label horizon after that week's
snapshot month; only weeks whose horizon is complete in the latest accepted drop count. For each
experiment, action and tier: realised churn per arm, the absolute risk reduction (control minus
treated) with Newcombe's hybrid score interval, the relative reduction, the number needed to treat
and the minimum detectable effect at the current sample size (two-sided 5 %, power 0.8).

scipy has the normal quantiles and the binomial test; no well-kept library has Newcombe's interval
for a difference of proportions (statsmodels is not a dependency), so it is written here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy import stats

TREATMENT, CONTROL = "treatment", "control"
HOLD_OUT_ACTION = "Hold out: no intervention (retention experiment control group)"
DEFAULT_CONTROL_SHARES = {"Low": 0.0, "Medium": 0.10, "High": 0.10, "Critical": 0.10}
CELL = ["risk_tier", "segment", "assigned_action"]
EXPERIMENT_COLUMNS = ["experiment_id", "experiment_arm", "assigned_action", "control_share"]
SRM_ALPHA = 0.001


def experiment_id(week: date | str) -> str:
    """The experiment a week belongs to: one per calendar quarter, ``retention-YYYYQn``."""
    day = date.fromisoformat(week) if isinstance(week, str) else week
    return f"retention-{day.year}Q{(day.month - 1) // 3 + 1}"


def assignment_unit(experiment: str, loyalty_number: int) -> float:
    """The member's uniform draw in [0, 1) for ``experiment`` (see the module docstring)."""
    digest = hashlib.sha256(f"{experiment}:{int(loyalty_number)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_arms(loyalty_numbers, control_shares, experiment: str) -> np.ndarray:
    """``"control"`` or ``"treatment"`` per member, given each member's cell control share."""
    shares = np.asarray(control_shares, dtype=float)
    if ((shares < 0) | (shares >= 1)).any():
        raise ValueError(f"control shares must be in [0, 1), got {sorted(set(shares.tolist()))}")
    units = np.fromiter((assignment_unit(experiment, number) for number in loyalty_numbers), dtype=float)
    return np.where(units < shares, CONTROL, TREATMENT)


def cell_control_shares(
    action_table: pd.DataFrame, defaults: Mapping[str, float] = DEFAULT_CONTROL_SHARES
) -> pd.Series:
    """Control share per (segment, risk_tier): the rule table's ``control_share`` where it has one,
    else the tier's default."""
    by_tier = action_table["risk_tier"].map(dict(defaults)).fillna(0.0).astype(float)
    if "control_share" in action_table.columns:
        given = action_table["control_share"]
        override = pd.to_numeric(given.where(given != ""), errors="raise")
        by_tier = override.fillna(by_tier)
    return pd.Series(by_tier.to_numpy(), index=pd.MultiIndex.from_frame(action_table[["segment", "risk_tier"]]))


def assign_experiment(predictions: pd.DataFrame, shares: pd.Series, experiment: str) -> pd.DataFrame:
    """The week's rows with ``experiment_id``, ``experiment_arm``, ``assigned_action`` (the cell's
    action) and the cell's ``control_share``; control members keep risk, tier and segment and get
    the hold-out action."""
    cells = pd.MultiIndex.from_arrays([predictions["segment"].astype(object), predictions["risk_tier"].astype(object)])
    member_shares = shares.reindex(cells).to_numpy()
    if np.isnan(member_shares).any():
        raise ValueError("some (segment, risk_tier) cells have no control share in the action table")
    arms = assign_arms(predictions["loyalty_number"], member_shares, experiment)
    return predictions.assign(
        experiment_id=experiment,
        experiment_arm=arms,
        assigned_action=predictions["recommended_action"],
        control_share=member_shares,
        recommended_action=np.where(arms == CONTROL, HOLD_OUT_ACTION, predictions["recommended_action"]),
    )


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (0..1); (nan, nan) without trials."""
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return centre - half, centre + half


def newcombe_difference(
    control_events: int, control_n: int, treated_events: int, treated_n: int
) -> tuple[float, float, float]:
    """Risk reduction ``p_control - p_treated`` and its 95 % Newcombe hybrid score interval."""
    if control_n == 0 or treated_n == 0:
        return math.nan, math.nan, math.nan
    p_c, p_t = control_events / control_n, treated_events / treated_n
    low_c, high_c = wilson_interval(control_events, control_n)
    low_t, high_t = wilson_interval(treated_events, treated_n)
    difference = p_c - p_t
    lower = difference - math.sqrt((p_c - low_c) ** 2 + (high_t - p_t) ** 2)
    upper = difference + math.sqrt((high_c - p_c) ** 2 + (p_t - low_t) ** 2)
    return difference, lower, upper


def minimum_detectable_effect(base_rate: float, control_n: int, treated_n: int, power: float = 0.8) -> float:
    """Smallest risk reduction a two-sided 5 % test detects with ``power`` at these group sizes."""
    if control_n == 0 or treated_n == 0 or not 0 < base_rate < 1:
        return math.nan
    z = stats.norm.ppf(0.975) + stats.norm.ppf(power)
    return float(z * math.sqrt(base_rate * (1 - base_rate) * (1 / control_n + 1 / treated_n)))


def first_assignments(scored_weeks: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, member): the member's first list of the experiment."""
    required = {"loyalty_number", "week", "snapshot_month", "experiment_id", "experiment_arm", "risk_tier"}
    missing = required - set(scored_weeks.columns)
    if missing:
        raise ValueError(f"scored weeks lack the columns {sorted(missing)}")
    ordered = scored_weeks.sort_values(["experiment_id", "loyalty_number", "week"], kind="stable")
    return ordered.drop_duplicates(["experiment_id", "loyalty_number"], keep="first").reset_index(drop=True)


def matured_outcomes(
    assignments: pd.DataFrame, cancellation_month: pd.Series, last_complete_month: pd.Timestamp, horizon: int
) -> pd.DataFrame:
    """Assignments whose horizon is complete by ``last_complete_month``, with ``churned`` (0/1).

    ``cancellation_month`` maps loyalty number -> first day of the cancellation month (NaT when the
    member has not cancelled), from the latest accepted drop.
    """
    snapshot = pd.to_datetime(assignments["snapshot_month"]).dt.to_period("M").dt.to_timestamp()
    horizon_end = snapshot + pd.DateOffset(months=horizon)
    matured = assignments.loc[horizon_end <= last_complete_month].copy()
    cancelled = pd.to_datetime(matured["loyalty_number"].map(cancellation_month))
    start = snapshot.loc[matured.index]
    matured["churned"] = ((cancelled > start) & (cancelled <= horizon_end.loc[matured.index])).astype(int)
    return matured


RESULT_COLUMNS = [
    "experiment_id", "action", "risk_tier", "members_treated", "members_held_out", "churn_treated",
    "churn_held_out", "risk_reduction", "risk_reduction_low", "risk_reduction_high",
    "relative_reduction", "number_needed_to_treat", "minimum_detectable_effect",
]  # fmt: skip


def uplift_table(outcomes: pd.DataFrame, power: float = 0.8) -> pd.DataFrame:
    """Per experiment, action and tier: arms, realised churn, risk reduction with its interval,
    relative reduction, number needed to treat and the minimum detectable effect."""
    rows = []
    for (experiment, action, tier), group in outcomes.groupby(
        ["experiment_id", "assigned_action", "risk_tier"], observed=True, sort=True
    ):
        control = group.loc[group["experiment_arm"] == CONTROL, "churned"]
        treated = group.loc[group["experiment_arm"] == TREATMENT, "churned"]
        reduction, low, high = newcombe_difference(int(control.sum()), len(control), int(treated.sum()), len(treated))
        churn_control = control.mean() if len(control) else math.nan
        rows.append(
            {
                "experiment_id": experiment,
                "action": action,
                "risk_tier": str(tier),
                "members_treated": len(treated),
                "members_held_out": len(control),
                "churn_treated": treated.mean() if len(treated) else math.nan,
                "churn_held_out": churn_control,
                "risk_reduction": reduction,
                "risk_reduction_low": low,
                "risk_reduction_high": high,
                "relative_reduction": reduction / churn_control if churn_control else math.nan,
                "number_needed_to_treat": 1 / reduction if reduction and reduction > 0 else math.nan,
                "minimum_detectable_effect": minimum_detectable_effect(
                    float(group["churned"].mean()), len(control), len(treated), power
                ),
            }
        )
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def sample_ratio_mismatches(assignments: pd.DataFrame, alpha: float = SRM_ALPHA) -> pd.DataFrame:
    """Cells whose control count differs from their configured ``control_share`` beyond binomial
    noise (two-sided exact binomial test, p < ``alpha``)."""
    rows = []
    for keys, group in assignments.groupby(["experiment_id", *CELL], observed=True, sort=True):
        share = float(group["control_share"].mean())
        held_out = int((group["experiment_arm"] == CONTROL).sum())
        if share == 0.0:
            p_value = 1.0 if held_out == 0 else 0.0
        else:
            p_value = float(stats.binomtest(held_out, len(group), share).pvalue)
        if p_value < alpha:
            rows.append(dict(zip(["experiment_id", *CELL], keys)) | {"members": len(group), "held_out": held_out,
                                                                      "expected_share": share, "p_value": p_value})
    return pd.DataFrame(rows, columns=["experiment_id", *CELL, "members", "held_out", "expected_share", "p_value"])


def format_uplift_line(row: Mapping) -> str:
    """One line for the marketing e-mail, e.g.
    ``Offer X (Critical): churn 2.1% treated vs 3.4% held out, -1.3 pp [-2.2, -0.4]``."""
    change = -100 * row["risk_reduction"]
    low, high = -100 * row["risk_reduction_high"], -100 * row["risk_reduction_low"]
    return (
        f"{row['action']} ({row['risk_tier']}): churn {100 * row['churn_treated']:.1f}% treated vs "
        f"{100 * row['churn_held_out']:.1f}% held out, {change:+.1f} pp [{low:+.1f}, {high:+.1f}]"
    )


def uplift_lines(results: pd.DataFrame) -> list[str]:
    """The e-mail lines of the measured actions (those with held-out members)."""
    measured = results.dropna(subset=["risk_reduction"])
    return [format_uplift_line(row) for row in measured.to_dict("records")]


@dataclass(frozen=True)
class ExperimentMeasurement:
    assignments: pd.DataFrame  # each member's first list per experiment
    outcomes: pd.DataFrame  # the assignments whose horizon has matured, with ``churned``
    results: pd.DataFrame  # ``uplift_table`` of the outcomes


def measure_experiments(
    scored_weeks: pd.DataFrame, loyalty: pd.DataFrame, drop_date: date, horizon: int
) -> ExperimentMeasurement:
    """Uplift from every scored week, with outcomes read from the loyalty history of the drop dated
    ``drop_date`` (its last complete month is the month before the drop's month)."""
    assignments = first_assignments(scored_weeks)
    cancelled = loyalty.dropna(subset=["cancellation_year", "cancellation_month"])
    cancellation_month = pd.Series(
        pd.to_datetime(
            {"year": cancelled["cancellation_year"], "month": cancelled["cancellation_month"], "day": 1}
        ).to_numpy(),
        index=cancelled["loyalty_number"].to_numpy(),
    )
    last_complete = pd.Timestamp(drop_date).to_period("M").to_timestamp() - pd.DateOffset(months=1)
    outcomes = matured_outcomes(assignments, cancellation_month, last_complete, horizon)
    return ExperimentMeasurement(assignments, outcomes, uplift_table(outcomes))
