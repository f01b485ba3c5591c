"""``loyalty-assets simulate-experiment``: a closed retention-experiment loop through the real pipeline.

Simulated members are scored week after week by the real jobs; the hold-outs the pipeline writes
decide who gets a planted effect in the later drops; once the outcome horizon has matured, the
monthly ``retention_experiment_results`` asset measures the uplift, shown beside the true effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from loyalty_assets.domain.experiment_simulation import hazard_treatment, true_risk_reductions
from loyalty_assets.domain.experiments import first_assignments
from loyalty_assets.domain.periods import previous_month, previous_quarter, week_start
from loyalty_assets.domain.sample_data import SampleConfig, simulate_population, write_drops
from loyalty_assets.runner import (
    QUIET_CONSOLE,
    RunFailed,
    demo_drop_dates,
    execute_job,
    failure_summary,
    instance_for,
    job_run_config,
)
from loyalty_assets.settings import Settings

RESULTS_ASSET = "retention_experiment_results"


@dataclass(frozen=True)
class SimulationPlan:
    customers: int = 8000
    weeks: int = 2
    horizon_months: int = 3
    # Planted hazard factors per risk tier: 1.0 is an action without effect.
    effects: Mapping[str, float] = field(default_factory=lambda: {"Medium": 1.0, "High": 0.6, "Critical": 0.3})
    control_share: float = 0.5
    seed: int = 11

    def __post_init__(self) -> None:
        if self.customers < 500 or self.weeks < 1:
            raise ValueError("a simulation needs at least 500 customers and one week")
        if not 0 < self.control_share < 1:
            raise ValueError(f"control_share must be in (0, 1), got {self.control_share}")


def simulation_calendar(today: date, weeks: int, horizon_months: int) -> tuple[list[date], date]:
    """The scored Mondays and the outcome drop (the last day of the previous month, the newest month
    with a monthly partition): the newest week lies ``horizon_months`` months before it, so every
    week's outcome has matured in that drop."""
    outcome_drop = today.replace(day=1) - timedelta(days=1)
    month = pd.Timestamp(outcome_drop) - pd.DateOffset(months=horizon_months)
    month_end = (month + pd.offsets.MonthEnd(0)).date()
    last_monday = week_start(month_end)
    return [last_monday - timedelta(weeks=back) for back in range(weeks - 1, -1, -1)], outcome_drop


@dataclass(frozen=True)
class SimulationResult:
    uplift: pd.DataFrame  # retention_experiment_results with the true risk reduction per cell
    assignments: pd.DataFrame  # each member's first list of the experiment
    checks_passed: dict[str, bool]  # the results' asset checks


def simulate_experiment(
    settings: Settings, plan: SimulationPlan, echo: Callable[[str], None], today: date | None = None
) -> SimulationResult:
    """Run the loop in the environment of ``settings`` (e.g. the landing and lake of ``LOYALTY_HOME``)."""
    from loyalty_assets.definitions import build_defs
    from loyalty_assets.runner import store_for_uri

    defs = build_defs(settings)
    instance = instance_for(settings)
    landing = store_for_uri(settings.landing_uri, settings)
    weeks, outcome_drop = simulation_calendar(today or date.today(), plan.weeks, plan.horizon_months)
    # 24 months of history before the first drop, as a real extract would carry.
    first_drop = min(demo_drop_dates(weeks[0]))
    months_after = (outcome_drop.year - first_drop.year) * 12 + outcome_drop.month - first_drop.month
    config = SampleConfig(customers=plan.customers, history_months=24 + months_after, seed=plan.seed)
    shares = {tier: plan.control_share for tier in plan.effects}
    scoring = {"ops": {"churn_predictions": {"config": {"control_shares": shares}}}}
    untreated = simulate_population(config, outcome_drop)
    assignments = pd.DataFrame()

    def population():
        if assignments.empty:
            return untreated
        return simulate_population(config, outcome_drop, hazard_treatment(untreated, assignments, plan.effects))

    for position, week in enumerate(weeks):
        drops = demo_drop_dates(week) if position == 0 else [week]
        write_drops(landing, drops, config, population())
        for drop in drops:
            execute_job(defs, instance, "daily_ingest_job", drop.isoformat())
        if position == 0:
            execute_job(defs, instance, "quarterly_segmentation_job", previous_quarter(week).isoformat())
            training = "monthly_churn_training_job"
            execute_job(defs, instance, training, previous_month(week).isoformat(), job_run_config(settings, training))
        execute_job(defs, instance, "weekly_scoring_job", week.isoformat(), scoring)
        scored = defs.load_asset_value("churn_predictions", partition_key=week.isoformat(), instance=instance)
        assignments = first_assignments(pd.concat([assignments, scored], ignore_index=True))
        held_out = int((scored["experiment_arm"] == "control").sum())
        echo(f"week {week}: {len(scored)} members scored, {held_out} held out")

    write_drops(landing, [outcome_drop], config, population())
    execute_job(defs, instance, "daily_ingest_job", outcome_drop.isoformat())
    month = outcome_drop.replace(day=1).isoformat()
    result = dg.materialize(
        list(defs.assets),
        selection=[RESULTS_ASSET],
        partition_key=month,
        instance=instance,
        resources=defs.resources,
        run_config={**QUIET_CONSOLE, "ops": {RESULTS_ASSET: {"config": {"horizon_months": plan.horizon_months}}}},
        raise_on_error=False,
    )
    if not result.success:
        raise RunFailed(f"{RESULTS_ASSET} [{month}] failed (run {result.run_id}):\n{failure_summary(result)}")
    measured = result.output_for_node(RESULTS_ASSET)
    all_treated = simulate_population(
        config, outcome_drop, hazard_treatment(untreated, assignments, plan.effects, everyone=True)
    )
    truth = true_risk_reductions(untreated, all_treated, assignments, plan.horizon_months)
    return SimulationResult(
        uplift=measured.merge(truth, on=["experiment_id", "action", "risk_tier"], how="left"),
        assignments=assignments,
        checks_passed={check.check_name: check.passed for check in result.get_asset_check_evaluations()},
    )

