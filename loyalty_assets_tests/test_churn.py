"""Tests of loyalty_assets.domain.churn on synthetic training sets built with numpy."""

from __future__ import annotations

import base64
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import brier_score_loss, recall_score

from loyalty_assets.domain.churn import (
    BASELINE_FEATURES,
    forest_pipeline,
    BOOSTING,
    FOREST,
    ChurnGateConfig,
    ChurnTrainingConfig,
    OutOfTimeSplit,
    calibration_report,
    data_fingerprint,
    evaluate_scores,
    evaluation_plot_png,
    gate_beats_baseline,
    gate_not_worse_than_champion,
    gate_recall,
    gate_roc_auc_floor,
    leakage_violations,
    member_bootstrap_auc,
    run_churn_gates,
    score_champion_on,
    separated_tier_cutoffs,
    split_out_of_time,
    train_churn_candidate,
)
from loyalty_assets.domain.features import FEATURE_COLUMNS
from loyalty_assets.domain.figures import png_markdown
from loyalty_assets_tests.training_sets import FEATURES, SMALL, make_training_set

FOREST_ONLY = replace(SMALL, families=(FOREST,))

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
                "validation_recall", "train_positive_rate", "validation_positive_rate", "test_positive_rate",
                "rolling_roc_auc_mean", "baseline_difference_low", "model_family", "families", "calibration"):
        assert key in metrics
    assert metrics["test_snapshots"] == ["2017-10", "2017-11", "2017-12"]
    assert metrics["roc_auc"] > 0.80
    # The synthetic tenure and promotion effects are weak: the gradient-boosted baseline is near chance.
    assert 0.5 < metrics["baseline_roc_auc"] < metrics["roc_auc"]
    gates = run_churn_gates(metrics, None)
    assert all(passed for passed, _ in gates.values()), gates
    assert list(candidate.feature_importances)[0].startswith("signal_")
    assert list(candidate.feature_importances.values()) == sorted(candidate.feature_importances.values(), reverse=True)
    assert list(candidate.test_scores.columns[:4]) == ["loyalty_number", "snapshot_month", "churned", "score"]
    assert len(candidate.test_scores) == metrics["n_test"]
    assert len(candidate.validation_scores) == metrics["n_validation"]


def test_shuffled_labels_score_near_chance_and_fail_the_baseline_gate(training_set):
    shuffled = training_set.assign(churned=np.random.default_rng(7).permutation(training_set["churned"].to_numpy()))
    metrics = train_churn_candidate(shuffled, FEATURES, replace(SMALL, backtest_windows=0)).metrics
    assert abs(metrics["roc_auc"] - 0.5) < 0.05
    assert gate_beats_baseline(metrics, ChurnGateConfig().baseline_margin)[0] is False
    assert gate_roc_auc_floor(metrics, ChurnGateConfig().roc_auc_floor)[0] is False


@pytest.fixture(scope="module")
def forest_candidate(training_set):
    return train_churn_candidate(training_set, FEATURES, FOREST_ONLY)


def test_forest_sees_only_training_rows_and_calibration_only_validation_rows(training_set, forest_candidate):
    split = split_out_of_time(training_set, FOREST_ONLY)
    fitted_pipeline = forest_candidate.model.calibrated_classifiers_[0].estimator.estimator
    forest = fitted_pipeline.named_steps["forest"]
    assert {len(sample) for sample in forest.estimators_samples_} == {len(split.train)}
    assert max(sample.max() for sample in forest.estimators_samples_) < len(split.train)

    setting = forest_candidate.metrics["model_setting"]
    same_forest = forest_pipeline(replace(FOREST_ONLY, n_jobs=1), len(split.train), FEATURES, setting)
    same_forest.fit(split.train[FEATURES], split.train["churned"])
    test_x = split.test[FEATURES]
    np.testing.assert_array_equal(same_forest.predict_proba(test_x), fitted_pipeline.predict_proba(test_x))

    recalibrated = CalibratedClassifierCV(FrozenEstimator(same_forest), method="sigmoid")
    recalibrated.fit(split.validation[FEATURES], split.validation["churned"])
    np.testing.assert_allclose(recalibrated.predict_proba(test_x)[:, 1], forest_candidate.test_scores["score"])

    raw_brier = brier_score_loss(split.test["churned"], fitted_pipeline.predict_proba(test_x)[:, 1])
    assert forest_candidate.metrics["brier"] < raw_brier
    assert abs(forest_candidate.test_scores["score"].mean() - forest_candidate.metrics["test_positive_rate"]) < 0.02


def test_each_tree_draws_at_most_max_rows_per_tree(training_set):
    config = replace(
        FOREST_ONLY, n_estimators=5, max_rows_per_tree=1000, forest_settings=FOREST_ONLY.forest_settings[:1]
    )
    capped = train_churn_candidate(training_set, FEATURES, config)
    forest = capped.model.calibrated_classifiers_[0].estimator.estimator.named_steps["forest"]
    assert {len(sample) for sample in forest.estimators_samples_} == {1000}


def test_the_default_recipe_tunes_every_setting_of_both_families_and_backtests_two_windows():
    """The production defaults, which the end-to-end tests trade for a quicker recipe, on a small set."""
    defaults = ChurnTrainingConfig()
    metrics = train_churn_candidate(make_training_set(n_members=500), FEATURES, defaults).metrics
    families = metrics["families"]
    assert set(families) == set(defaults.families)
    for family, summary in families.items():
        tried = summary["settings_tried"]
        assert [entry["setting"] for entry in tried] == [dict(setting) for setting in defaults.settings_of(family)]
        assert summary["validation_roc_auc"] == max(entry["validation_roc_auc"] for entry in tried)
    assert families[metrics["model_family"]]["validation_roc_auc"] == max(
        summary["validation_roc_auc"] for summary in families.values()
    )
    assert metrics["rolling_roc_auc_windows"] == 1 + defaults.backtest_windows
    assert [window["months_back"] for window in metrics["rolling_roc_auc_backtest"]] == [1, 2]
    assert metrics["roc_auc_low"] < metrics["roc_auc"] < metrics["roc_auc_high"]
    assert metrics["roc_auc"] > 0.7


def test_threshold_is_the_highest_meeting_the_validation_recall_target(training_set, candidate):
    y_validation = split_out_of_time(training_set, SMALL).validation["churned"]
    scores, threshold = candidate.validation_scores, candidate.threshold
    assert candidate.metrics["validation_recall"] >= SMALL.recall_target
    assert recall_score(y_validation, scores >= threshold) >= SMALL.recall_target
    assert recall_score(y_validation, scores > threshold) < SMALL.recall_target


def test_same_seed_gives_identical_model_and_metrics(training_set, candidate, forest_candidate):
    again = train_churn_candidate(training_set, FEATURES, SMALL)
    assert again.metrics == candidate.metrics
    pd.testing.assert_frame_equal(again.test_scores, candidate.test_scores)
    # Without early stopping the boosting family draws nothing at random; the seed moves the forest.
    other_seed = train_churn_candidate(training_set, FEATURES, replace(FOREST_ONLY, seed=1))
    assert other_seed.metrics["roc_auc"] != forest_candidate.metrics["roc_auc"]


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
    metrics = {
        "roc_auc": 0.74, "rolling_roc_auc_mean": 0.73, "rolling_roc_auc_windows": 3, "baseline_roc_auc": 0.71,
        "baseline_difference": 0.03, "baseline_difference_low": 0.01, "baseline_difference_high": 0.05,
        "recall": 0.72, "recall_target": 0.81,
    }
    assert gate_roc_auc_floor(metrics, 0.70) == (
        True, "test ROC-AUC averaged over 3 rolling window(s) 0.730 >= floor 0.700"
    )
    assert gate_roc_auc_floor(metrics, 0.735)[0] is False
    assert gate_beats_baseline(metrics, 0.0)[0] is True
    assert gate_beats_baseline(metrics, 0.02)[0] is False
    assert gate_not_worse_than_champion(None, 0.03) == (True, "no champion yet")
    assert gate_not_worse_than_champion({"estimate": -0.01, "low": -0.025, "high": 0.005}, 0.03)[0] is True
    assert gate_not_worse_than_champion({"estimate": -0.01, "low": -0.035, "high": 0.005}, 0.03)[0] is False
    assert gate_recall(metrics, 0.81, 0.10)[0] is True
    assert gate_recall(metrics, 0.81, 0.05)[0] is False
    gates = run_churn_gates(metrics, {"estimate": -0.03, "low": -0.05, "high": -0.01})
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
    candidate = train_churn_candidate(without_companions, FEATURES, replace(SMALL, backtest_windows=0))
    assert set(candidate.feature_importances) == set(FEATURES)
    assert candidate.feature_importances["noise_0"] == 0.0
    scores = candidate.model.predict_proba(without_companions[FEATURES].head(5))[:, 1]
    assert np.all((scores >= 0) & (scores <= 1))


def test_both_families_are_tuned_on_validation_and_the_better_one_is_chosen(candidate):
    families = candidate.metrics["families"]
    assert set(families) == {FOREST, BOOSTING}
    for family, summary in families.items():
        tried = summary["settings_tried"]
        assert len(tried) == len(SMALL.settings_of(family)) == 2
        assert summary["validation_roc_auc"] == max(setting["validation_roc_auc"] for setting in tried)
        assert 0.5 < summary["test_roc_auc"] < 1.0
    chosen = candidate.metrics["model_family"]
    assert families[chosen]["validation_roc_auc"] == max(summary["validation_roc_auc"] for summary in families.values())
    assert candidate.metrics["model_setting"] == families[chosen]["setting"]
    fitted = candidate.model.calibrated_classifiers_[0].estimator.estimator
    assert list(fitted.named_steps) == (["prepare", "forest"] if chosen == FOREST else ["drop_empty", "boosting"])


def test_the_test_period_never_influences_the_choice(training_set, candidate):
    test_months = split_out_of_time(training_set, SMALL).test_snapshots
    in_test = training_set["snapshot_month"].isin(test_months)
    relabelled = training_set.copy()
    relabelled.loc[in_test, "churned"] = np.random.default_rng(3).permutation(relabelled.loc[in_test, "churned"])
    again = train_churn_candidate(relabelled, FEATURES, replace(SMALL, backtest_windows=0))
    assert again.metrics["model_family"] == candidate.metrics["model_family"]
    assert again.metrics["model_setting"] == candidate.metrics["model_setting"]
    assert again.threshold == candidate.threshold
    np.testing.assert_array_equal(again.validation_scores, candidate.validation_scores)
    assert again.metrics["roc_auc"] != candidate.metrics["roc_auc"]


def test_rolling_backtest_refits_the_recipe_one_and_two_months_back(candidate):
    metrics = candidate.metrics
    windows = metrics["rolling_roc_auc_backtest"]
    assert [window["test_snapshots"] for window in windows] == [
        ["2017-09", "2017-10", "2017-11"], ["2017-08", "2017-09", "2017-10"]
    ]
    aucs = [metrics["roc_auc"]] + [window["roc_auc"]["estimate"] for window in windows]
    assert metrics["rolling_roc_auc_windows"] == 3
    assert metrics["rolling_roc_auc_mean"] == pytest.approx(np.mean(aucs))
    for window in windows:
        assert window["roc_auc"]["low"] < window["roc_auc"]["estimate"] < window["roc_auc"]["high"]


def test_a_history_without_room_for_earlier_windows_scores_one_window(training_set):
    latest = training_set[training_set["snapshot_month"] >= "2017-03-01"]
    metrics = train_churn_candidate(latest, FEATURES, replace(SMALL, families=(BOOSTING,))).metrics
    assert metrics["rolling_roc_auc_windows"] == 1
    assert metrics["rolling_roc_auc_mean"] == metrics["roc_auc"]


def test_paired_member_bootstrap_intervals():
    rng = np.random.default_rng(0)
    members = np.repeat(np.arange(1500), 2)
    labels = (rng.random(members.size) < 0.1).astype(int)
    strong = labels + rng.normal(0, 0.6, members.size)
    weak = strong + rng.normal(0, 0.6, members.size)  # the same ranking, blurred: correlated scores
    intervals = member_bootstrap_auc(
        labels, members, {"strong": strong, "weak": weak, "same": strong},
        [("strong", "weak"), ("strong", "same")], rounds=200, seed=1,
    )
    gain = intervals["strong - weak"]
    assert gain["estimate"] == pytest.approx(intervals["strong"]["estimate"] - intervals["weak"]["estimate"])
    assert 0 < gain["low"] < gain["estimate"] < gain["high"]
    assert intervals["strong - same"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    # Pairing: the difference of correlated scores is tighter than either AUC's own interval.
    assert gain["high"] - gain["low"] < intervals["weak"]["high"] - intervals["weak"]["low"]


def test_calibration_report_by_hand():
    labels = np.array([0] * 18 + [1, 1])
    scores = np.linspace(0.01, 0.2, 20)
    report = calibration_report(labels, scores, reference_rate=0.1)
    assert report["mean_predicted"] == pytest.approx(scores.mean())
    assert report["realised_rate"] == pytest.approx(0.1)
    assert report["calibration_in_the_large"] == pytest.approx(scores.mean() / 0.1)
    brier = np.mean((labels - scores) ** 2)
    assert report["brier_skill"] == pytest.approx(1 - brier / np.mean((labels - 0.1) ** 2))
    assert [row["members"] for row in report["reliability"]] == [2] * 10
    assert report["reliability"][-1]["realised_rate"] == 1.0
    assert report["reliability"][0]["mean_predicted"] == pytest.approx(scores[:2].mean())


def test_calibration_of_the_candidate_is_right_on_average(candidate):
    calibration = candidate.metrics["calibration"]
    assert abs(calibration["calibration_in_the_large"] - 1) < 0.25
    assert calibration["brier_skill"] > 0


def test_calibration_is_right_on_average_on_the_validation_snapshots(candidate):
    """Platt scaling on the validation snapshots (the latest mature months before the test's
    label windows) makes the mean predicted there the realised churn rate."""
    realised = candidate.validation_labels.mean()
    assert candidate.validation_scores.mean() == pytest.approx(realised, rel=0.02)


def _labels_at_rates(scores: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Exactly ``rate`` churners among the rows sharing a rate (every k-th row), no sampling noise."""
    labels = np.zeros(scores.size, dtype=int)
    for rate in np.unique(rates):
        rows = np.flatnonzero(rates == rate)
        labels[rows[:: int(round(1 / rate))]] = 1
    return labels


def test_tiers_that_do_not_separate_are_merged_into_the_lower_one():
    scores = np.linspace(0.0, 1.0, 20_000, endpoint=False)
    cutoffs = {"Medium": 0.6, "High": 0.85, "Critical": 0.95}
    medium_like_high = _labels_at_rates(scores, np.select([scores > 0.95, scores > 0.6], [0.2, 0.02], 0.005))
    merged, merges = separated_tier_cutoffs(cutoffs, scores, medium_like_high)
    assert merged == {"Medium": 0.6, "High": 0.95, "Critical": 0.95}
    assert [(merge["merged"], merge["into"]) for merge in merges] == [("High", "Medium")]
    assert merges[0]["low"] <= 0 <= merges[0]["high"]

    only_critical = _labels_at_rates(scores, np.where(scores > 0.95, 0.2, 0.01))
    merged, merges = separated_tier_cutoffs(cutoffs, scores, only_critical)
    assert merged == {"Medium": 0.95, "High": 0.95, "Critical": 0.95}
    assert [(merge["merged"], merge["into"]) for merge in merges] == [("Medium", "Low"), ("High", "Low")]

    rates = np.select([scores > 0.95, scores > 0.85, scores > 0.6], [0.25, 0.1, 0.025], 0.005)
    assert separated_tier_cutoffs(cutoffs, scores, _labels_at_rates(scores, rates)) == (cutoffs, [])


def make_context_driven_set(n_members: int = 3000, n_snapshots: int = 9, seed: int = 11) -> pd.DataFrame:
    """Churn driven only by tenure (a renewal window) and promotion enrollment; the rest is noise."""
    frame = make_training_set(n_members, n_snapshots, seed)
    rng = np.random.default_rng(seed + 1)
    renewal = (frame["tenure_months"].to_numpy() % 12 >= 10).astype(float)
    logit = -4.2 + 2.2 * frame["promotion_enrollment"].to_numpy() + 1.8 * renewal
    logit += 1.2 * (frame["tenure_months"].to_numpy() < 12)
    signals = [f"signal_{i}" for i in range(4)]
    frame[signals] = rng.normal(size=(len(frame), 4))
    return frame.assign(churned=(rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype("int64"))


def test_old_forest_on_two_snapshots_fails_the_strong_baseline_gate():
    """The seed's recipe (one forest setting, 2 test + 1 validation snapshots, two training
    snapshots) cannot beat a gradient-boosted tenure + promotion baseline on context-driven churn."""
    context_driven = make_context_driven_set()
    old_recipe = ChurnTrainingConfig(
        n_estimators=100, test_snapshots=2, validation_snapshots=1, families=(FOREST,),
        forest_settings=({"min_samples_leaf": 25, "max_features": "sqrt"},), backtest_windows=0, bootstrap_rounds=200,
    )
    assert len(split_out_of_time(context_driven, old_recipe).train_snapshots) == 2
    metrics = train_churn_candidate(context_driven, FEATURES, old_recipe).metrics
    assert metrics["baseline_roc_auc"] > 0.7
    passed, message = gate_beats_baseline(metrics, ChurnGateConfig().baseline_margin)
    assert passed is False, message
