"""Drift monitoring: feature, prediction and concept drift against a stored reference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from loyalty_assets.domain.drift import (
    DriftThresholds,
    build_reference,
    concept_drift,
    dataset_drift_status,
    drift_table_markdown,
    feature_drift,
    jensen_shannon,
    population_stability_index,
    prediction_drift,
    score_distribution,
)
from loyalty_assets.domain.scoring import assign_tiers, tier_cutoffs

NUMERIC = ["distance_12m", "flights_3m", "companion_share_12m"]
CATEGORICAL = ["loyalty_card_tier", "promotion_enrollment"]


def synthetic_week(count: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Features (continuous, zero-inflated, with NaN, two coded categories) and churn scores."""
    rng = np.random.default_rng(seed)
    features = pd.DataFrame(
        {
            "distance_12m": rng.lognormal(8, 1, count),
            "flights_3m": np.where(rng.random(count) < 0.45, 0.0, rng.poisson(20, count)).astype(float),
            "companion_share_12m": np.where(rng.random(count) < 0.3, np.nan, rng.random(count)),
            "loyalty_card_tier": rng.choice([0.0, 1.0, 2.0], count, p=[0.46, 0.34, 0.20]),
            "promotion_enrollment": (rng.random(count) < 0.06).astype(float),
        }
    )
    return features, rng.beta(1.2, 30, count)


@pytest.fixture(scope="module")
def reference_week():
    features, scores = synthetic_week(15_000, seed=1)
    cutoffs = tier_cutoffs(scores)
    tiers = assign_tiers(scores, cutoffs)
    reference = build_reference(features, NUMERIC + CATEGORICAL, CATEGORICAL, scores, tiers)
    return features, scores, tiers, cutoffs, reference


def test_reference_is_json_serialisable_and_complete(reference_week):
    _, _, _, _, reference = reference_week
    restored = json.loads(json.dumps(reference))
    assert set(restored["numeric"]) == set(NUMERIC)
    assert set(restored["categorical"]) == set(CATEGORICAL)
    for spec in restored["numeric"].values():
        assert len(spec["shares"]) == len(spec["edges"]) + 1 <= 10
        assert sum(spec["shares"]) + spec["missing_share"] == pytest.approx(1.0)
    assert len(restored["numeric"]["distance_12m"]["edges"]) == 9
    # Zero-inflated: the repeated zero deciles collapse into one bin holding all the zeros.
    assert restored["numeric"]["flights_3m"]["shares"][0] == pytest.approx(0.45 + 0.55 * np.exp(-20), abs=0.02)
    assert restored["numeric"]["companion_share_12m"]["missing_share"] == pytest.approx(0.3, abs=0.02)
    assert restored["categorical"]["loyalty_card_tier"]["shares"]["2.0"] == pytest.approx(0.2, abs=0.02)
    assert len(restored["score_histogram"]["shares"]) == 20
    assert restored["tier_shares"]["Critical"] == pytest.approx(0.05, abs=1e-3)


def test_psi_and_jensen_shannon_match_hand_computation():
    expected_psi = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert population_stability_index([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected_psi)
    assert population_stability_index([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert jensen_shannon([0.3, 0.7], [0.3, 0.7]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        population_stability_index([0.5, 0.5], [1.0])


def test_identical_data_shows_no_drift(reference_week):
    features, scores, tiers, _, reference = reference_week
    drift = feature_drift(reference, features, DriftThresholds())
    assert list(drift.columns) == ["feature", "kind", "statistic", "value", "status"]
    assert list(drift["feature"]) == NUMERIC + CATEGORICAL
    assert list(drift["statistic"]) == ["psi"] * 3 + ["js"] * 2
    assert np.allclose(drift["value"], 0.0)
    assert (drift["status"] == "ok").all()
    assert dataset_drift_status(drift) == "ok"
    published = np.round(scores * 100, 1) / 100  # churn_predictions keeps 0.1 point
    predictions = prediction_drift(reference, published, tiers, previous_weeks=None)
    assert predictions["status"] == "ok"
    assert predictions["score_psi_vs_reference"] == pytest.approx(0.0)
    assert all(delta == pytest.approx(0.0) for delta in predictions["tier_share_delta"].values())


def test_fresh_sample_of_the_same_population_stays_ok(reference_week):
    _, _, _, cutoffs, reference = reference_week
    features, scores = synthetic_week(15_000, seed=2)
    drift = feature_drift(reference, features)
    assert (drift["status"] == "ok").all(), drift
    assert prediction_drift(reference, scores, assign_tiers(scores, cutoffs))["status"] == "ok"


def test_planted_shifts_fail_exactly_the_shifted_features(reference_week):
    features, _, _, _, reference = reference_week
    shifted = features.assign(
        distance_12m=features["distance_12m"] * 3,
        loyalty_card_tier=features["loyalty_card_tier"].replace(2.0, 0.0),  # Aurora dropped
    )
    drift = feature_drift(reference, shifted).set_index("feature")
    assert set(drift.index[drift["status"] == "fail"]) == {"distance_12m", "loyalty_card_tier"}
    assert (drift.drop(["distance_12m", "loyalty_card_tier"])["status"] == "ok").all()
    assert drift.loc["distance_12m", "value"] > 0.25
    assert drift.loc["loyalty_card_tier", "value"] > 0.2
    # 2 of 5 features fail: more than the 0.3 dataset share.
    assert dataset_drift_status(drift.reset_index()) == "fail"
    assert dataset_drift_status(drift.reset_index(), DriftThresholds(dataset_fail_share=0.5)) == "warn"


def test_new_category_does_not_crash_and_counts_as_drift(reference_week):
    features, _, _, _, reference = reference_week
    with_new = features.copy()
    with_new.loc[with_new.index[:1500], "loyalty_card_tier"] = 3.0
    with_new.loc[with_new.index[:200], "promotion_enrollment"] = np.nan
    drift = feature_drift(reference, with_new).set_index("feature")
    assert drift.loc["loyalty_card_tier", "value"] > 0.1
    assert drift.loc["loyalty_card_tier", "status"] in ("warn", "fail")
    assert np.isfinite(drift["value"]).all()


def test_dataset_status_rules():
    frame = pd.DataFrame({"feature": list("abcdefghij"), "kind": "numeric", "statistic": "psi", "value": 0.0})
    assert dataset_drift_status(frame.assign(status=["ok"] * 10)) == "ok"
    assert dataset_drift_status(frame.assign(status=["warn"] + ["ok"] * 9)) == "warn"
    assert dataset_drift_status(frame.assign(status=["fail"] * 3 + ["ok"] * 7)) == "warn"
    assert dataset_drift_status(frame.assign(status=["fail"] * 4 + ["ok"] * 6)) == "fail"


def test_prediction_drift_against_reference_and_previous_weeks(reference_week):
    _, scores, tiers, cutoffs, reference = reference_week
    published = np.round(scores * 100, 1) / 100  # churn_predictions keeps 0.1 point
    previous = [score_distribution(published, tiers, reference["score_histogram"]["edges"], week="2018-11-26")]
    assert previous[0]["week"] == "2018-11-26"
    riskier = np.clip(scores * 2.5, 0, 1)
    riskier_tiers = assign_tiers(riskier, cutoffs)
    result = prediction_drift(reference, riskier, riskier_tiers, previous_weeks=previous)
    assert result["status"] == "fail"
    assert result["score_psi_vs_reference"] > 0.25
    assert result["tier_share_delta"]["Critical"] > 0.1
    assert sum(result["tier_share_delta"].values()) == pytest.approx(0.0, abs=1e-12)
    assert result["score_psi_vs_previous_weeks"][0]["week"] == "2018-11-26"
    assert result["max_score_psi_vs_previous_weeks"] == pytest.approx(result["score_psi_vs_reference"])
    assert "score PSI vs reference" in result["message"]
    json.dumps(result)


def test_concept_drift_on_a_hand_made_week():
    scored = pd.DataFrame(
        {
            "loyalty_number": [11, 12, 13, 14, 15, 16, 17, 18],
            "churn_risk_pct": [90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0],
            "risk_tier": ["Critical", "High", "High", "Medium", "Medium", "Low", "Low", "Low"],
        }
    )
    outcomes = pd.Series([0, 0, 1, 0, 0, 0, 1, 0, 1], index=[18, 17, 16, 15, 14, 12, 13, 19, 11])
    # churners: 11 (0.9), 13 (0.7), 16 (0.4); member 19 was not scored and is ignored.
    # Pairs churner > non-churner: 0.9 beats 5, 0.7 beats 4 (0.6, 0.5, 0.3, 0.2), 0.4 beats 2 -> 11 / 15.
    # Threshold 0.55 flags 0.9, 0.8, 0.7, 0.6 -> 2 of 3 churners.
    # Churn rate: Low 1/3, Medium 0/2, High 1/2, Critical 1/1 -> Medium is not above Low.
    result = concept_drift(scored, outcomes, 0.55, {"roc_auc": 0.78, "recall": 0.70}, DriftThresholds())
    assert result["roc_auc"] == pytest.approx(11 / 15)
    assert result["recall_at_threshold"] == pytest.approx(2 / 3)
    assert result["n_members"] == 8 and result["n_churned"] == 3
    assert result["churn_rate_by_tier"] == pytest.approx({"Low": 1 / 3, "Medium": 0.0, "High": 0.5, "Critical": 1.0})
    assert result["tier_order_violations"] == ["Medium (0.0%) <= Low (33.3%)"]
    assert result["roc_auc_drop"] == pytest.approx(0.78 - 11 / 15)
    assert result["status"] == "warn"  # AUC drop 0.047 (> 0.03 warn) and the tier order violation
    assert "0.733" in result["message"] and "Medium (0.0%) <= Low (33.3%)" in result["message"]

    failing = concept_drift(scored, outcomes, 0.55, {"roc_auc": 0.90, "recall": 0.70}, DriftThresholds())
    assert failing["status"] == "fail"

    ordered = scored.assign(risk_tier=["Critical", "High", "High", "Medium", "Medium", "Medium", "Low", "Low"])
    ordered_outcomes = pd.Series([1, 1, 0, 1, 0, 0, 0, 0], index=[11, 12, 13, 14, 15, 16, 17, 18])
    # churners 0.9, 0.8, 0.6: 5 + 5 + 4 of 15 pairs; all three are flagged at 0.55.
    healthy = concept_drift(ordered, ordered_outcomes, 0.55, {"roc_auc": 0.95, "recall": 1.0}, DriftThresholds())
    assert healthy["roc_auc"] == pytest.approx(14 / 15)
    assert healthy["recall_at_threshold"] == 1.0
    assert healthy["churn_rate_by_tier"] == pytest.approx({"Low": 0.0, "Medium": 1 / 3, "High": 0.5, "Critical": 1.0})
    assert healthy["tier_order_violations"] == []
    assert healthy["status"] == "ok"


def test_concept_drift_rejects_missing_outcomes_and_single_class():
    scored = pd.DataFrame({"loyalty_number": [1, 2], "churn_risk_pct": [10.0, 20.0], "risk_tier": ["Low", "High"]})
    with pytest.raises(ValueError, match="1 of 2 scored members have no realised outcome"):
        concept_drift(scored, pd.Series([1], index=[1]), 0.1, {"roc_auc": 0.8, "recall": 0.8})
    with pytest.raises(ValueError, match="only class 0"):
        concept_drift(scored, pd.Series([0, 0], index=[1, 2]), 0.1, {"roc_auc": 0.8, "recall": 0.8})
    with pytest.raises(ValueError, match="promotion_metrics lacks"):
        concept_drift(scored, pd.Series([0, 1], index=[1, 2]), 0.1, {"auc": 0.8})


def test_drift_table_markdown_lists_worst_first(reference_week):
    features, _, _, _, reference = reference_week
    drift = feature_drift(reference, features.assign(distance_12m=features["distance_12m"] * 3))
    markdown = drift_table_markdown(drift)
    lines = markdown.splitlines()
    assert lines[0].replace(" ", "") == "|feature|kind|statistic|value|status|"
    assert len(lines) == 2 + len(drift)
    assert "distance_12m" in lines[2] and "fail" in lines[2]
    assert all(name in markdown for name in NUMERIC + CATEGORICAL)
