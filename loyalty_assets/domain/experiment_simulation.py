"""Closed-loop retention experiments on simulated members: planted effects and their true size.

A treated member (``experiment_arm == "treatment"``) of a tier with a planted effect has its
monthly cancellation hazard multiplied by that tier's factor from the month after its first list
on. Because the simulation draws the same uniforms whatever the hazard, the members' outcomes with
and without the action are both known, so the true risk reduction of each (action, tier) cell is
exact for the very members of the cell, and the estimate of ``retention_experiment_results`` can be
held against it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from loyalty_assets.domain.experiments import TREATMENT
from loyalty_assets.domain.sample_data import HazardTreatment, Population, month_index


def _positions(population: Population, loyalty_numbers: pd.Series) -> np.ndarray:
    positions = pd.Series(np.arange(len(population.loyalty_numbers)), index=population.loyalty_numbers)
    return positions.reindex(loyalty_numbers.to_numpy()).to_numpy()


def hazard_treatment(
    population: Population, assignments: pd.DataFrame, effects_by_tier: Mapping[str, float], everyone: bool = False
) -> HazardTreatment:
    """The planted effects for the first assignments of each member (the treated arm only, or every
    member of the cell with ``everyone`` for the counterfactual)."""
    acted = assignments[assignments["risk_tier"].astype(str).isin(list(effects_by_tier))]
    if not everyone:
        acted = acted[acted["experiment_arm"] == TREATMENT]
    acted = acted.sort_values("week").drop_duplicates("loyalty_number")
    week_month = np.array([month_index(pd.Timestamp(week).date()) for week in acted["week"]], dtype=np.int64)
    return HazardTreatment(
        positions=_positions(population, acted["loyalty_number"]),
        from_month=week_month + 1,
        factor=acted["risk_tier"].astype(str).map(dict(effects_by_tier)).to_numpy(dtype=float),
    )


def churned_within(population: Population, assignments: pd.DataFrame, horizon: int) -> np.ndarray:
    """1 where the member cancels in the ``horizon`` months after the list's snapshot month."""
    snapshot = np.array([month_index(pd.Timestamp(month).date()) for month in assignments["snapshot_month"]])
    cancelled = population.cancellation_month[_positions(population, assignments["loyalty_number"])]
    return ((cancelled > snapshot) & (cancelled <= snapshot + horizon)).astype(int)


def true_risk_reductions(
    untreated: Population, all_treated: Population, assignments: pd.DataFrame, horizon: int
) -> pd.DataFrame:
    """Per experiment, action and tier: the mean of (churn without the action - churn with it) over
    the cell's members, from the two counterfactual populations."""
    effect = churned_within(untreated, assignments, horizon) - churned_within(all_treated, assignments, horizon)
    cells = assignments.assign(true_risk_reduction=effect)
    return (
        cells.groupby(["experiment_id", "assigned_action", "risk_tier"], observed=True)["true_risk_reduction"]
        .mean()
        .reset_index()
        .rename(columns={"assigned_action": "action"})
        .astype({"risk_tier": str})
    )
