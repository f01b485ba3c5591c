"""Tests of loyalty_assets.domain.churn on synthetic training sets built with numpy."""

from __future__ import annotations

import base64
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.metrics import brier_score_loss, recall_score
from sklearn.pipeline import Pipeline

from loyalty_assets.domain.churn import (
    BASELINE_FEATURES,
    ChurnGateConfig,
    ChurnTrainingConfig,
    OutOfTimeSplit,
    data_fingerprint,
    evaluate_scores,
    evaluation_plot_png,
    gate_beats_baseline,
    gate_not_worse_than_champion,
    gate_recall,
    gate_roc_auc_floor,
    leakage_violations,
    run_churn_gates,
    score_champion_on,
    split_out_of_time,
    train_churn_candidate,
)
from loyalty_assets.domain.features import FEATURE_COLUMNS
from loyalty_assets.domain.figures import png_markdown
from loyalty_assets_tests.training_sets import FEATURES, SMALL, make_training_set

@pytest.fixture(scope="module")
def training_set() -> pd.DataFrame:
    return make_training_set()


@pytest.fixture(scope="module")
def candidate(training_set):
    return train_churn_candidate(training_set, FEATURES, SMALL)


def test_baseline_features_are_produced_by_the_features_module():
    assert set(BASELINE_FEATURES) <= set(FEATURE_COLUMNS)


def test_synthetic_set_is_realistically_imbalanced(training_set):
    assert 0.05 <= training_set["churned"].mean() <= 0.10


def test_split_is_out_of_time_with_embargo_and_never_mixes_snapshots(training_set):
    split = split_out_of_time(training_set, SMALL)
    months = pd.date_range("2017-01-01", periods=12, freq="MS")
    assert split.test_snapshots == list(months[9:12])
    assert split.validation_snapshots == list(months[5:7])
    assert split.train_snapshots == list(months[0:3])
    embargo = pd.DateOffset(months=SMALL.embargo_months)
    assert max(split.train_snapshots) + embargo <= min(split.validation_snapshots)
    assert max(split.validation_snapshots) + embargo <= min(split.test_snapshots)
    for part, snapshots in ((split.train, months[0:3]), (split.validation, months[5:7]), (split.test, months[9:12])):
        assert set(part["snapshot_month"]) == set(snapshots)
        assert len(part) == training_set["snapshot_month"].isin(snapshots).sum()
    assert leakage_violations(training_set, split, recompute_features=None) == []


def test_split_rejects_too_few_snapshots():
    short = make_training_set(n_members=200, n_snapshots=SMALL.minimum_snapshots - 1)
    with pytest.raises(ValueError, match="needs at least 10 consecutive monthly snapshots"):
        split_out_of_time(short, SMALL)
    exact = make_training_set(n_members=200, n_snapshots=SMALL.minimum_snapshots)
    assert len(split_out_of_time(exact, SMALL).train_snapshots) == 1


def test_embargo_shorter_than_horizon_is_rejected():
    with pytest.raises(ValueError, match="embargo_months \\(2\\) must be >= horizon_months \\(3\\)"):
        ChurnTrainingConfig(embargo_months=2)


def test_real_signal_passes_gates_and_records_metrics(candidate):
    metrics = candidate.metrics
    for key in ("roc_auc", "pr_auc", "recall", "precision", "flagged_share", "threshold", "brier",
                "baseline_roc_auc", "n_train", "n_test", "test_snapshots", "validation_roc_auc",
                "validation_recall", "train_positive_rate", "validation_positive_rate", "test_positive_rate"):
        assert key in metrics
    assert metrics["test_snapshots"] == ["2017-10", "2017-11", "2017-12"]
    assert metrics["roc_auc"] > 0.80
    assert 0.55 < metrics["baseline_roc_auc"] < metrics["roc_auc"]
    gates = run_churn_gates(metrics, champion_auc=None)
    assert all(passed for passed, _ in gates.values()), gates
    assert list(candidate.feature_importances)[0].startswith("signal_")
    assert list(candidate.feature_importances.values()) == sorted(candidate.feature_importances.values(), reverse=True)
    assert list(candidate.test_scores.columns[:4]) == ["loyalty_number", "snapshot_month", "churned", "score"]
    assert len(candidate.test_scores) == metrics["n_test"]
    assert len(candidate.validation_scores) == metrics["n_validation"]


def test_shuffled_labels_score_near_chance_and_fail_the_baseline_gate(training_set):
    shuffled = training_set.assign(churned=np.random.default_rng(7).permutation(training_set["churned"].to_numpy()))
    metrics = train_churn_candidate(shuffled, FEATURES, SMALL).metrics
    assert abs(metrics["roc_auc"] - 0.5) < 0.05
    assert gate_beats_baseline(metrics, ChurnGateConfig().baseline_margin)[0] is False
    assert gate_roc_auc_floor(metrics, ChurnGateConfig().roc_auc_floor)[0] is False


def test_forest_sees_only_training_rows_and_calibration_only_validation_rows(training_set, candidate):
    split = split_out_of_time(training_set, SMALL)
    forest_pipeline = candidate.model.calibrated_classifiers_[0].estimator.estimator
    forest = forest_pipeline.named_steps["forest"]
    assert {len(sample) for sample in forest.estimators_samples_} == {len(split.train)}
    assert max(sample.max() for sample in forest.estimators_samples_) < len(split.train)

    same_forest = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("forest", RandomForestClassifier(n_estimators=50, min_samples_leaf=25, max_features="sqrt",
                                              class_weight="balanced_subsample", n_jobs=1, random_state=42,
                                              max_samples=len(split.train))),
        ]
    ).fit(split.train[FEATURES], split.train["churned"])
    test_x = split.test[FEATURES]
    np.testing.assert_array_equal(same_forest.predict_proba(test_x), forest_pipeline.predict_proba(test_x))

    recalibrated = CalibratedClassifierCV(FrozenEstimator(same_forest), method="sigmoid")
    recalibrated.fit(split.validation[FEATURES], split.validation["churned"])
    np.testing.assert_allclose(recalibrated.predict_proba(test_x)[:, 1], candidate.test_scores["score"])

    raw_brier = brier_score_loss(split.test["churned"], forest_pipeline.predict_proba(test_x)[:, 1])
    assert candidate.metrics["brier"] < raw_brier
    assert abs(candidate.test_scores["score"].mean() - candidate.metrics["test_positive_rate"]) < 0.02


def test_each_tree_draws_at_most_max_rows_per_tree(training_set):
    capped = train_churn_candidate(training_set, FEATURES, replace(SMALL, n_estimators=5, max_rows_per_tree=1000))
    forest = capped.model.calibrated_classifiers_[0].estimator.estimator.named_steps["forest"]
    assert {len(sample) for sample in forest.estimators_samples_} == {1000}


def test_threshold_is_the_highest_meeting_the_validation_recall_target(training_set, candidate):
    y_validation = split_out_of_time(training_set, SMALL).validation["churned"]
    scores, threshold = candidate.validation_scores, candidate.threshold
    assert candidate.metrics["validation_recall"] >= SMALL.recall_target
    assert recall_score(y_validation, scores >= threshold) >= SMALL.recall_target
    assert recall_score(y_validation, scores > threshold) < SMALL.recall_target


def test_same_seed_gives_identical_model_and_metrics(training_set, candidate):
    again = train_churn_candidate(training_set, FEATURES, SMALL)
    assert again.metrics == candidate.metrics
    pd.testing.assert_frame_equal(again.test_scores, candidate.test_scores)
    other_seed = train_churn_candidate(training_set, FEATURES, replace(SMALL, seed=1))
    assert other_seed.metrics["roc_auc"] != candidate.metrics["roc_auc"]


def test_champion_is_scored_on_the_candidates_test_rows(training_set, candidate):
    test_rows = split_out_of_time(training_set, SMALL).test
    assert score_champion_on(test_rows, candidate.model, FEATURES) == pytest.approx(candidate.metrics["roc_auc"])
    assert score_champion_on(test_rows, candidate.baseline, BASELINE_FEATURES) == pytest.approx(
        candidate.metrics["baseline_roc_auc"]
    )
    with pytest.raises(ValueError, match="lack the champion's feature columns: \\['old_feature'\\]"):
        score_champion_on(test_rows, candidate.model, FEATURES + ["old_feature"])


def test_evaluate_scores_by_hand():
    metrics = evaluate_scores(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), threshold=0.35)
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["recall"] == pytest.approx(1.0)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["flagged_share"] == pytest.approx(0.75)
    assert metrics["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    with pytest.raises(ValueError, match="both churners and non-churners"):
        evaluate_scores(np.array([0, 0]), np.array([0.1, 0.2]), threshold=0.5)


def test_gate_arithmetic():
    metrics = {"roc_auc": 0.74, "baseline_roc_auc": 0.71, "recall": 0.72, "recall_target": 0.81}
    assert gate_roc_auc_floor(metrics, 0.70) == (True, "test ROC-AUC 0.740 >= floor 0.700")
    assert gate_roc_auc_floor(metrics, 0.75)[0] is False
    assert gate_beats_baseline(metrics, 0.02)[0] is True
    assert gate_beats_baseline(metrics, 0.05)[0] is False
    assert gate_not_worse_than_champion(0.74, None, 0.02) == (True, "no champion yet")
    assert gate_not_worse_than_champion(0.74, 0.755, 0.02)[0] is True
    assert gate_not_worse_than_champion(0.74, 0.77, 0.02)[0] is False
    assert gate_recall(metrics, 0.81, 0.10)[0] is True
    assert gate_recall(metrics, 0.81, 0.05)[0] is False
    gates = run_churn_gates(metrics, champion_auc=0.80)
    assert {name: passed for name, (passed, _) in gates.items()} == {
        "roc_auc_floor": True, "beats_baseline": True, "not_worse_than_champion": False, "recall": True,
    }


def _activity(n_members: int = 40, n_months: int = 8, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "loyalty_number": np.repeat(np.arange(1, n_members + 1), n_months).astype("int64"),
            "month": np.tile(pd.date_range("2018-01-01", periods=n_months, freq="MS"), n_members),
            "flights": rng.integers(0, 12, n_members * n_months).astype(float),
        }
    )


def _features_at(activity: pd.DataFrame, snapshots: list[pd.Timestamp], offset_months: int = 0) -> pd.DataFrame:
    """Flights in the 3 months up to each snapshot (+ ``offset_months``, to simulate a leak) and months seen."""
    tables = []
    for snapshot in snapshots:  # one pass per snapshot month, not per member
        cutoff = snapshot + pd.DateOffset(months=offset_months)
        window = activity[(activity["month"] <= cutoff) & (activity["month"] > cutoff - pd.DateOffset(months=3))]
        seen = activity[activity["month"] <= snapshot]
        table = seen.groupby("loyalty_number").size().rename("months_seen").to_frame()
        table["flights_3m"] = window.groupby("loyalty_number")["flights"].sum()
        tables.append(table.reset_index().assign(snapshot_month=snapshot))
    return pd.concat(tables, ignore_index=True).astype({"months_seen": float})


def test_leakage_guard_catches_a_post_snapshot_feature_value_and_a_member_on_both_sides():
    activity = _activity()
    snapshots = list(pd.date_range("2018-01-01", periods=8, freq="MS"))
    features = _features_at(activity, snapshots)
    labels = np.random.default_rng(4).integers(0, 2, len(features))
    honest = features.assign(churned=labels.astype("int64"))
    split = OutOfTimeSplit(
        train=honest[honest["snapshot_month"] <= snapshots[3]],
        validation=honest[honest["snapshot_month"] == snapshots[4]],
        test=honest[honest["snapshot_month"] >= snapshots[5]],
    )

    def recompute(requested):
        return _features_at(activity, requested)

    assert leakage_violations(honest, split, recompute, sample_size=len(honest)) == []

    leaked_row = (honest["loyalty_number"] == 17) & (honest["snapshot_month"] == snapshots[2])
    leaked = honest.copy()
    leaked.loc[leaked_row, "flights_3m"] = _features_at(
        activity[activity["loyalty_number"] == 17], [snapshots[2]], offset_months=1
    )["flights_3m"].to_numpy()
    assert not np.isclose(leaked.loc[leaked_row, "flights_3m"], honest.loc[leaked_row, "flights_3m"]).all()
    violations = leakage_violations(leaked, split, recompute, sample_size=len(leaked))
    assert len(violations) == 1
    assert violations[0].startswith("member 17 at snapshot 2018-03: feature flights_3m is")

    train_row = split.train[(split.train["loyalty_number"] == 5) & (split.train["snapshot_month"] == snapshots[1])]
    mixed = replace(split, test=pd.concat([split.test, train_row], ignore_index=True))
    violations = leakage_violations(honest, mixed, recompute_features=None)
    assert "member 5 is in both train and test for snapshot 2018-02" in violations
    assert "test snapshot 2018-02 is not after every train/validation snapshot (latest 2018-05)" in violations


def test_plot_is_a_png_and_embeds_as_markdown(candidate):
    png = evaluation_plot_png(candidate.test_scores)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    markdown = png_markdown(png, "ROC and PR")
    prefix = "![ROC and PR](data:image/png;base64,"
    assert markdown.startswith(prefix) and markdown.endswith(")")
    assert base64.b64decode(markdown[len(prefix):-1]) == png


def test_data_fingerprint_follows_content(training_set):
    fingerprint = data_fingerprint(training_set)
    assert len(fingerprint) == 64
    assert data_fingerprint(training_set.copy()) == fingerprint
    changed = training_set.copy()
    changed.loc[3, "noise_0"] += 1.0
    assert data_fingerprint(changed) != fingerprint


def test_an_all_missing_feature_keeps_its_column(training_set):
    """The 8-column activity variant has no companion counts: that feature is NaN everywhere."""
    without_companions = training_set.assign(noise_0=np.nan)
    candidate = train_churn_candidate(without_companions, FEATURES, SMALL)
    assert set(candidate.feature_importances) == set(FEATURES)
    assert candidate.feature_importances["noise_0"] == 0.0
    scores = candidate.model.predict_proba(without_companions[FEATURES].head(5))[:, 1]
    assert np.all((scores >= 0) & (scores <= 1))
