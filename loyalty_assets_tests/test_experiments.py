"""Retention experiments domain: assignment, intervals, power, sample-ratio check, uplift table."""

from __future__ import annotations

import hashlib

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from loyalty_assets.domain.experiments import (
    CONTROL,
    HOLD_OUT_ACTION,
    TREATMENT,
    assign_arms,
    assign_experiment,
    cell_control_shares,
    assignment_unit,
    experiment_id,
    first_assignments,
    format_uplift_line,
    matured_outcomes,
    minimum_detectable_effect,
    newcombe_difference,
    sample_ratio_mismatches,
    uplift_table,
    wilson_interval,
)
from loyalty_assets.domain.monitoring_report import uplift_png
from loyalty_assets.domain.scoring import load_action_table


def test_experiment_is_the_calendar_quarter() -> None:
    assert experiment_id("2026-11-30") == "retention-2026Q4"
    assert experiment_id("2026-01-05") == "retention-2026Q1"
    assert experiment_id("2026-06-29") == experiment_id("2026-04-06") == "retention-2026Q2"


def test_assignment_unit_is_the_documented_hash() -> None:
    # Fixed values: the assignment must never change with a library upgrade.
    assert assignment_unit("retention-2026Q4", 100018) == pytest.approx(0.8561608125784211, abs=0)
    digest = hashlib.sha256(b"retention-2026Q1:7").digest()
    assert assignment_unit("retention-2026Q1", 7) == int.from_bytes(digest[:8], "big") / 2**64


def test_arms_are_stable_and_follow_the_cell_share() -> None:
    members = np.arange(1, 40_001)
    shares = np.where(members % 2 == 0, 0.10, 0.0)
    arms = assign_arms(members, shares, "retention-2026Q4")
    assert (arms == assign_arms(members, shares, "retention-2026Q4")).all()
    assert (arms[shares == 0] == TREATMENT).all()
    assert (arms[shares > 0] == CONTROL).mean() == pytest.approx(0.10, abs=0.01)
    # The same member may fall in another arm in the next quarter's experiment.
    assert (arms != assign_arms(members, shares, "retention-2027Q1")).any()
    with pytest.raises(ValueError, match="control shares"):
        assign_arms(members, np.ones(len(members)), "x")


def test_action_table_overrides_the_tier_default_and_control_members_are_held_out() -> None:
    table = load_action_table()
    shares = cell_control_shares(table.assign(control_share=np.where(table["risk_tier"] == "High", "0.5", "")))
    assert shares[("Dabblers", "High")] == 0.5
    assert shares[("Dabblers", "Critical")] == 0.10
    assert shares[("Dabblers", "Low")] == 0.0
    predictions = pd.DataFrame(
        {
            "loyalty_number": np.arange(1, 2001),
            "segment": "Dabblers",
            "risk_tier": "Critical",
            "recommended_action": "Win-back offer",
        }
    )
    assigned = assign_experiment(predictions, shares, "retention-2026Q4")
    control = assigned["experiment_arm"] == CONTROL
    assert 0.07 < control.mean() < 0.13
    assert (assigned.loc[control, "recommended_action"] == HOLD_OUT_ACTION).all()
    assert (assigned.loc[~control, "recommended_action"] == "Win-back offer").all()
    assert (assigned["assigned_action"] == "Win-back offer").all()
    # An analyst recomputes the arm from the documented hash and the stored share.
    recomputed = [
        CONTROL if assignment_unit("retention-2026Q4", n) < s else TREATMENT
        for n, s in zip(assigned["loyalty_number"], assigned["control_share"])
    ]
    assert recomputed == assigned["experiment_arm"].tolist()


def test_wilson_and_newcombe_match_the_published_examples() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10.
    difference, low, high = newcombe_difference(56, 70, 48, 80)
    assert (round(difference, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)
    assert tuple(round(v, 4) for v in newcombe_difference(9, 10, 3, 10)[1:]) == (0.1705, 0.809)
    assert tuple(round(v, 4) for v in wilson_interval(81, 263)) == (0.2553, 0.3662)
    assert np.isnan(newcombe_difference(0, 0, 1, 10)).all()


def test_minimum_detectable_effect_shrinks_with_sample_size() -> None:
    small = minimum_detectable_effect(0.10, 100, 900)
    large = minimum_detectable_effect(0.10, 10_000, 90_000)
    assert small == pytest.approx(2.8016 * (0.09 * (1 / 100 + 1 / 900)) ** 0.5, rel=1e-4)
    assert large == pytest.approx(small / 10, rel=1e-9)


def _scored(weeks: list[str], members: int, tier: str = "Critical") -> pd.DataFrame:
    numbers = np.arange(1, members + 1)
    frames = []
    for week in weeks:
        experiment = experiment_id(week)
        frames.append(
            pd.DataFrame(
                {
                    "loyalty_number": numbers,
                    "week": week,
                    "snapshot_month": pd.Timestamp(week).to_period("M").to_timestamp() - pd.DateOffset(months=1),
                    "risk_tier": tier,
                    "segment": "Dabblers",
                    "assigned_action": "Win-back offer",
                    "experiment_id": experiment,
                    "control_share": 0.10,
                    "experiment_arm": assign_arms(numbers, np.full(members, 0.10), experiment),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_first_list_of_an_experiment_is_the_unit_and_outcomes_need_a_mature_horizon() -> None:
    scored = _scored(["2026-01-05", "2026-01-12", "2026-04-06"], 50)
    first = first_assignments(scored)
    assert len(first) == 100  # 50 members x two experiments
    assert set(first.loc[first["experiment_id"] == "retention-2026Q1", "week"]) == {"2026-01-05"}
    cancellation = pd.Series({1: pd.Timestamp("2026-02-01"), 2: pd.Timestamp("2026-06-01")})
    outcomes = matured_outcomes(first, cancellation, pd.Timestamp("2026-03-01"), horizon=3)
    # Q1's snapshot is 2025-12: its horizon ends 2026-03, complete; Q2's (2026-03 + 3) is not.
    assert set(outcomes["experiment_id"]) == {"retention-2026Q1"}
    assert outcomes.set_index("loyalty_number")["churned"].to_dict()[1] == 1
    assert outcomes.set_index("loyalty_number")["churned"].to_dict()[2] == 0


def test_uplift_table_recovers_a_planted_effect_and_formats_one_line() -> None:
    rng = np.random.default_rng(3)
    first = first_assignments(_scored(["2026-01-05"], 40_000))
    churn = np.where(first["experiment_arm"] == CONTROL, 0.20, 0.14)
    first["churned"] = (rng.random(len(first)) < churn).astype(int)
    row = uplift_table(first).iloc[0]
    assert row["members_held_out"] + row["members_treated"] == 40_000
    assert row["risk_reduction_low"] < 0.06 < row["risk_reduction_high"]
    assert row["number_needed_to_treat"] == pytest.approx(1 / row["risk_reduction"])
    assert row["relative_reduction"] == pytest.approx(row["risk_reduction"] / row["churn_held_out"])
    png = uplift_png(uplift_table(first))
    assert png.startswith(b"\x89PNG")
    line = format_uplift_line(row)
    assert line.startswith("Win-back offer (Critical): churn 14.")
    assert " held out, -" in line


def test_sample_ratio_mismatch_flags_only_a_drifted_cell() -> None:
    first = first_assignments(_scored(["2026-01-05"], 5_000))
    assert sample_ratio_mismatches(first).empty
    skewed = first.copy()
    skewed.loc[skewed.index[:400], "experiment_arm"] = CONTROL
    flagged = sample_ratio_mismatches(skewed)
    held_out = int((skewed["experiment_arm"] == CONTROL).sum())
    assert flagged[["risk_tier", "held_out"]].values.tolist() == [["Critical", held_out]]


def test_results_asset_measures_matured_weeks_and_skips_weeks_scored_before_experiments(tmp_path) -> None:
    from loyalty_assets.defs.experiments.assets import retention_experiment_results
    from loyalty_assets.domain.experiments import EXPERIMENT_COLUMNS
    from loyalty_assets_tests.drop_files import put_committed_drop
    from loyalty_assets_tests.test_distribution_assets import UPSTREAM, Lake

    lake = Lake(tmp_path / "lake")
    old_week, week = "2025-12-29", "2026-01-05"
    lake.put_table("churn_predictions", old_week, _scored([old_week], 200).drop(columns=EXPERIMENT_COLUMNS))
    scored = _scored([week], 4000)
    lake.put_table("churn_predictions", week, scored)
    churned = scored["loyalty_number"] % 10 == 0  # cancel in February, inside the horizon of December
    loyalty = pd.DataFrame(
        {
            "loyalty_number": scored["loyalty_number"],
            "clv": 1000.0,
            "cancellation_year": np.where(churned, 2026, np.nan),
            "cancellation_month": np.where(churned, 2, np.nan),
        }
    )
    put_committed_drop(lake.store, "2026-04-02", loyalty)

    result = dg.materialize(
        [*(spec for spec in UPSTREAM if spec.key != retention_experiment_results.key), retention_experiment_results],
        partition_key="2026-04-01",
        resources=lake.resources(),
    )

    results = result.output_for_node("retention_experiment_results")
    (row,) = results.to_dict("records")
    assert row["members_treated"] + row["members_held_out"] == 4000
    assert row["churn_treated"] == pytest.approx(0.1, abs=0.01)
    assert row["churn_held_out"] == pytest.approx(0.1, abs=0.05)
    (event,) = result.get_asset_materialization_events()
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    assert metadata["weeks_read"] == 2 and metadata["weeks_without_experiment"] == 1
    assert {check.check_name: check.passed for check in result.get_asset_check_evaluations()}["sample_ratio"]
