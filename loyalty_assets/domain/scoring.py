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

Top reasons work for any fitted classifier (RandomForest or HistGradientBoosting, calibrated or
not). For a High or Critical member, each feature outside its usual range (the reference
population's interquartile range, or any other than the most common category) is set in turn to
its usual value (the median, or the most common category) and the member scored again; the
features whose usual value would lower the risk most are the reasons, written in plain language
with the member's value and the usual one (``reasons``). scikit-learn has per-feature importances
for a whole population only and shap is not a dependency, so the per-member comparison is done here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from loyalty_assets.domain.experiments import (
    DEFAULT_CONTROL_SHARES,
    assign_experiment,
    cell_control_shares,
    experiment_id,
)
from loyalty_assets.domain.features import (
    CATEGORICAL_FEATURES,
    last_complete_month,
    month_number,
    timestamp_month_number,
)
from loyalty_assets.domain.ingest import LOYALTY_TABLE
from loyalty_assets.domain.labels import members_enrolled_on
from loyalty_assets.domain.reasons import (
    NO_SINGLE_REASON,
    UsualValues,
    reason_text,
    usual_values,
    usual_values_from_drift_reference,
)
from loyalty_assets.domain.segmentation import SEGMENT_NAMES

if TYPE_CHECKING:  # bundles builds on this module
    from loyalty_assets.domain.bundles import ChurnBundle

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
    "top_reason_features",
    "churn_model_version",
    "segmentation_model_version",
]
# Rows per thread chunk: tree traversal releases the GIL, so row chunks score in parallel threads.
SCORING_CHUNK_ROWS = 50_000
# Rows scored again per block of reasons (members x features changed to their usual value).
REASON_BLOCK_ROWS = 200_000
REASON_DECIMALS = 6


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


def recommend_actions(segments, tiers, table: pd.DataFrame | np.ndarray) -> pd.Series:
    """Recommended action per member from the (segment, risk tier) rule table (or its ``action_matrix``).

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
    matrix = table if isinstance(table, np.ndarray) else action_matrix(table)
    index = segments.index if isinstance(segments, pd.Series) else None
    return pd.Series(matrix[segment_codes, tier_codes], index=index, name="recommended_action", dtype=object)


def action_matrix(table: pd.DataFrame) -> np.ndarray:
    """The rule table as a (segment x tier) array in ``SEGMENT_NAMES`` x ``RISK_TIERS`` order."""
    return (
        table.pivot(index="segment", columns="risk_tier", values="recommended_action")
        .reindex(index=list(SEGMENT_NAMES), columns=list(RISK_TIERS))
        .to_numpy(dtype=object)
    )


def _chunked_rows(function, values, n_jobs: int) -> np.ndarray:
    """``function`` over row chunks in threads, results stacked in row order."""
    chunks = max(1, int(np.ceil(len(values) / SCORING_CHUNK_ROWS)), n_jobs if len(values) >= 2 * n_jobs else 1)
    if chunks == 1:
        return function(values)
    bounds = np.linspace(0, len(values), chunks + 1).astype(int)
    rows = values.iloc if isinstance(values, pd.DataFrame) else values
    parts = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(function)(rows[start:stop]) for start, stop in pairwise(bounds)
    )
    return np.concatenate(parts)


def _risk_drops(
    probability: Callable[[pd.DataFrame], np.ndarray],
    X: pd.DataFrame,
    risk: np.ndarray,
    usual: UsualValues,
    n_jobs: int,
) -> np.ndarray:
    """Rows x features: ``risk`` minus the risk with that one feature set to its usual value.

    Only rows whose value is outside the usual range (or missing) are scored again; the others drop
    by 0, as does every row of a feature without a usual value. The
    changed rows of every feature go through ``probability`` together, in blocks of about
    ``REASON_BLOCK_ROWS`` rows, so one member costs one call and a million members a few dozen.
    """
    columns = list(X.columns)
    drops = np.zeros((len(X), len(columns)))
    block = max(1, REASON_BLOCK_ROWS // len(columns))
    for start in range(0, len(X), block):
        rows = X.iloc[start : start + block]
        changed, places = [], []
        for position, column in enumerate(columns):
            low, value, high = (usual[column][name] for name in ("low", "usual", "high"))
            member = rows[column].to_numpy(dtype=float)
            differs = ~np.isnan(value) & ((member < low) | (member > high) | np.isnan(member))
            if differs.any():
                piece = rows[differs].copy()
                piece[column] = value
                changed.append(piece)
                places.append((position, start + np.flatnonzero(differs)))
        if changed:
            changed_risk = _chunked_rows(probability, pd.concat(changed), n_jobs)
            bounds = np.cumsum([0, *(len(members) for _, members in places)])
            for (position, members), first, last in zip(places, bounds[:-1], bounds[1:]):
                drops[members, position] = risk[members] - changed_risk[first:last]
    # Rounded to a millionth of a probability, so that scikit-learn and an equivalent compiled model
    # (equal within 1e-9) rank the features alike.
    return np.round(drops, REASON_DECIMALS)


def top_reasons(
    probability: Callable[[pd.DataFrame], np.ndarray],
    X: pd.DataFrame,
    risk,
    mask,
    usual: UsualValues,
    categorical_columns: Sequence[str] = CATEGORICAL_FEATURES,
    k: int = 3,
    n_jobs: int = 2,
) -> pd.DataFrame:
    """Up to ``k`` features whose usual value would lower each masked member's risk most, largest first.

    ``risk`` is ``probability(X)``. For every masked row of ``X`` and every feature where the member is
    outside the ``usual`` range (``reasons.usual_values``), the feature is set to its usual value and
    the row scored again with ``probability`` (any fitted classifier's
    ``predict_proba(rows)[:, 1]``, calibrated or not); the drop in risk is how much that feature
    raises the member's risk. Features with a positive drop are kept.
    Returns ``top_reasons`` (plain language, ``"; "``-separated, e.g. "flights in the last 3 months: 0,
    below the usual 4") and ``top_reason_features`` (the feature names, comma-separated), indexed
    like ``X``. Rows outside ``mask`` get ``""``; a masked row where no single feature raises the risk
    reads ``NO_SINGLE_REASON``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    mask = np.asarray(mask, dtype=bool)
    risk = np.asarray(risk, dtype=float)
    if mask.shape != (len(X),) or risk.shape != (len(X),):
        raise ValueError(f"risk and mask must have one entry per row of X ({len(X)}): {risk.shape}, {mask.shape}")
    missing = [column for column in X.columns if column not in usual]
    if missing:
        raise ValueError(f"no usual value for features {missing}")
    texts = np.full(len(X), "", dtype=object)
    names = np.full(len(X), "", dtype=object)
    if mask.any():
        explained = X[mask]
        drops = _risk_drops(probability, explained, risk[mask], usual, n_jobs)
        order = np.argsort(-drops, axis=1, kind="stable")[:, :k]
        kept = np.take_along_axis(drops, order, axis=1) > 0
        columns = np.asarray(X.columns, dtype=object)
        values = explained.to_numpy(dtype=float)
        row_texts = [[] for _ in range(len(explained))]
        row_names = [[] for _ in range(len(explained))]
        for place in range(order.shape[1]):
            for row in np.flatnonzero(kept[:, place]):
                position = order[row, place]
                column = columns[position]
                row_names[row].append(column)
                row_texts[row].append(
                    reason_text(
                        column, values[row, position], usual[column]["usual"], column in categorical_columns
                    )
                )
        texts[mask] = ["; ".join(reasons) or NO_SINGLE_REASON for reasons in row_texts]
        names[mask] = [",".join(features) for features in row_names]
    return pd.DataFrame({"top_reasons": texts, "top_reason_features": names}, index=X.index)


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


class ChurnScorer:
    """A churn champion prepared to score: the one scoring path of the weekly batch and the online API.

    The action rule matrix is prepared once, so an online request does not pay for it.
    ``probability`` replaces ``model.predict_proba(X)[:, 1]`` with an equivalent function of the
    feature frame (the online API passes a compiled model that was checked against scikit-learn).
    ``usual_values`` (feature -> the reference population's usual range, see ``reasons.usual_values``)
    are what the reasons compare a member with; they are stored with the model, so the weekly batch
    and the online API give the same reasons. ``n_jobs`` threads score row chunks in parallel.
    """

    def __init__(
        self,
        model,
        feature_columns: Sequence[str],
        cutoffs: dict[str, float],
        action_table: pd.DataFrame,
        churn_model_version: str,
        *,
        usual_values: UsualValues,
        probability: Callable[[pd.DataFrame], np.ndarray] | None = None,
        control_shares: Mapping[str, float] = DEFAULT_CONTROL_SHARES,
        n_jobs: int = 2,
    ):
        self.model = model
        self.feature_columns = list(feature_columns)
        self.cutoffs = dict(cutoffs)
        self.churn_model_version = str(churn_model_version)
        self.n_jobs = n_jobs
        self.usual_values = dict(usual_values)
        self._actions = action_matrix(action_table)
        self._control_shares = cell_control_shares(action_table, control_shares)
        self._probability = probability or (lambda rows: model.predict_proba(rows)[:, 1])

    @classmethod
    def from_bundle(cls, bundle: ChurnBundle, action_table: pd.DataFrame, **options) -> ChurnScorer:
        """From a churn bundle; one stored without ``usual_values`` takes them from its drift reference."""
        usual = bundle.usual_values or usual_values_from_drift_reference(bundle.drift_reference)
        return cls(
            bundle.model, bundle.feature_columns, bundle.tier_cutoffs, action_table, bundle.version,
            usual_values=usual, **options,
        )

    def reasons(self, X: pd.DataFrame, risk: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
        """``top_reasons`` of the masked rows of ``X`` (the model's feature columns) whose risk is ``risk``."""
        return top_reasons(self._probability, X, risk, mask, self.usual_values, n_jobs=self.n_jobs)

    def score(
        self, features: pd.DataFrame, segments, week: str | date | pd.Timestamp, segmentation_model_version: str
    ) -> pd.DataFrame:
        """The ``churn_predictions`` rows of one week, one per row of ``features``, in input order.

        ``features`` is a ``scoring_features`` snapshot (``loyalty_number``, ``snapshot_month`` and the
        model's feature columns), one row per member. ``segments`` is a Series aligned to
        ``features.index`` (as ``segmentation.assign_segments`` returns) or an array in row order.
        ``churn_risk_pct`` is the calibrated probability x 100 rounded to 0.1; the tier is assigned on
        the unrounded probability. Every week is a retention experiment: the rows carry the
        ``experiments.EXPERIMENT_COLUMNS`` and hold-outs get the hold-out action.
        """
        required = ["loyalty_number", "snapshot_month", *self.feature_columns]
        missing = [column for column in required if column not in features.columns]
        if missing:
            raise ValueError(f"features lack columns {missing}")
        if features.empty:
            raise ValueError("features has no rows to score")
        duplicated = features["loyalty_number"][features["loyalty_number"].duplicated()].unique()
        if len(duplicated):
            raise ValueError(f"features hold several rows for members {duplicated[:10].tolist()}")
        segment_values = _aligned_segments(segments, features)
        X = features[self.feature_columns]
        probability = _chunked_rows(self._probability, X, self.n_jobs)
        tiers = assign_tiers(probability, self.cutoffs)
        explain = np.isin(tiers.codes, [RISK_TIERS.index(tier) for tier in EXPLAINED_TIERS])
        reasons = self.reasons(X, probability, explain)
        scored = pd.DataFrame(
            {
                "loyalty_number": features["loyalty_number"].to_numpy(dtype=np.int64),
                "week": _week_string(week),
                "snapshot_month": features["snapshot_month"].to_numpy(dtype="datetime64[ns]"),
                "churn_risk_pct": np.round(probability * 100.0, 1),
                "risk_tier": tiers,
                "segment": segment_values,
                "recommended_action": recommend_actions(segment_values, tiers, self._actions).to_numpy(),
                "top_reasons": reasons["top_reasons"].to_numpy(),
                "top_reason_features": reasons["top_reason_features"].to_numpy(),
                "churn_model_version": self.churn_model_version,
                "segmentation_model_version": str(segmentation_model_version),
            },
            columns=PREDICTION_COLUMNS,
        )
        return assign_experiment(scored, self._control_shares, experiment_id(week))


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
    usual: UsualValues | None = None,
) -> pd.DataFrame:
    """``ChurnScorer.score`` with a scorer prepared for this one call (see :class:`ChurnScorer`); the
    usual values default to those of ``features`` themselves."""
    if usual is None:
        usual = usual_values(features, feature_columns, [c for c in CATEGORICAL_FEATURES if c in feature_columns])
    scorer = ChurnScorer(
        model, feature_columns, cutoffs, action_table, churn_model_version, usual_values=usual, n_jobs=n_jobs
    )
    return scorer.score(features, segments, week, segmentation_model_version)


RELATIVE_RISK_COLUMNS = ["risk_vs_average", "risk_percentile"]


def add_relative_risk(predictions: pd.DataFrame) -> pd.DataFrame:
    """The week's rows with ``risk_vs_average`` (risk / the week's mean risk) and ``risk_percentile``
    (0-100: the share of the week's members with a lower or equal risk)."""
    risk = predictions["churn_risk_pct"]
    mean = float(risk.mean())
    return predictions.assign(
        risk_vs_average=np.round(risk / mean, 2) if mean > 0 else np.nan,
        risk_percentile=np.round(risk.rank(method="max", pct=True) * 100.0, 1),
    )


def tier_segment_counts(predictions: pd.DataFrame, *, observed_only: bool = False) -> pd.DataFrame:
    """Members per risk tier (rows) and segment (columns): every tier (Low..Critical) and segment with
    zeros included, or with ``observed_only`` only the tiers and segments the predictions hold."""
    counts = pd.crosstab(predictions["risk_tier"], predictions["segment"])  # in category order, if categorical
    counts.index, counts.columns = counts.index.astype(object), counts.columns.astype(object)
    if observed_only:
        return counts
    return counts.reindex(index=list(RISK_TIERS), columns=list(SEGMENT_NAMES), fill_value=0)


def unscored_member_counts(
    loyalty: pd.DataFrame, quarantine: pd.DataFrame, predictions: pd.DataFrame, drop_date
) -> dict:
    """How the scoring drop's members split: scored, cancelled, or left out with a reason.

    ``loyalty`` and ``quarantine`` are the drop's ``raw_loyalty_history`` and ``raw_quarantine``;
    ``predictions`` is the week's ``churn_predictions``. Eligible members are enrolled and not
    cancelled on ``drop_date``. Left out, by reason: ``loyalty_row_quarantined`` (rows the ingest
    quarantined; their eligibility is unknown), ``enrolled_after_snapshot`` (eligible, enrolled in
    the drop's month-to-date month) and ``no_scoring_features`` (any other eligible member without
    a prediction).
    ``members_in_drop`` = ``members_scored`` + ``members_cancelled`` + ``members_left_out``.
    """
    quarantined_loyalty_rows = int((quarantine["table"] == LOYALTY_TABLE).sum())
    numbers = loyalty["loyalty_number"]
    eligible = numbers.isin(members_enrolled_on(loyalty, drop_date)).to_numpy()
    scored = eligible & numbers.isin(predictions["loyalty_number"]).to_numpy()
    enrolled = month_number(loyalty["enrollment_year"].to_numpy(), loyalty["enrollment_month"].to_numpy())
    after_snapshot = enrolled > timestamp_month_number(last_complete_month(drop_date))
    unscored = eligible & ~scored
    by_reason = {
        "loyalty_row_quarantined": quarantined_loyalty_rows,
        "enrolled_after_snapshot": int((unscored & after_snapshot).sum()),
        "no_scoring_features": int((unscored & ~after_snapshot).sum()),
    }
    return {
        "members_in_drop": len(loyalty) + quarantined_loyalty_rows,
        "members_scored": int(scored.sum()),
        "members_cancelled": int((~eligible).sum()),
        "members_left_out": sum(by_reason.values()),
        "left_out_by_reason": by_reason,
    }
