"""Churn model: out-of-time split, training, calibration, threshold, evaluation, gates, leakage guard.

Input is the ``churn_training_set`` table of docs/design.md: ``loyalty_number``, ``snapshot_month``
(first day of the snapshot month), ``history_months``, the feature columns and ``churned``
(1 = cancels in a month in ``(s, s + horizon]``).

Pipeline of :func:`train_churn_candidate`:

1. :func:`split_out_of_time` cuts by snapshot month (never randomly): the latest snapshots are the
   test set, the validation snapshots come before them, the training snapshots before those, with
   an embargo of ``horizon`` months at both cuts (see :class:`ChurnTrainingConfig`).
2. ``SimpleImputer -> RandomForestClassifier`` is fitted on the training snapshots only.
3. Its probabilities are calibrated on the validation snapshots (sigmoid, see below) through
   ``CalibratedClassifierCV(FrozenEstimator(pipeline))``, so the forest is never refitted.
4. The decision threshold is the highest one whose validation recall reaches the target.
5. Test metrics, a tenure/promotion logistic baseline and the test scores are recorded.

The gates are small pure functions over the metrics, with defaults in :class:`ChurnGateConfig`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
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
from sklearn.preprocessing import StandardScaler

from loyalty_assets.domain.figures import figure_png, new_figure
from loyalty_assets.domain.labels import LABEL_COLUMN

KEY_COLUMNS = ["loyalty_number", "snapshot_month"]
BASELINE_FEATURES = ["tenure_months", "promotion_enrollment"]


@dataclass(frozen=True)
class ChurnTrainingConfig:
    """Hyper-parameters and split sizes of a churn candidate.

    Class imbalance is handled only by ``class_weight`` inside the forest (no resampling); the
    calibration step maps the re-weighted scores back to real churn probabilities.

    ``max_rows_per_tree`` caps each tree's bootstrap sample (``max_samples``) so fit time stops
    growing with the look-back window: a full bootstrap of 140k rows costs about 0.65 CPU-s per
    tree, a 40k-row one about 0.2 s, at the same test ROC-AUC on synthetic data; with 300 trees
    every training row is still drawn by many trees.

    ``embargo_months`` (must be >= ``horizon_months``): every validation snapshot lies at least
    this many months before the first test snapshot, and every training snapshot at least this
    many months before the first validation snapshot. A label at ``s`` looks at ``(s, s + h]``,
    so with the embargo no training or validation label window reaches into the later period,
    and every member labelled positive earlier has cancelled before the later snapshots (is no
    longer eligible), so the forest cannot recognise a validation or test churner it was
    trained on. The embargo at the validation cut keeps calibration and threshold honest: they
    are tuned on scores of members the forest has not seen churn.
    """

    seed: int = 42
    n_estimators: int = 300
    min_samples_leaf: int = 25
    max_features: str | float | int = "sqrt"
    class_weight: str = "balanced_subsample"
    n_jobs: int = 2
    test_snapshots: int = 3
    validation_snapshots: int = 2
    horizon_months: int = 3
    embargo_months: int = 3
    recall_target: float = 0.81
    max_rows_per_tree: int = 40_000

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
        if self.max_rows_per_tree < 1:
            raise ValueError(f"max_rows_per_tree must be >= 1, got {self.max_rows_per_tree}")

    @property
    def minimum_snapshots(self) -> int:
        """Consecutive monthly snapshots needed: test + validation + two embargo gaps + one training month."""
        return self.test_snapshots + self.validation_snapshots + 2 * (self.embargo_months - 1) + 1


@dataclass(frozen=True)
class ChurnGateConfig:
    """Promotion gates of a churn candidate.

    Defaults are set so an honest model on the real data passes: honest models reach about
    0.74-0.78 test ROC-AUC and a tenure/promotion baseline about 0.65-0.72, so a 0.70 floor and
    a 0.02 margin over the baseline reject only models without signal of their own.
    ``champion_tolerance`` 0.02 is about the sampling noise of ROC-AUC on a few hundred test
    churners. ``recall_tolerance`` 0.10 allows for the threshold, tuned on earlier validation
    snapshots, to drift on the later test snapshots.
    """

    roc_auc_floor: float = 0.70
    baseline_margin: float = 0.02
    champion_tolerance: float = 0.02
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
    probability within ``config.horizon_months``); flag those with a score ``>= threshold``.
    """

    model: CalibratedClassifierCV
    threshold: float
    metrics: dict
    feature_importances: dict[str, float]
    baseline: Pipeline
    test_scores: pd.DataFrame
    validation_scores: np.ndarray
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


def split_out_of_time(training_set: pd.DataFrame, config: ChurnTrainingConfig) -> OutOfTimeSplit:
    """Cut rows by snapshot month into train < validation < test, with the embargo of ``config``.

    The last ``config.test_snapshots`` snapshots are the test set; the validation set is the last
    ``config.validation_snapshots`` snapshots at least ``embargo_months`` before the first test
    snapshot; the training set is every snapshot at least ``embargo_months`` before the first
    validation snapshot. Snapshots inside an embargo gap are dropped.
    """
    snapshots = sorted(pd.to_datetime(training_set["snapshot_month"].unique()))
    too_few = (
        f"out-of-time split needs at least {config.minimum_snapshots} consecutive monthly snapshots "
        f"({config.test_snapshots} test, {config.validation_snapshots} validation, "
        f"{config.embargo_months}-month embargo before validation and before test, 1 training); "
        f"the training set has {len(snapshots)}: {_month_labels(snapshots)}"
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


def forest_pipeline(config: ChurnTrainingConfig, n_train: int) -> Pipeline:
    return Pipeline(
        [
            # keep_empty_features: an all-NaN feature (companion share in the 8-column variant) keeps its column.
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            (
                "forest",
                RandomForestClassifier(
                    n_estimators=config.n_estimators,
                    min_samples_leaf=config.min_samples_leaf,
                    max_features=config.max_features,
                    class_weight=config.class_weight,
                    n_jobs=config.n_jobs,
                    random_state=config.seed,
                    max_samples=min(n_train, config.max_rows_per_tree),
                ),
            ),
        ]
    )


def _baseline_pipeline() -> Pipeline:
    # The imputer covers NaN category codes (values unknown to the features module).
    return Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler()), ("logistic", LogisticRegression())]
    )


def train_churn_candidate(
    training_set: pd.DataFrame, feature_columns: list[str], config: ChurnTrainingConfig = ChurnTrainingConfig()
) -> ChurnCandidate:
    """Fit, calibrate, threshold and evaluate a churn candidate out of time.

    Calibration is ``sigmoid`` (Platt), not isotonic: the validation snapshots hold only a few
    hundred churners, where Platt scaling is the stabler choice, and being strictly monotone it
    keeps the forest's ranking (test ROC-AUC is the forest's own) without the ties of isotonic
    steps that would make the recall threshold jump in coarse steps.
    """
    feature_columns = list(feature_columns)
    _check_training_set(training_set, feature_columns)
    split = split_out_of_time(training_set, config)
    for name, part in (("validation", split.validation), ("test", split.test)):
        if part[LABEL_COLUMN].nunique() < 2:
            raise ValueError(f"{name} snapshots {_month_labels(_snapshots_of(part))} hold only one class of churned")

    forest = forest_pipeline(config, len(split.train)).fit(split.train[feature_columns], split.train[LABEL_COLUMN])
    # Threaded predict_proba adds the trees' votes in arbitrary order (last-bit differences);
    # predicting sequentially makes scores, threshold and metrics bit-for-bit reproducible.
    forest.named_steps["forest"].set_params(n_jobs=1)
    model = CalibratedClassifierCV(FrozenEstimator(forest), method="sigmoid")
    model.fit(split.validation[feature_columns], split.validation[LABEL_COLUMN])

    validation_scores = model.predict_proba(split.validation[feature_columns])[:, 1]
    threshold = threshold_for_recall(split.validation[LABEL_COLUMN], validation_scores, config.recall_target)
    test_score = model.predict_proba(split.test[feature_columns])[:, 1]

    baseline = _baseline_pipeline().fit(split.train[BASELINE_FEATURES], split.train[LABEL_COLUMN])
    baseline_test_score = baseline.predict_proba(split.test[BASELINE_FEATURES])[:, 1]

    test_metrics = evaluate_scores(split.test[LABEL_COLUMN], test_score, threshold)
    validation_metrics = evaluate_scores(split.validation[LABEL_COLUMN], validation_scores, threshold)
    metrics = {
        **test_metrics,
        "threshold": threshold,
        "baseline_roc_auc": float(roc_auc_score(split.test[LABEL_COLUMN], baseline_test_score)),
        "baseline_pr_auc": float(average_precision_score(split.test[LABEL_COLUMN], baseline_test_score)),
        **{f"validation_{name}": value for name, value in validation_metrics.items()},
        "n_train": len(split.train),
        "n_validation": len(split.validation),
        "n_test": len(split.test),
        "train_positive_rate": float(split.train[LABEL_COLUMN].mean()),
        "validation_positive_rate": float(split.validation[LABEL_COLUMN].mean()),
        "test_positive_rate": float(split.test[LABEL_COLUMN].mean()),
        "train_snapshots": _month_labels(split.train_snapshots),
        "validation_snapshots": _month_labels(split.validation_snapshots),
        "test_snapshots": _month_labels(split.test_snapshots),
        "recall_target": config.recall_target,
        "n_features": len(feature_columns),
    }
    importances = pd.Series(forest.named_steps["forest"].feature_importances_, index=feature_columns)
    test_scores = split.test[KEY_COLUMNS + [LABEL_COLUMN]].assign(score=test_score, baseline_score=baseline_test_score)
    return ChurnCandidate(
        model=model,
        threshold=threshold,
        metrics=metrics,
        feature_importances={name: float(value) for name, value in importances.sort_values(ascending=False).items()},
        baseline=baseline,
        test_scores=test_scores,
        validation_scores=validation_scores,
        train_snapshots=split.train_snapshots,
        validation_snapshots=split.validation_snapshots,
        test_snapshots=split.test_snapshots,
        feature_columns=feature_columns,
        config=config,
    )


def score_champion_on(candidate_test_rows: pd.DataFrame, champion_model, feature_columns: list[str]) -> float:
    """ROC-AUC of another model (e.g. the promoted champion) on the candidate's test rows.

    ``candidate_test_rows`` is ``split_out_of_time(training_set, config).test``; ``feature_columns``
    are the champion's own (``champion.feature_columns``), which must all be present.
    """
    missing = [column for column in feature_columns if column not in candidate_test_rows.columns]
    if missing:
        raise ValueError(f"test rows lack the champion's feature columns: {missing}")
    scores = champion_model.predict_proba(candidate_test_rows[list(feature_columns)])[:, 1]
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
    """Test ROC-AUC must reach ``floor``."""
    auc = metrics["roc_auc"]
    return auc >= floor, f"test ROC-AUC {auc:.3f} {'>=' if auc >= floor else '<'} floor {floor:.3f}"


def gate_beats_baseline(metrics: dict, margin: float = ChurnGateConfig.baseline_margin) -> tuple[bool, str]:
    """Test ROC-AUC must beat the tenure/promotion baseline's by at least ``margin``."""
    auc, baseline = metrics["roc_auc"], metrics["baseline_roc_auc"]
    passed = auc >= baseline + margin
    return passed, (
        f"test ROC-AUC {auc:.3f} {'>=' if passed else '<'} baseline {baseline:.3f} + margin {margin:.3f}"
    )


def gate_not_worse_than_champion(
    candidate_auc: float, champion_auc: float | None, tolerance: float = ChurnGateConfig.champion_tolerance
) -> tuple[bool, str]:
    """Candidate ROC-AUC must be >= champion ROC-AUC - ``tolerance`` on the same rows; passes without a champion."""
    if champion_auc is None:
        return True, "no champion yet"
    passed = candidate_auc >= champion_auc - tolerance
    return passed, (
        f"candidate ROC-AUC {candidate_auc:.3f} {'>=' if passed else '<'} "
        f"champion {champion_auc:.3f} - tolerance {tolerance:.3f} on the same test rows"
    )


def gate_recall(
    metrics: dict, target: float = ChurnTrainingConfig.recall_target, tolerance: float = ChurnGateConfig.recall_tolerance
) -> tuple[bool, str]:
    """Test recall at the validation-chosen threshold must be >= ``target - tolerance``."""
    recall = metrics["recall"]
    passed = recall >= target - tolerance
    return passed, (
        f"test recall {recall:.3f} {'>=' if passed else '<'} target {target:.3f} - tolerance {tolerance:.3f}"
    )


def run_churn_gates(
    metrics: dict, champion_auc: float | None, gate_config: ChurnGateConfig = ChurnGateConfig()
) -> dict[str, tuple[bool, str]]:
    """All four gates by name; ``metrics["recall_target"]`` is the recall target."""
    return {
        "roc_auc_floor": gate_roc_auc_floor(metrics, gate_config.roc_auc_floor),
        "beats_baseline": gate_beats_baseline(metrics, gate_config.baseline_margin),
        "not_worse_than_champion": gate_not_worse_than_champion(
            metrics["roc_auc"], champion_auc, gate_config.champion_tolerance
        ),
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
