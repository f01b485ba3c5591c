"""Churn model: out-of-time split, champion/challenger families, calibration, threshold, gates, leakage guard.

Input is the ``churn_training_set`` table of docs/design.md: ``loyalty_number``, ``snapshot_month``
(first day of the snapshot month), ``history_months``, the feature columns and ``churned``
(1 = cancels in a month in ``(s, s + horizon]``).

Pipeline of :func:`train_churn_candidate`:

1. :func:`split_out_of_time` cuts by snapshot month (never randomly): the latest snapshots are the
   test set, the validation snapshots come before them, every earlier mature snapshot is training
   data, with an embargo of ``horizon`` months at both cuts (see :class:`ChurnTrainingConfig`).
2. Two model families are fitted on the training snapshots: the RandomForest (median imputation,
   one-hot categories) and a HistGradientBoosting challenger (native categories and missing
   values), each with a few settings. The setting with the best *validation* ROC-AUC wins; the
   test period is never used to choose.
3. The winner's probabilities are calibrated on the validation snapshots (sigmoid) through
   ``CalibratedClassifierCV(FrozenEstimator(pipeline))``, so the model is never refitted.
4. The evaluation threshold is the highest one whose validation recall reaches the target.
5. Test metrics, calibration reports and a gradient-boosted tenure/promotion baseline are recorded;
   paired member-bootstrap intervals compare candidate and baseline on the same test rows.
6. Rolling backtest: the winning recipe is refitted on the windows ending one and two months
   earlier, and the gates read the average test ROC-AUC over the windows.

The gates are small pure functions over the metrics, with defaults in :class:`ChurnGateConfig`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    PrecisionRecallDisplay,
    RocCurveDisplay,
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from loyalty_assets.domain.experiments import newcombe_difference
from loyalty_assets.domain.features import CATEGORICAL_FEATURES
from loyalty_assets.domain.figures import figure_png, new_figure
from loyalty_assets.domain.labels import LABEL_COLUMN
from loyalty_assets.domain.scoring import RISK_TIERS, assign_tiers

KEY_COLUMNS = ["loyalty_number", "snapshot_month"]
BASELINE_FEATURES = ["tenure_months", "promotion_enrollment"]

FOREST = "random_forest"
BOOSTING = "hist_gradient_boosting"
MODEL_FAMILIES = (FOREST, BOOSTING)
# A handful of settings per family, chosen on the validation period only.
FOREST_SETTINGS: tuple[Mapping[str, Any], ...] = (
    {"min_samples_leaf": 25, "max_features": "sqrt"},
    {"min_samples_leaf": 50, "max_features": "sqrt"},
    {"min_samples_leaf": 100, "max_features": 0.5},
)
BOOSTING_SETTINGS: tuple[Mapping[str, Any], ...] = (
    {"learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 15, "min_samples_leaf": 100},
    {"learning_rate": 0.05, "max_iter": 300, "max_leaf_nodes": 7, "min_samples_leaf": 200, "l2_regularization": 1.0},
    {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31, "min_samples_leaf": 50},
)
BASELINE_SETTING: Mapping[str, Any] = {
    "learning_rate": 0.05, "max_iter": 200, "max_leaf_nodes": 7, "min_samples_leaf": 200
}
RELIABILITY_BINS = 10


@dataclass(frozen=True)
class ChurnTrainingConfig:
    """Model settings, split sizes and evaluation of a churn candidate.

    Class imbalance is handled only by ``class_weight`` inside the forest (no resampling); the
    calibration step maps the re-weighted scores back to real churn probabilities. The boosting
    family fits the plain log-loss, whose scores are already probabilities before calibration.

    ``max_rows_per_tree`` caps each tree's bootstrap sample (``max_samples``) so forest fit time
    stops growing with the history: with 200 trees every training row is still drawn by many
    trees. ``max_train_rows`` caps the training rows by a seeded sample of *members* (all of a
    sampled member's snapshots stay), so 24 months of a large programme still train in minutes.

    ``embargo_months`` (must be >= ``horizon_months``): every validation snapshot lies at least
    this many months before the first test snapshot, and every training snapshot at least this
    many months before the first validation snapshot. A label at ``s`` looks at ``(s, s + h]``,
    so with the embargo no training or validation label window reaches into the later period,
    and every member labelled positive earlier has cancelled before the later snapshots (is no
    longer eligible), so the model cannot recognise a validation or test churner it was trained
    on. The embargo at the validation cut keeps calibration, threshold and the choice of model
    honest: they are made on scores of members the model has not seen churn.

    The defaults split 12 months of history (9 mature snapshots with a 3-month horizon) and more;
    ``backtest_windows`` earlier windows are added when the history holds them (24 months do).
    """

    seed: int = 42
    n_estimators: int = 200
    class_weight: str = "balanced_subsample"
    n_jobs: int = 2
    test_snapshots: int = 2
    validation_snapshots: int = 2
    horizon_months: int = 3
    embargo_months: int = 3
    recall_target: float = 0.81
    max_rows_per_tree: int = 40_000
    max_train_rows: int = 150_000
    families: tuple[str, ...] = MODEL_FAMILIES
    forest_settings: tuple[Mapping[str, Any], ...] = FOREST_SETTINGS
    boosting_settings: tuple[Mapping[str, Any], ...] = BOOSTING_SETTINGS
    backtest_windows: int = 2
    bootstrap_rounds: int = 400

    def __post_init__(self) -> None:
        if self.embargo_months < self.horizon_months:
            raise ValueError(
                f"embargo_months ({self.embargo_months}) must be >= horizon_months "
                f"({self.horizon_months}): a shorter embargo lets training labels overlap the test period"
            )
        if self.test_snapshots < 1 or self.validation_snapshots < 1:
            raise ValueError("test_snapshots and validation_snapshots must both be >= 1")
        if not 0.0 < self.recall_target <= 1.0:
            raise ValueError(f"recall_target must be in (0, 1], got {self.recall_target}")
        if self.max_rows_per_tree < 1 or self.max_train_rows < 1:
            raise ValueError("max_rows_per_tree and max_train_rows must be >= 1")
        unknown = sorted(set(self.families) - set(MODEL_FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"families must be a non-empty subset of {list(MODEL_FAMILIES)}, got {self.families}")
        if self.backtest_windows < 0 or self.bootstrap_rounds < 1:
            raise ValueError("backtest_windows must be >= 0 and bootstrap_rounds >= 1")

    @property
    def minimum_snapshots(self) -> int:
        """Consecutive monthly snapshots needed: test + validation + two embargo gaps + one training month."""
        return self.test_snapshots + self.validation_snapshots + 2 * (self.embargo_months - 1) + 1

    def settings_of(self, family: str) -> tuple[Mapping[str, Any], ...]:
        return self.forest_settings if family == FOREST else self.boosting_settings


@dataclass(frozen=True)
class ChurnGateConfig:
    """Promotion gates of a churn candidate.

    On the real data honest models reach about 0.79 ROC-AUC averaged over rolling windows and the
    gradient-boosted tenure/promotion baseline about 0.775, so the 0.70 floor (on the rolling
    average) rejects only models without signal. The baseline and champion gates read the 95 %
    paired member-bootstrap interval of the ROC-AUC difference on the same test rows: the
    candidate must beat the baseline (lower bound > ``baseline_margin``, 0) and must not be
    worse than the champion (lower bound > -``champion_tolerance``). Paired intervals of two
    models of the same data are about +-0.01-0.025 wide, so a 0.03 tolerance lets an equal
    monthly refit through and stops a clear loss. ``recall_tolerance`` 0.10 allows for the
    threshold, tuned on earlier validation snapshots, to drift on the later test snapshots.
    """

    roc_auc_floor: float = 0.70
    baseline_margin: float = 0.0
    champion_tolerance: float = 0.03
    recall_tolerance: float = 0.10


@dataclass(frozen=True)
class OutOfTimeSplit:
    """Three disjoint row sets of a training set, cut by snapshot month."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    @property
    def train_snapshots(self) -> list[pd.Timestamp]:
        return _snapshots_of(self.train)

    @property
    def validation_snapshots(self) -> list[pd.Timestamp]:
        return _snapshots_of(self.validation)

    @property
    def test_snapshots(self) -> list[pd.Timestamp]:
        return _snapshots_of(self.test)


@dataclass(frozen=True)
class ChurnCandidate:
    """A trained, calibrated churn model with its threshold, evaluation and baseline.

    Score new rows with ``model.predict_proba(rows[feature_columns])[:, 1]`` (calibrated churn
    probability within ``config.horizon_months``). ``threshold`` is the evaluation threshold: the
    validation-chosen score at which recall reaches ``config.recall_target``.
    """

    model: CalibratedClassifierCV
    threshold: float
    metrics: dict
    feature_importances: dict[str, float]
    baseline: Pipeline
    test_scores: pd.DataFrame
    validation_scores: np.ndarray
    validation_labels: np.ndarray
    train_snapshots: list[pd.Timestamp]
    validation_snapshots: list[pd.Timestamp]
    test_snapshots: list[pd.Timestamp]
    feature_columns: list[str]
    config: ChurnTrainingConfig


def _snapshots_of(frame: pd.DataFrame) -> list[pd.Timestamp]:
    return [pd.Timestamp(value) for value in np.sort(frame["snapshot_month"].unique())]


def _month_labels(snapshots: list[pd.Timestamp]) -> list[str]:
    return [snapshot.strftime("%Y-%m") for snapshot in snapshots]


def _check_training_set(training_set: pd.DataFrame, feature_columns: list[str]) -> None:
    required = KEY_COLUMNS + [LABEL_COLUMN] + list(feature_columns) + BASELINE_FEATURES
    missing = [column for column in dict.fromkeys(required) if column not in training_set.columns]
    if missing:
        raise ValueError(f"training set lacks required columns: {missing}")
    if not pd.api.types.is_datetime64_any_dtype(training_set["snapshot_month"]):
        raise ValueError(f"snapshot_month must be datetime64, got {training_set['snapshot_month'].dtype}")
    labels = set(pd.unique(training_set[LABEL_COLUMN]).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"churned must hold only 0 and 1, found {sorted(labels)}")


def split_out_of_time(
    training_set: pd.DataFrame, config: ChurnTrainingConfig, months_back: int = 0
) -> OutOfTimeSplit:
    """Cut rows by snapshot month into train < validation < test, with the embargo of ``config``.

    The last ``config.test_snapshots`` snapshots are the test set; the validation set is the last
    ``config.validation_snapshots`` snapshots at least ``embargo_months`` before the first test
    snapshot; the training set is every snapshot at least ``embargo_months`` before the first
    validation snapshot. Snapshots inside an embargo gap are dropped. ``months_back`` first drops
    that many latest snapshots: the window of a rolling backtest.
    """
    snapshots = sorted(pd.to_datetime(training_set["snapshot_month"].unique()))
    snapshots = snapshots[: len(snapshots) - months_back]
    too_few = (
        f"out-of-time split needs at least {config.minimum_snapshots} consecutive monthly snapshots "
        f"({config.test_snapshots} test, {config.validation_snapshots} validation, "
        f"{config.embargo_months}-month embargo before validation and before test, 1 training); "
        f"the training set has {len(snapshots)}"
        + (f" after dropping the latest {months_back}" if months_back else "")
        + f": {_month_labels(snapshots)}"
    )
    if len(snapshots) < config.test_snapshots + config.validation_snapshots + 1:
        raise ValueError(too_few)
    test = snapshots[-config.test_snapshots :]
    validation_limit = test[0] - pd.DateOffset(months=config.embargo_months)
    validation = [s for s in snapshots if s <= validation_limit][-config.validation_snapshots :]
    if len(validation) < config.validation_snapshots:
        raise ValueError(too_few)
    train_limit = validation[0] - pd.DateOffset(months=config.embargo_months)
    train = [s for s in snapshots if s <= train_limit]
    if not train:
        raise ValueError(too_few)
    month = training_set["snapshot_month"]
    return OutOfTimeSplit(
        train=training_set[month.isin(train)].reset_index(drop=True),
        validation=training_set[month.isin(validation)].reset_index(drop=True),
        test=training_set[month.isin(test)].reset_index(drop=True),
    )


def evaluate_scores(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking, threshold and calibration metrics; a row is flagged when ``score >= threshold``."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=float)
    if np.unique(y_true).size < 2:
        raise ValueError(f"evaluation needs both churners and non-churners, got only class {np.unique(y_true)}")
    flagged = (scores >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y_true, scores)),
        "pr_auc": float(average_precision_score(y_true, scores)),
        "recall": float(recall_score(y_true, flagged, zero_division=0.0)),
        "precision": float(precision_score(y_true, flagged, zero_division=0.0)),
        "flagged_share": float(flagged.mean()),
        "brier": float(brier_score_loss(y_true, scores)),
    }


def threshold_for_recall(y_true: np.ndarray, scores: np.ndarray, recall_target: float) -> float:
    """Highest score threshold whose recall (flagging ``score >= threshold``) is >= ``recall_target``."""
    _, recall, thresholds = precision_recall_curve(y_true, scores)
    # recall[i] belongs to thresholds[i]; recall does not increase along the ascending thresholds.
    reaching = np.flatnonzero(recall[:-1] >= recall_target)
    return float(thresholds[reaching[-1]])


def categorical_columns(feature_columns: Sequence[str]) -> list[str]:
    """The feature columns holding small non-negative integer category codes (NaN = missing)."""
    return [column for column in feature_columns if column in CATEGORICAL_FEATURES]


def forest_pipeline(
    config: ChurnTrainingConfig, n_train: int, feature_columns: Sequence[str], setting: Mapping[str, Any]
) -> Pipeline:
    """Median imputation and one-hot categories (NaN its own category, unseen codes all-zero) -> forest."""
    categorical = categorical_columns(feature_columns)
    numeric = [column for column in feature_columns if column not in categorical]
    prepare = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
            # keep_empty_features: an all-NaN feature (companion share in the 8-column variant) keeps its column.
            ("numeric", SimpleImputer(strategy="median", keep_empty_features=True), numeric),
        ],
        verbose_feature_names_out=False,
    )
    forest = RandomForestClassifier(
        n_estimators=config.n_estimators,
        class_weight=config.class_weight,
        n_jobs=config.n_jobs,
        random_state=config.seed,
        max_samples=min(n_train, config.max_rows_per_tree),
        **setting,
    )
    return Pipeline([("prepare", prepare), ("forest", forest)])


def boosting_pipeline(
    config: ChurnTrainingConfig, feature_columns: Sequence[str], setting: Mapping[str, Any]
) -> Pipeline:
    """HistGradientBoosting with native categories and missing values; no early stopping, so the
    validation period alone judges the setting."""
    categorical = categorical_columns(feature_columns)
    # HistGradientBoosting cannot bin a feature that is missing on every training row (companion
    # share in the 8-column variant); such a column carries nothing and is dropped at fit.
    drop_empty = ColumnTransformer(
        [("all_missing", "drop", all_missing_columns)], remainder="passthrough", verbose_feature_names_out=False
    ).set_output(transform="pandas")
    boosting = HistGradientBoostingClassifier(
        categorical_features=categorical or None, early_stopping=False, random_state=config.seed, **setting
    )
    return Pipeline([("drop_empty", drop_empty), ("boosting", boosting)])


def all_missing_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if frame[column].isna().all()]


def model_pipeline(
    family: str, setting: Mapping[str, Any], config: ChurnTrainingConfig, feature_columns: Sequence[str], n_train: int
) -> Pipeline:
    if family == FOREST:
        return forest_pipeline(config, n_train, feature_columns, setting)
    return boosting_pipeline(config, feature_columns, setting)


def _fit(pipeline: Pipeline, rows: pd.DataFrame, feature_columns: Sequence[str]) -> Pipeline:
    pipeline.fit(rows[list(feature_columns)], rows[LABEL_COLUMN])
    if "forest" in pipeline.named_steps:
        # Threaded predict_proba adds the trees' votes in arbitrary order (last-bit differences);
        # predicting sequentially makes scores, threshold and metrics bit-for-bit reproducible.
        pipeline.named_steps["forest"].set_params(n_jobs=1)
    return pipeline


def _positive_scores(model, rows: pd.DataFrame, feature_columns: Sequence[str]) -> np.ndarray:
    return model.predict_proba(rows[list(feature_columns)])[:, 1]


def sample_training_members(train: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most about ``max_rows`` rows: a seeded sample of members with all their snapshots."""
    if len(train) <= max_rows:
        return train
    members = np.sort(train["loyalty_number"].unique())
    keep = int(len(members) * max_rows / len(train))
    chosen = np.random.default_rng(seed).permutation(members)[:keep]
    return train[train["loyalty_number"].isin(chosen)].reset_index(drop=True)


@dataclass(frozen=True)
class FittedSetting:
    family: str
    setting: Mapping[str, Any]
    pipeline: Pipeline
    validation_roc_auc: float


def tune_families(
    train: pd.DataFrame, validation: pd.DataFrame, feature_columns: Sequence[str], config: ChurnTrainingConfig
) -> dict[str, list[FittedSetting]]:
    """Every setting of every family fitted on the training rows and scored on the validation rows."""
    tried: dict[str, list[FittedSetting]] = {}
    for family in config.families:
        tried[family] = []
        for setting in config.settings_of(family):
            pipeline = model_pipeline(family, setting, config, feature_columns, len(train))
            _fit(pipeline, train, feature_columns)
            scores = _positive_scores(pipeline, validation, feature_columns)
            auc = roc_auc_score(validation[LABEL_COLUMN], scores)
            tried[family].append(FittedSetting(family, dict(setting), pipeline, float(auc)))
    return tried


def _best(settings: list[FittedSetting]) -> FittedSetting:
    return max(settings, key=lambda fitted: fitted.validation_roc_auc)  # first best on ties: deterministic


def baseline_pipeline(config: ChurnTrainingConfig) -> Pipeline:
    """Gradient-boosted tenure + promotion enrollment: the non-linear context a candidate must beat."""
    return boosting_pipeline(config, BASELINE_FEATURES, BASELINE_SETTING)


def member_bootstrap_auc(
    labels: np.ndarray,
    members: np.ndarray,
    scores: Mapping[str, np.ndarray],
    differences: Sequence[tuple[str, str]] = (),
    rounds: int = 400,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """ROC-AUC of each score, and of each paired difference ``a - b``, with 95 % percentile intervals.

    Members, not rows, are resampled (a member's snapshots are correlated), and each round scores
    every model on the same resampled rows, so a difference's interval is paired. scikit-learn
    has no bootstrap of a metric; ``roc_auc_score`` with the members' draw counts as weights does
    the scoring.
    """
    labels = np.asarray(labels)
    unique_members, member_index = np.unique(np.asarray(members), return_inverse=True)
    rng = np.random.default_rng(seed)
    names = list(scores) + [f"{a} - {b}" for a, b in differences]
    draws = {name: [] for name in names}
    for _ in range(rounds):
        weights = rng.multinomial(len(unique_members), np.full(len(unique_members), 1 / len(unique_members)))
        row_weights = weights[member_index]
        kept = row_weights > 0
        if np.unique(labels[kept]).size < 2:
            continue
        aucs = {
            name: roc_auc_score(labels[kept], np.asarray(values)[kept], sample_weight=row_weights[kept])
            for name, values in scores.items()
        }
        for name, auc in aucs.items():
            draws[name].append(auc)
        for a, b in differences:
            draws[f"{a} - {b}"].append(aucs[a] - aucs[b])
    estimates = {name: float(roc_auc_score(labels, values)) for name, values in scores.items()}
    estimates |= {f"{a} - {b}": estimates[a] - estimates[b] for a, b in differences}
    return {
        name: {
            "estimate": estimates[name],
            "low": float(np.quantile(draws[name], 0.025)),
            "high": float(np.quantile(draws[name], 0.975)),
        }
        for name in names
    }


def calibration_report(labels: np.ndarray, scores: np.ndarray, reference_rate: float) -> dict:
    """Calibration-in-the-large, Brier skill and a reliability table by score decile.

    ``calibration_in_the_large`` is mean predicted / realised churn (1 = right on average).
    ``brier_skill`` is ``1 - brier / brier(reference)``, the reference forecasting
    ``reference_rate`` (the validation churn rate, known at training time) for everyone.
    """
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    realised = float(labels.mean())
    reference_brier = float(np.mean((labels - reference_rate) ** 2))
    deciles = pd.qcut(pd.Series(scores).rank(method="first"), RELIABILITY_BINS, labels=False)
    table = (
        pd.DataFrame({"decile": deciles + 1, "predicted": scores, "realised": labels})
        .groupby("decile")
        .agg(members=("realised", "size"), mean_predicted=("predicted", "mean"), realised_rate=("realised", "mean"))
        .reset_index()
    )
    return {
        "mean_predicted": float(scores.mean()),
        "realised_rate": realised,
        "calibration_in_the_large": float(scores.mean() / realised) if realised > 0 else float("nan"),
        "brier_skill": 1.0 - float(brier_score_loss(labels, scores)) / reference_brier,
        "reliability": table.to_dict(orient="records"),
    }


def separated_tier_cutoffs(cutoffs: Mapping[str, float], scores: np.ndarray, labels: np.ndarray) -> tuple[dict, list]:
    """Capacity cut-offs with adjacent tiers merged where validation churn does not separate them.

    From Low upward, the next tier joins the group below when the 95 % Newcombe interval of the
    difference in realised churn contains 0. A merged tier keeps the lower name: its cut-off is
    raised to the next tier's, so it is empty and ``RISK_TIERS`` stay valid downstream. Critical is
    never merged away (it is the retention team's call list). Returns the cut-offs and the merges
    as ``[{"merged": "High", "into": "Medium", "difference": ..., "low": ..., "high": ...}]``.
    """
    tiers = np.asarray(assign_tiers(scores, dict(cutoffs)).codes)
    labels = np.asarray(labels)
    merges = []
    group = tiers == 0
    group_name = RISK_TIERS[0]
    for code in range(1, len(RISK_TIERS) - 1):
        tier = tiers == code
        if not tier.any():
            continue
        difference, low, high = newcombe_difference(
            int(labels[tier].sum()), int(tier.sum()), int(labels[group].sum()), int(group.sum())
        )
        if group.any() and low <= 0.0 <= high:
            merges.append(
                {"merged": RISK_TIERS[code], "into": group_name, "difference": difference, "low": low, "high": high}
            )
            group = group | tier
        else:
            group, group_name = tier, RISK_TIERS[code]
    merged_cutoffs = dict(cutoffs)
    merged = {merge["merged"] for merge in merges}
    for code in reversed(range(1, len(RISK_TIERS) - 1)):
        if RISK_TIERS[code] in merged:
            merged_cutoffs[RISK_TIERS[code]] = merged_cutoffs[RISK_TIERS[code + 1]]
    return merged_cutoffs, merges


def _family_summary(tried: list[FittedSetting], split: OutOfTimeSplit, feature_columns: Sequence[str]) -> dict:
    best = _best(tried)
    test_auc = roc_auc_score(split.test[LABEL_COLUMN], _positive_scores(best.pipeline, split.test, feature_columns))
    return {
        "setting": dict(best.setting),
        "validation_roc_auc": best.validation_roc_auc,
        "test_roc_auc": float(test_auc),
        "settings_tried": [
            {"setting": dict(fitted.setting), "validation_roc_auc": fitted.validation_roc_auc} for fitted in tried
        ],
    }


def rolling_backtest(
    training_set: pd.DataFrame, feature_columns: Sequence[str], config: ChurnTrainingConfig, family: str, setting
) -> list[dict]:
    """The recipe refitted on each earlier window the history holds (1..``backtest_windows`` months back)."""
    windows = []
    for months_back in range(1, config.backtest_windows + 1):
        try:
            split = split_out_of_time(training_set, config, months_back)
        except ValueError:
            break  # a shorter history holds fewer windows; the record says how many were scored
        if split.test[LABEL_COLUMN].nunique() < 2:
            break
        train = sample_training_members(split.train, config.max_train_rows, config.seed)
        pipeline = _fit(model_pipeline(family, setting, config, feature_columns, len(train)), train, feature_columns)
        scores = _positive_scores(pipeline, split.test, feature_columns)
        interval = member_bootstrap_auc(
            split.test[LABEL_COLUMN], split.test["loyalty_number"], {"model": scores},
            rounds=config.bootstrap_rounds, seed=config.seed,
        )["model"]
        windows.append(
            {"months_back": months_back, "test_snapshots": _month_labels(split.test_snapshots), "roc_auc": interval}
        )
    return windows


def permutation_importances(
    model, rows: pd.DataFrame, feature_columns: Sequence[str], seed: int, max_rows: int = 20_000
) -> dict[str, float]:
    """Validation ROC-AUC lost when a feature is shuffled, largest first: one measure for every family."""
    sample = rows.sample(n=min(max_rows, len(rows)), random_state=seed)
    result = permutation_importance(
        model, sample[list(feature_columns)], sample[LABEL_COLUMN], scoring="roc_auc", n_repeats=1,
        random_state=seed, n_jobs=1,
    )
    importances = pd.Series(result.importances_mean, index=list(feature_columns))
    importances = importances.sort_values(ascending=False, kind="stable")
    return {name: float(value) for name, value in importances.items()}


def train_churn_candidate(
    training_set: pd.DataFrame, feature_columns: list[str], config: ChurnTrainingConfig = ChurnTrainingConfig()
) -> ChurnCandidate:
    """Fit both families, pick on validation, calibrate, threshold and evaluate a churn candidate out of time.

    Calibration is ``sigmoid`` (Platt), not isotonic: the validation snapshots hold only a few
    hundred churners, where Platt scaling is the stabler choice, and being strictly monotone it
    keeps the model's ranking (test ROC-AUC is the model's own) without the ties of isotonic
    steps that would make the recall threshold jump in coarse steps.

    The validation snapshots are the latest mature months whose label windows end before the
    test's begin, so no later calibration window exists; calibration is right on average there by
    construction, and on the test only as far as the model scores the later population as it did
    the earlier one. A cohort the training snapshots precede breaks that: in the sample data the
    promotion enrollees (from 2025-12, churning 3-6 times as often) are scored like any new member
    because ``promotion_enrollment`` is 0 on every training snapshot, so the test mean falls ~16 % short.
    """
    feature_columns = list(feature_columns)
    _check_training_set(training_set, feature_columns)
    split = split_out_of_time(training_set, config)
    for name, part in (("validation", split.validation), ("test", split.test)):
        if part[LABEL_COLUMN].nunique() < 2:
            raise ValueError(f"{name} snapshots {_month_labels(_snapshots_of(part))} hold only one class of churned")

    train = sample_training_members(split.train, config.max_train_rows, config.seed)
    tried = tune_families(train, split.validation, feature_columns, config)
    chosen = _best([_best(settings) for settings in tried.values()])
    model = CalibratedClassifierCV(FrozenEstimator(chosen.pipeline), method="sigmoid")
    model.fit(split.validation[feature_columns], split.validation[LABEL_COLUMN])

    validation_labels = split.validation[LABEL_COLUMN].to_numpy()
    validation_scores = _positive_scores(model, split.validation, feature_columns)
    threshold = threshold_for_recall(validation_labels, validation_scores, config.recall_target)
    test_labels = split.test[LABEL_COLUMN].to_numpy()
    test_score = _positive_scores(model, split.test, feature_columns)

    baseline = _fit(baseline_pipeline(config), train, BASELINE_FEATURES)
    baseline_test_score = _positive_scores(baseline, split.test, BASELINE_FEATURES)
    intervals = member_bootstrap_auc(
        test_labels, split.test["loyalty_number"], {"candidate": test_score, "baseline": baseline_test_score},
        [("candidate", "baseline")], rounds=config.bootstrap_rounds, seed=config.seed,
    )
    backtest = rolling_backtest(training_set, feature_columns, config, chosen.family, chosen.setting)
    rolling_aucs = [intervals["candidate"]["estimate"]] + [window["roc_auc"]["estimate"] for window in backtest]

    test_metrics = evaluate_scores(test_labels, test_score, threshold)
    validation_metrics = evaluate_scores(validation_labels, validation_scores, threshold)
    validation_rate = float(validation_labels.mean())
    metrics = {
        **test_metrics,
        "threshold": threshold,
        "roc_auc_low": intervals["candidate"]["low"],
        "roc_auc_high": intervals["candidate"]["high"],
        "baseline_roc_auc": intervals["baseline"]["estimate"],
        "baseline_roc_auc_low": intervals["baseline"]["low"],
        "baseline_roc_auc_high": intervals["baseline"]["high"],
        "baseline_pr_auc": float(average_precision_score(test_labels, baseline_test_score)),
        "baseline_difference": intervals["candidate - baseline"]["estimate"],
        "baseline_difference_low": intervals["candidate - baseline"]["low"],
        "baseline_difference_high": intervals["candidate - baseline"]["high"],
        "rolling_roc_auc_mean": float(np.mean(rolling_aucs)),
        "rolling_roc_auc_windows": len(rolling_aucs),
        "rolling_roc_auc_backtest": backtest,
        "model_family": chosen.family,
        "model_setting": dict(chosen.setting),
        "families": {family: _family_summary(settings, split, feature_columns) for family, settings in tried.items()},
        "calibration": calibration_report(test_labels, test_score, validation_rate),
        **{f"validation_{name}": value for name, value in validation_metrics.items()},
        "n_train": len(split.train),
        "n_train_fitted": len(train),
        "n_validation": len(split.validation),
        "n_test": len(split.test),
        "train_positive_rate": float(split.train[LABEL_COLUMN].mean()),
        "validation_positive_rate": validation_rate,
        "test_positive_rate": float(test_labels.mean()),
        "train_snapshots": _month_labels(split.train_snapshots),
        "validation_snapshots": _month_labels(split.validation_snapshots),
        "test_snapshots": _month_labels(split.test_snapshots),
        "recall_target": config.recall_target,
        "n_features": len(feature_columns),
    }
    test_scores = split.test[KEY_COLUMNS + [LABEL_COLUMN]].assign(score=test_score, baseline_score=baseline_test_score)
    return ChurnCandidate(
        model=model,
        threshold=threshold,
        metrics=metrics,
        feature_importances=permutation_importances(model, split.validation, feature_columns, config.seed),
        baseline=baseline,
        test_scores=test_scores,
        validation_scores=validation_scores,
        validation_labels=validation_labels,
        train_snapshots=split.train_snapshots,
        validation_snapshots=split.validation_snapshots,
        test_snapshots=split.test_snapshots,
        feature_columns=feature_columns,
        config=config,
    )


def _champion_rows(test_rows: pd.DataFrame, feature_columns: list[str]) -> pd.DataFrame:
    missing = [column for column in feature_columns if column not in test_rows.columns]
    if missing:
        raise ValueError(f"test rows lack the champion's feature columns: {missing}")
    return test_rows[list(feature_columns)]


def score_champion_on(candidate_test_rows: pd.DataFrame, champion_model, feature_columns: list[str]) -> float:
    """ROC-AUC of another model (e.g. the promoted champion) on the candidate's test rows.

    ``candidate_test_rows`` is ``split_out_of_time(training_set, config).test``; ``feature_columns``
    are the champion's own (``champion.feature_columns``), which must all be present.
    """
    scores = champion_model.predict_proba(_champion_rows(candidate_test_rows, feature_columns))[:, 1]
    return float(roc_auc_score(candidate_test_rows[LABEL_COLUMN], scores))


def leakage_violations(
    training_set: pd.DataFrame,
    split: OutOfTimeSplit,
    recompute_features: Callable[[list[pd.Timestamp]], pd.DataFrame] | None,
    sample_size: int = 500,
    seed: int = 0,
) -> list[str]:
    """Human-readable leakage findings; an empty list means none were found.

    Checks: (1) a (member, snapshot) row in two of train / validation / test; (2) a test snapshot
    not strictly after every train and validation snapshot; (3) when ``recompute_features`` is
    given, for ``sample_size`` random rows the features recomputed point-in-time (the callable
    returns the feature table for the given snapshots from activity truncated at each snapshot)
    must equal the training-set values (``np.isclose``, NaN equals NaN) in every column both
    tables share, except the label.
    """
    violations: list[str] = []
    parts = {"train": split.train, "validation": split.validation, "test": split.test}
    names = list(parts)
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            shared = parts[first][KEY_COLUMNS].merge(parts[second][KEY_COLUMNS], on=KEY_COLUMNS).drop_duplicates()
            violations += (
                "member "
                + shared["loyalty_number"].astype(str)
                + f" is in both {first} and {second} for snapshot "
                + shared["snapshot_month"].dt.strftime("%Y-%m")
            ).tolist()

    earlier = split.train_snapshots + split.validation_snapshots
    if earlier and split.test_snapshots and min(split.test_snapshots) <= max(earlier):
        violations.append(
            f"test snapshot {min(split.test_snapshots):%Y-%m} is not after every train/validation "
            f"snapshot (latest {max(earlier):%Y-%m})"
        )

    if recompute_features is not None:
        violations += _point_in_time_mismatches(training_set, recompute_features, sample_size, seed)
    return violations


def _point_in_time_mismatches(
    training_set: pd.DataFrame,
    recompute_features: Callable[[list[pd.Timestamp]], pd.DataFrame],
    sample_size: int,
    seed: int,
) -> list[str]:
    sample = training_set.sample(n=min(sample_size, len(training_set)), random_state=seed)
    recomputed = recompute_features(_snapshots_of(sample))
    compared = [c for c in sample.columns if c in recomputed.columns and c not in KEY_COLUMNS + [LABEL_COLUMN]]
    joined = sample[KEY_COLUMNS + compared].merge(
        recomputed[KEY_COLUMNS + compared], on=KEY_COLUMNS, how="left", suffixes=("", "_recomputed"), indicator=True
    )
    found = joined["_merge"] == "both"
    missing = joined.loc[~found, KEY_COLUMNS]
    messages = (
        "member "
        + missing["loyalty_number"].astype(str)
        + " at snapshot "
        + missing["snapshot_month"].dt.strftime("%Y-%m")
        + ": row missing from the point-in-time recompute"
    ).tolist()

    joined = joined[found]
    stored = joined[compared].to_numpy(dtype=float)
    fresh = joined[[f"{c}_recomputed" for c in compared]].to_numpy(dtype=float)
    rows, columns = np.nonzero(~np.isclose(stored, fresh, equal_nan=True))
    mismatches = pd.DataFrame(
        {
            "member": joined["loyalty_number"].to_numpy()[rows].astype(str),
            "snapshot": joined["snapshot_month"].dt.strftime("%Y-%m").to_numpy()[rows],
            "feature": np.asarray(compared, dtype=object)[columns],
            "stored": stored[rows, columns].astype(str),
            "fresh": fresh[rows, columns].astype(str),
        }
    )
    messages += (
        "member " + mismatches["member"] + " at snapshot " + mismatches["snapshot"] + ": feature "
        + mismatches["feature"] + " is " + mismatches["stored"] + " in the training set but "
        + mismatches["fresh"] + " when recomputed point-in-time"
    ).tolist()
    return messages


def gate_roc_auc_floor(metrics: dict, floor: float = ChurnGateConfig.roc_auc_floor) -> tuple[bool, str]:
    """The test ROC-AUC averaged over the rolling windows must reach ``floor``."""
    auc, windows = metrics["rolling_roc_auc_mean"], metrics["rolling_roc_auc_windows"]
    return auc >= floor, (
        f"test ROC-AUC averaged over {windows} rolling window(s) {auc:.3f} {'>=' if auc >= floor else '<'} "
        f"floor {floor:.3f}"
    )


def gate_beats_baseline(metrics: dict, margin: float = ChurnGateConfig.baseline_margin) -> tuple[bool, str]:
    """The 95 % lower bound of the paired ROC-AUC gain over the baseline must exceed ``margin``."""
    low, high = metrics["baseline_difference_low"], metrics["baseline_difference_high"]
    passed = low > margin
    return passed, (
        f"test ROC-AUC {metrics['roc_auc']:.3f} vs baseline {metrics['baseline_roc_auc']:.3f}: paired gain "
        f"{metrics['baseline_difference']:+.3f} (95% {low:+.3f} to {high:+.3f}), lower bound "
        f"{'>' if passed else '<='} {margin:+.3f}"
    )


def compare_with_champion(
    test_rows: pd.DataFrame, candidate_scores, champion_model, champion_features: list[str], rounds: int, seed: int
) -> dict[str, dict[str, float]]:
    """Champion ROC-AUC and the paired candidate - champion difference on the candidate's test rows.

    ``test_rows`` is ``split_out_of_time(training_set, config).test``; ``candidate_scores`` the
    candidate's scores of those rows in the same order.
    """
    champion_scores = champion_model.predict_proba(_champion_rows(test_rows, champion_features))[:, 1]
    return member_bootstrap_auc(
        test_rows[LABEL_COLUMN], test_rows["loyalty_number"],
        {"candidate": np.asarray(candidate_scores), "champion": champion_scores},
        [("candidate", "champion")], rounds=rounds, seed=seed,
    )


def gate_not_worse_than_champion(
    difference: Mapping[str, float] | None, tolerance: float = ChurnGateConfig.champion_tolerance
) -> tuple[bool, str]:
    """The 95 % lower bound of the paired candidate - champion ROC-AUC difference must exceed
    ``-tolerance``; passes without a champion."""
    if difference is None:
        return True, "no champion yet"
    passed = difference["low"] > -tolerance
    return passed, (
        f"candidate - champion ROC-AUC on the same test rows {difference['estimate']:+.3f} "
        f"(95% {difference['low']:+.3f} to {difference['high']:+.3f}), lower bound "
        f"{'>' if passed else '<='} -{tolerance:.3f}"
    )


def gate_recall(
    metrics: dict, target: float = ChurnTrainingConfig.recall_target, tolerance: float = ChurnGateConfig.recall_tolerance
) -> tuple[bool, str]:
    """Test recall at the validation-chosen evaluation threshold must be >= ``target - tolerance``."""
    recall = metrics["recall"]
    passed = recall >= target - tolerance
    return passed, (
        f"test recall {recall:.3f} {'>=' if passed else '<'} target {target:.3f} - tolerance {tolerance:.3f}"
    )


def run_churn_gates(
    metrics: dict, champion_difference: Mapping[str, float] | None, gate_config: ChurnGateConfig = ChurnGateConfig()
) -> dict[str, tuple[bool, str]]:
    """All four gates by name; ``metrics["recall_target"]`` is the recall target."""
    return {
        "roc_auc_floor": gate_roc_auc_floor(metrics, gate_config.roc_auc_floor),
        "beats_baseline": gate_beats_baseline(metrics, gate_config.baseline_margin),
        "not_worse_than_champion": gate_not_worse_than_champion(champion_difference, gate_config.champion_tolerance),
        "recall": gate_recall(metrics, metrics["recall_target"], gate_config.recall_tolerance),
    }


def evaluation_plot_png(test_scores: pd.DataFrame) -> bytes:
    """ROC and precision-recall curves of the test scores (and the baseline's, when present) as PNG bytes."""
    figure = new_figure(6, 3)
    roc_axes, pr_axes = figure.subplots(1, 2)
    curves = [("model", "score")] + ([("baseline", "baseline_score")] if "baseline_score" in test_scores else [])
    for name, column in curves:
        RocCurveDisplay.from_predictions(test_scores[LABEL_COLUMN], test_scores[column], ax=roc_axes, name=name)
        PrecisionRecallDisplay.from_predictions(test_scores[LABEL_COLUMN], test_scores[column], ax=pr_axes, name=name)
    roc_axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    roc_axes.set(title="ROC (test)", xlabel="False positive rate", ylabel="True positive rate (recall)")
    pr_axes.set(title="Precision-recall (test)", xlabel="Recall", ylabel="Precision")
    for axes in (roc_axes, pr_axes):
        axes.title.set_fontsize(9)
        axes.legend(fontsize=6, loc="lower right" if axes is roc_axes else "upper right")
        axes.tick_params(labelsize=7)
        axes.xaxis.label.set_fontsize(7)
        axes.yaxis.label.set_fontsize(7)
    return figure_png(figure)


def data_fingerprint(training_set: pd.DataFrame) -> str:
    """sha256 of the table's content (column names, dtypes, row values in order), independent of file format."""
    digest = hashlib.sha256()
    digest.update(repr([(str(name), str(dtype)) for name, dtype in training_set.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(training_set, index=False).to_numpy().tobytes())
    return digest.hexdigest()
