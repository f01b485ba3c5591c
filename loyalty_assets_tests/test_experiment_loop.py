"""The closed retention-experiment loop through the real pipeline: hold-outs the pipeline wrote decide
who gets a planted effect in later drops, and the monthly results recover it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from loyalty_assets.domain.experiments import CONTROL, HOLD_OUT_ACTION, assignment_unit
from loyalty_assets.settings import load_settings
from loyalty_assets.simulation import SimulationPlan, simulate_experiment, simulation_calendar
from loyalty_assets_tests.dagster_helpers import project_home

TODAY = date(2026, 12, 3)
PLAN = SimulationPlan(customers=8000, weeks=2, effects={"Medium": 1.0, "High": 0.6, "Critical": 0.0})


def test_calendar_puts_every_week_before_a_matured_outcome() -> None:
    weeks, outcome = simulation_calendar(TODAY, weeks=3, horizon_months=3)
    assert outcome == date(2026, 11, 30)
    assert weeks == [date(2026, 8, 17), date(2026, 8, 24), date(2026, 8, 31)]
    assert all(week.weekday() == 0 for week in weeks)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("experiment_loop")
    with project_home(home):
        yield home, simulate_experiment(load_settings(), PLAN, echo=lambda line: None, today=TODAY)


def test_arms_are_the_documented_hash_and_hold_outs_get_no_action(loop) -> None:
    home, result = loop
    assignments = result.assignments
    recomputed = [
        CONTROL if assignment_unit(experiment, number) < share else "treatment"
        for experiment, number, share in zip(
            assignments["experiment_id"], assignments["loyalty_number"], assignments["control_share"]
        )
    ]
    assert recomputed == assignments["experiment_arm"].tolist()
    held_out = assignments["experiment_arm"] == CONTROL
    assert (assignments.loc[held_out, "recommended_action"] == HOLD_OUT_ACTION).all()
    week = assignments["week"].max()
    crm_file = Path(home) / "appflow" / "churn_scores" / f"week={week}" / "churn_scores.csv"
    crm = pd.read_csv(crm_file, keep_default_na=False)
    assert (crm.loc[crm["experiment_arm"] == CONTROL, "recommended_action"] == "").all()
    assert (crm.loc[crm["experiment_arm"] != CONTROL, "recommended_action"] != "").all()


def test_results_recover_the_planted_effects(loop) -> None:
    _, result = loop
    uplift = result.uplift
    measured = uplift[uplift["members_held_out"] > 0]
    assert set(measured["risk_tier"]) == {"Medium", "High", "Critical"}
    # Every first assignment of a matured week is counted once, in its arm.
    assert int(uplift["members_treated"].sum() + uplift["members_held_out"].sum()) == len(result.assignments)
    covered = (measured["risk_reduction_low"] <= measured["true_risk_reduction"]) & (
        measured["true_risk_reduction"] <= measured["risk_reduction_high"]
    )
    assert covered.mean() >= 0.8, measured.to_string()
    # The planted effects are real: Critical actions (factor 0) prevent churn; Medium ones do nothing.
    assert (measured.loc[measured["risk_tier"] == "Critical", "true_risk_reduction"] > 0).all()
    no_effect = measured[measured["risk_tier"] == "Medium"]
    assert (no_effect["true_risk_reduction"] == 0).all()
    assert (no_effect["risk_reduction_low"] <= 0).all(), "an action without effect was called effective"


def test_sample_ratio_check_stays_quiet(loop) -> None:
    _, result = loop
    assert result.checks_passed["sample_ratio"] is True
    assert result.checks_passed["no_harmful_action"] is True
