"""Weekly churn scoring: calibrated risk, capacity-based risk tiers, recommended action, top reasons.

Inputs are the promoted champions and one ``scoring_features`` snapshot (docs/design.md):

- the churn model: ``CalibratedClassifierCV(FrozenEstimator(Pipeline(SimpleImputer, RandomForest)))``
  whose ``predict_proba(features[feature_columns])[:, 1]`` is the calibrated churn probability;
- tier cut-offs from :func:`tier_cutoffs`, computed once at training time on the validation
  scores and versioned with the model;
- segments per member (``segmentation.assign_segments``);
- the action rule table from :func:`load_action_table`.

Risk tiers are capacity based, not fixed probability bands: at a base rate of a few percent a band
such as "above 50 %" is nearly empty and almost everyone is Low. The cut-offs are the reference
score quantiles at the cumulative tier shares (default 60 / 25 / 10 / 5 %), so the retention team
gets a stable, known workload; if the population drifts the shares move, which drift monitoring
reports.

Top reasons are Saabas path attributions of the forest: along each tree path, the change in the
node's churn share at a split is credited to the split feature; the contributions plus the mean
root share add up to the forest's (uncalibrated) probability. The calibration is monotone, so the
features that push the forest score up push the calibrated risk up. scikit-learn has no
per-sample contribution API and shap / treeinterpreter are not dependencies, so the attribution
is computed here from ``tree_.value`` and the tree structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from importlib import resources
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from loyalty_assets.domain.segmentation import SEGMENT_NAMES

RISK_TIERS = ("Low", "Medium", "High", "Critical")
DEFAULT_TIER_SHARES = (0.60, 0.25, 0.10, 0.05)
EXPLAINED_TIERS = ("High", "Critical")
ACTION_TABLE_COLUMNS = ["version", "segment", "risk_tier", "recommended_action"]
# control_share: the cell's hold-out share for retention experiments (empty = the tier's default).
OPTIONAL_ACTION_TABLE_COLUMNS = ["control_share"]
PREDICTION_COLUMNS = [
    "loyalty_number",
    "week",
    "snapshot_month",
    "churn_risk_pct",
    "risk_tier",
    "segment",
    "recommended_action",
    "top_reasons",
    "churn_model_version",
    "segmentation_model_version",
]
# Rows per thread chunk: tree traversal releases the GIL, so row chunks score in parallel threads.
SCORING_CHUNK_ROWS = 50_000


def tier_cutoffs(reference_scores, shares: Sequence[float] = DEFAULT_TIER_SHARES) -> dict[str, float]:
    """Lower score bound of Medium, High and Critical: reference quantiles at the cumulative shares.

    ``shares`` are the target shares of Low, Medium, High, Critical (positive, summing to 1).
    Returns ``{"Medium": q(0.60), "High": q(0.85), "Critical": q(0.95)}`` for the defaults, plain
    floats (JSON-serialisable). Compute it once on the validation scores and store it with the model.
    """
    scores = _checked_scores(reference_scores, "reference_scores")
    shares = np.asarray(shares, dtype=float)
    if shares.shape != (len(RISK_TIERS),) or (shares <= 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"shares must be {len(RISK_TIERS)} positive numbers summing to 1, got {shares.tolist()}")
    bounds = np.quantile(scores, np.cumsum(shares)[:-1])
    return {tier: float(bound) for tier, bound in zip(RISK_TIERS[1:], bounds)}


def assign_tiers(scores, cutoffs: dict[str, float]) -> pd.Categorical:
    """Ordered categorical Low < Medium < High < Critical.

    A score is in the highest tier whose lower bound it strictly exceeds, so scores tied at a bound
    stay in the lower tier and a capacity tier never holds more than its share of the reference.
    """
    scores = _checked_scores(scores, "scores")
    expected = set(RISK_TIERS[1:])
    if set(cutoffs) != expected:
        raise ValueError(f"cutoffs must have exactly the keys {sorted(expected)}, got {sorted(cutoffs)}")
    bounds = np.array([cutoffs[tier] for tier in RISK_TIERS[1:]], dtype=float)
    if np.isnan(bounds).any() or (np.diff(bounds) < 0).any():
        raise ValueError(f"cutoffs must be non-decreasing from Medium to Critical, got {cutoffs}")
    codes = np.searchsorted(bounds, scores, side="left")
    return pd.Categorical.from_codes(codes, categories=list(RISK_TIERS), ordered=True)


def _checked_scores(scores, name: str) -> np.ndarray:
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
    if np.isnan(values).any() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"{name} must be probabilities in [0, 1] without NaN")
    return values


def default_action_table_path() -> Path:
    """The rule table shipped with the package: ``loyalty_assets/data/recommended_actions.csv``."""
    return Path(str(resources.files("loyalty_assets").joinpath("data").joinpath("recommended_actions.csv")))


def load_action_table(path: str | Path | None = None) -> pd.DataFrame:
    """Read and validate the versioned action rule table (default: the packaged CSV).

    The table must have the columns ``version, segment, risk_tier, recommended_action``, one single
    version, no empty cell, and exactly one row for each of the 3 segments x 4 tiers. An optional
    ``control_share`` column overrides the experiment hold-out share per cell.
    """
    source = default_action_table_path() if path is None else Path(path)
    table = pd.read_csv(source, dtype=str, keep_default_na=False)
    missing_columns = [column for column in ACTION_TABLE_COLUMNS if column not in table.columns]
    if missing_columns:
        raise ValueError(f"action table {source} lacks columns {missing_columns}")
    optional = [column for column in OPTIONAL_ACTION_TABLE_COLUMNS if column in table.columns]
    table = table[ACTION_TABLE_COLUMNS + optional].apply(lambda column: column.str.strip())
    empty = table.index[(table[ACTION_TABLE_COLUMNS] == "").any(axis=1)]
    if len(empty):
        raise ValueError(f"action table {source} has empty cells in data rows {(empty + 1).tolist()}")
    versions = table["version"].unique().tolist()
    if len(versions) != 1:
        raise ValueError(f"action table {source} must hold exactly one version, found {versions}")
    unknown_segments = sorted(set(table["segment"]) - set(SEGMENT_NAMES))
    unknown_tiers = sorted(set(table["risk_tier"]) - set(RISK_TIERS))
    if unknown_segments or unknown_tiers:
        raise ValueError(
            f"action table {source} has unknown segments {unknown_segments} or risk tiers {unknown_tiers}; "
            f"expected segments {list(SEGMENT_NAMES)} and tiers {list(RISK_TIERS)}"
        )
    duplicated = table[table.duplicated(["segment", "risk_tier"], keep=False)]
    if len(duplicated):
        pairs = sorted(set(zip(duplicated["segment"], duplicated["risk_tier"])))
        raise ValueError(f"action table {source} has several rows for {pairs}")
    expected = pd.MultiIndex.from_product([SEGMENT_NAMES, RISK_TIERS], names=["segment", "risk_tier"])
    absent = expected.difference(pd.MultiIndex.from_frame(table[["segment", "risk_tier"]]))
    if len(absent):
        raise ValueError(f"action table {source} lacks rows for (segment, risk_tier) {list(absent)}")
    return table.reset_index(drop=True)


def recommend_actions(segments, tiers, table: pd.DataFrame) -> pd.Series:
    """Recommended action per member from the (segment, risk tier) rule table.

    ``segments`` and ``tiers`` are aligned by position; the result has the index of ``segments``
    when it is a Series. An unknown segment or tier raises.
    """
    segment_values = pd.Series(segments).reset_index(drop=True)
    tier_values = pd.Series(tiers).reset_index(drop=True)
    if len(segment_values) != len(tier_values):
        raise ValueError(f"segments ({len(segment_values)}) and tiers ({len(tier_values)}) differ in length")
    segment_codes = pd.Categorical(segment_values, categories=list(SEGMENT_NAMES)).codes
    tier_codes = pd.Categorical(tier_values.astype(object), categories=list(RISK_TIERS)).codes
    unknown_segments = segment_values[segment_codes < 0].unique().tolist()
    unknown_tiers = tier_values[tier_codes < 0].astype(object).unique().tolist()
    if unknown_segments or unknown_tiers:
        raise ValueError(f"unknown segments {unknown_segments} or risk tiers {unknown_tiers}")
    matrix = (
        table.pivot(index="segment", columns="risk_tier", values="recommended_action")
        .reindex(index=list(SEGMENT_NAMES), columns=list(RISK_TIERS))
        .to_numpy(dtype=object)
    )
    index = segments.index if isinstance(segments, pd.Series) else None
    return pd.Series(matrix[segment_codes, tier_codes], index=index, name="recommended_action", dtype=object)


def unwrap_forest_pipeline(model) -> Pipeline:
    """The fitted ``Pipeline(..., RandomForestClassifier)`` inside the calibrated champion.

    Accepts ``CalibratedClassifierCV(FrozenEstimator(pipeline))`` (one calibrated classifier),
    ``FrozenEstimator(pipeline)`` or the pipeline itself.
    """
    candidate = model
    if isinstance(candidate, CalibratedClassifierCV):
        if not hasattr(candidate, "calibrated_classifiers_"):
            raise ValueError("the CalibratedClassifierCV is not fitted")
        if len(candidate.calibrated_classifiers_) != 1:
            raise ValueError(
                f"the CalibratedClassifierCV holds {len(candidate.calibrated_classifiers_)} cross-validated "
                "forests; expected one frozen forest (CalibratedClassifierCV(FrozenEstimator(pipeline)))"
            )
        candidate = candidate.calibrated_classifiers_[0].estimator
    if isinstance(candidate, FrozenEstimator):
        candidate = candidate.estimator
    if not (
        isinstance(candidate, Pipeline) and isinstance(candidate[-1], (RandomForestClassifier, ExtraTreesClassifier))
    ):
        raise TypeError(f"expected a Pipeline ending in a RandomForestClassifier, found {type(candidate).__name__}")
    if not hasattr(candidate[-1], "estimators_"):
        raise ValueError("the forest inside the pipeline is not fitted")
    return candidate


def _positive_share(tree) -> np.ndarray:
    """Share of the positive (last) class in every node of a fitted sklearn tree."""
    values = tree.value[:, 0, :]
    return values[:, -1] / values.sum(axis=1)


def _tree_offsets(forest) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([estimator.tree_.node_count for estimator in forest.estimators_])])


def _node_contributions(forest, n_features: int) -> np.ndarray:
    """Saabas contribution vector of the path from the root to every node, all trees stacked.

    Row ``offsets[t] + node`` holds, per feature, the sum of the share changes at the splits on that
    feature between the root of tree ``t`` and ``node``. Filled level by level for all trees at once
    (nodes of one level depend only on their parents), so the loop runs over tree depth only.
    """
    offsets = _tree_offsets(forest)
    trees = [estimator.tree_ for estimator in forest.estimators_]
    left = np.concatenate([np.where(t.children_left >= 0, t.children_left + o, -1) for t, o in zip(trees, offsets)])
    right = np.concatenate([np.where(t.children_right >= 0, t.children_right + o, -1) for t, o in zip(trees, offsets)])
    feature = np.concatenate([t.feature for t in trees])
    share = np.concatenate([_positive_share(t) for t in trees])
    table = np.zeros((offsets[-1], n_features))
    level = offsets[:-1]
    while level.size:
        parents = level[left[level] >= 0]
        for children in (left[parents], right[parents]):
            table[children] = table[parents]
            table[children, feature[parents]] += share[children] - share[parents]
        level = np.concatenate([left[parents], right[parents]])
    return table


def _chunked_rows(function, values, n_jobs: int) -> np.ndarray:
    """``function`` over row chunks in threads, results stacked in row order."""
    chunks = max(1, int(np.ceil(len(values) / SCORING_CHUNK_ROWS)), n_jobs if len(values) >= 2 * n_jobs else 1)
    bounds = np.linspace(0, len(values), chunks + 1).astype(int)
    rows = values.iloc if isinstance(values, pd.DataFrame) else values
    parts = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(function)(rows[start:stop]) for start, stop in pairwise(bounds)
    )
    return np.concatenate(parts)


def feature_contributions(forest_pipeline: Pipeline, X, feature_names: Sequence[str], n_jobs: int = 2):
    """Per-member Saabas contributions of each feature to the forest's churn probability.

    ``X`` holds the pipeline's input columns (``feature_names``, in order). Returns
    ``(bias, contributions)``: ``bias`` is the mean root churn share over the trees and
    ``contributions`` a DataFrame (rows of ``X`` x features after preprocessing) such that
    ``bias + contributions.sum(axis=1)`` equals ``forest_pipeline.predict_proba(X)[:, 1]``.
    Contributions are computed on the imputed ``X``, i.e. what the trees actually split on.
    """
    forest = forest_pipeline[-1]
    preprocessing = forest_pipeline[:-1]
    names = list(feature_names)
    if len(preprocessing.steps):
        transformed = preprocessing.transform(X)
        names = list(preprocessing.get_feature_names_out(names))
    else:
        transformed = X
    matrix = np.ascontiguousarray(np.asarray(transformed), dtype=np.float32)
    if matrix.shape[1] != forest.n_features_in_:
        raise ValueError(
            f"X has {matrix.shape[1]} columns after preprocessing, the forest expects {forest.n_features_in_}"
        )
    table = _node_contributions(forest, matrix.shape[1])
    offsets = _tree_offsets(forest)
    trees = [estimator.tree_ for estimator in forest.estimators_]

    def contributions_of(rows: np.ndarray) -> np.ndarray:
        total = np.zeros((len(rows), matrix.shape[1]))
        for tree, offset in zip(trees, offsets[:-1]):
            total += table[tree.apply(rows) + offset]
        return total / len(trees)

    values = _chunked_rows(contributions_of, matrix, n_jobs) if len(matrix) else np.zeros((0, matrix.shape[1]))
    bias = float(np.mean([_positive_share(tree)[0] for tree in trees]))
    index = X.index if isinstance(X, pd.DataFrame) else None
    return bias, pd.DataFrame(values, index=index, columns=names)


def top_reasons(
    forest_pipeline: Pipeline, X, mask, feature_names: Sequence[str], k: int = 3, n_jobs: int = 2
) -> pd.Series:
    """Up to ``k`` features that push each masked member's risk up, largest first, comma-separated.

    Only rows where ``mask`` is true are explained (exact attributions are the expensive part, so
    the caller passes the High and Critical members); other rows get ``""``. A feature is listed
    only when its contribution is positive, so a row can name fewer than ``k`` features. The index
    is that of ``X`` when it is a DataFrame.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(X),):
        raise ValueError(f"mask must have one entry per row of X ({len(X)}), got shape {mask.shape}")
    reasons = np.full(len(X), "", dtype=object)
    if mask.any():
        explained = X[mask] if isinstance(X, pd.DataFrame) else np.asarray(X)[mask]
        _, contributions = feature_contributions(forest_pipeline, explained, feature_names, n_jobs=n_jobs)
        values = contributions.to_numpy()
        order = np.argsort(-values, axis=1, kind="stable")[:, :k]
        names = np.asarray(contributions.columns, dtype=object)[order]
        names[np.take_along_axis(values, order, axis=1) <= 0] = ""
        joined = names[:, 0]
        for position in range(1, names.shape[1]):
            following = names[:, position]
            joined = np.where(following != "", joined + ", " + following, joined)
        reasons[mask] = joined
    index = X.index if isinstance(X, pd.DataFrame) else None
    return pd.Series(reasons, index=index, name="top_reasons", dtype=object)


def _week_string(week) -> str:
    try:
        return pd.Timestamp(week).strftime("%Y-%m-%d")
    except (TypeError, ValueError) as error:
        raise ValueError(f"week must be a date or a YYYY-MM-DD string, got {week!r}") from error


def _aligned_segments(segments, features: pd.DataFrame) -> np.ndarray:
    if isinstance(segments, pd.Series):
        aligned = segments.reindex(features.index)
    else:
        aligned = pd.Series(np.asarray(segments, dtype=object))
        if len(aligned) != len(features):
            raise ValueError(f"segments has {len(aligned)} entries for {len(features)} feature rows")
    missing = int(aligned.isna().sum())
    if missing:
        raise ValueError(f"{missing} scored members have no segment")
    return aligned.to_numpy(dtype=object)


def score_members(
    model,
    features: pd.DataFrame,
    feature_columns: Sequence[str],
    cutoffs: dict[str, float],
    segments,
    action_table: pd.DataFrame,
    week: str | date | pd.Timestamp,
    churn_model_version: str,
    segmentation_model_version: str,
    n_jobs: int = 2,
) -> pd.DataFrame:
    """The ``churn_predictions`` rows of one week, one per row of ``features``, in input order.

    ``features`` is a ``scoring_features`` snapshot (``loyalty_number``, ``snapshot_month`` and the
    model's ``feature_columns``), one row per member. ``segments`` is a Series aligned to
    ``features.index`` (as ``segmentation.assign_segments`` returns) or an array in row order.
    ``churn_risk_pct`` is the calibrated probability x 100 rounded to 0.1; the tier is assigned on
    the unrounded probability. ``n_jobs`` threads score row chunks in parallel.
    """
    feature_columns = list(feature_columns)
    required = ["loyalty_number", "snapshot_month", *feature_columns]
    missing = [column for column in required if column not in features.columns]
    if missing:
        raise ValueError(f"features lack columns {missing}")
    if features.empty:
        raise ValueError("features has no rows to score")
    duplicated = features["loyalty_number"][features["loyalty_number"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"features hold several rows for members {duplicated[:10].tolist()}")
    segment_values = _aligned_segments(segments, features)
    X = features[feature_columns]
    probability = _chunked_rows(lambda rows: model.predict_proba(rows)[:, 1], X, n_jobs)
    tiers = assign_tiers(probability, cutoffs)
    explain = np.isin(tiers.codes, [RISK_TIERS.index(tier) for tier in EXPLAINED_TIERS])
    reasons = top_reasons(unwrap_forest_pipeline(model), X, explain, feature_columns, n_jobs=n_jobs)
    return pd.DataFrame(
        {
            "loyalty_number": features["loyalty_number"].to_numpy(dtype=np.int64),
            "week": _week_string(week),
            "snapshot_month": features["snapshot_month"].to_numpy(dtype="datetime64[ns]"),
            "churn_risk_pct": np.round(probability * 100.0, 1),
            "risk_tier": tiers,
            "segment": segment_values,
            "recommended_action": recommend_actions(segment_values, tiers, action_table).to_numpy(),
            "top_reasons": reasons.to_numpy(),
            "churn_model_version": str(churn_model_version),
            "segmentation_model_version": str(segmentation_model_version),
        },
        columns=PREDICTION_COLUMNS,
    )


def tier_segment_counts(predictions: pd.DataFrame) -> pd.DataFrame:
    """Members per risk tier (rows, Low..Critical) and segment (columns), zeros included."""
    tiers = pd.Categorical(predictions["risk_tier"].astype(object), categories=list(RISK_TIERS), ordered=True)
    segments = pd.Categorical(predictions["segment"], categories=list(SEGMENT_NAMES))
    return pd.crosstab(pd.Series(tiers, name="risk_tier"), pd.Series(segments, name="segment"), dropna=False).reindex(
        index=list(RISK_TIERS), columns=list(SEGMENT_NAMES), fill_value=0
    )
