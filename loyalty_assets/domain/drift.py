"""Drift monitoring of the weekly scoring: features, predictions and realised outcomes.

Three checks, each against a reference built once from the champion's validation data
(:func:`build_reference`, a JSON-serialisable dict stored with the model version):

- **Feature drift** (:func:`feature_drift`): numeric features are binned at the reference's
  deciles (duplicate edges of zero-inflated features collapse, NaN is its own bin) and compared
  with the population stability index; categorical features compare category shares with the
  Jensen-Shannon distance (base 2, in [0, 1]). A category never seen in the reference is its own
  bin with reference share ``eps``, so it raises the statistic instead of crashing.
- **Prediction drift** (:func:`prediction_drift`): PSI of the 20-bin score histogram and of the
  tier shares against the reference, and of the score histogram against previous weeks.
- **Concept drift** (:func:`concept_drift`): on a past week whose labels have matured, realised
  ROC-AUC, recall at the frozen threshold and churn rate per tier, compared with the figures
  recorded at promotion.

Statuses are ``ok`` < ``warn`` < ``fail``; thresholds are in :class:`DriftThresholds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import recall_score, roc_auc_score

from loyalty_assets.domain.scoring import RISK_TIERS

NUMERIC_BINS = 10
SCORE_BINS = 20
MISSING_CATEGORY = "__missing__"
STATUSES = ("ok", "warn", "fail")
DRIFT_COLUMNS = ["feature", "kind", "statistic", "value", "status"]


@dataclass(frozen=True)
class DriftThresholds:
    """Warn / fail limits; a status is reached when the value is strictly above its limit.

    PSI 0.1 / 0.25 are the customary "moderate" / "significant shift" limits. Jensen-Shannon
    distance (base 2) 0.1 / 0.2: dropping a category that held a fifth of the members gives about
    0.34, sampling noise on thousands of members stays below 0.02. Dataset level: ``fail`` when
    more than ``dataset_fail_share`` of the features fail, otherwise ``warn`` when any feature
    warns or fails. Concept drift compares realised figures with those at promotion: a drop of
    ROC-AUC or recall above the warn / fail limit warns / fails; a realised churn rate per tier
    that is not strictly increasing from Low to Critical warns.
    """

    psi_warn: float = 0.1
    psi_fail: float = 0.25
    js_warn: float = 0.1
    js_fail: float = 0.2
    dataset_fail_share: float = 0.3
    auc_drop_warn: float = 0.03
    auc_drop_fail: float = 0.07
    recall_drop_warn: float = 0.05
    recall_drop_fail: float = 0.15
    eps: float = 1e-4


def _status(value: float, warn: float, fail: float) -> str:
    return "fail" if value > fail else "warn" if value > warn else "ok"


def _worst(statuses: Sequence[str]) -> str:
    return STATUSES[max(STATUSES.index(status) for status in statuses)]


def population_stability_index(reference_shares, current_shares, eps: float = 1e-4) -> float:
    """PSI = sum((current - reference) * ln(current / reference)); shares below ``eps`` count as ``eps``."""
    reference = np.asarray(reference_shares, dtype=float)
    current = np.asarray(current_shares, dtype=float)
    if reference.shape != current.shape or reference.ndim != 1:
        raise ValueError(f"share vectors differ in shape: {reference.shape} vs {current.shape}")
    reference = np.clip(reference, eps, None)
    current = np.clip(current, eps, None)
    return float(np.sum((current - reference) * np.log(current / reference)))


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon distance (base 2, 0 = same distribution, 1 = disjoint) of two share vectors."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"share vectors differ in shape: {p.shape} vs {q.shape}")
    return float(jensenshannon(p, q, base=2))


def _numeric_values(features: pd.DataFrame, column: str) -> np.ndarray:
    values = features[column].to_numpy(dtype=float)
    if np.isinf(values).any():
        raise ValueError(f"feature {column} holds infinite values")
    return values


def _binned_shares(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, float]:
    """Shares of all rows per bin ``(-inf, e1], (e1, e2], ..., (ek, inf)`` and the NaN share."""
    missing = np.isnan(values)
    bins = np.searchsorted(edges, values[~missing], side="left")
    counts = np.bincount(bins, minlength=edges.size + 1)
    return counts / values.size, float(missing.mean())


def _category_shares(values: pd.Series) -> pd.Series:
    labels = values.astype(object).where(values.notna(), MISSING_CATEGORY).astype(str)
    return labels.value_counts(normalize=True, sort=False)


def reference_score_edges(scores) -> list[float]:
    """Bin edges at the reference's own score quantiles (up to ``SCORE_BINS`` bins over 0..1).

    At a churn base rate of a few percent, fixed 0.05-wide bins would put almost every score in
    the first bin and hide a shift; quantile bins give each bin about the same reference share.
    """
    values = np.asarray(scores, dtype=float)
    inner = np.quantile(values, np.arange(1, SCORE_BINS) / SCORE_BINS)
    return np.unique(np.concatenate([[0.0], inner[(inner > 0.0) & (inner < 1.0)], [1.0]])).tolist()


def score_distribution(scores, tiers, edges, week: str | None = None) -> dict:
    """Score histogram over ``edges`` (from :func:`reference_score_edges`) and tier shares of one
    set of scores, JSON-serialisable. A list of weekly ones is the ``previous_weeks`` of
    :func:`prediction_drift`.
    """
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or values.size == 0 or np.isnan(values).any() or (values < 0).any() or (values > 1).any():
        raise ValueError("scores must be a non-empty 1-D array of probabilities in [0, 1] without NaN")
    tier_values = pd.Series(pd.Categorical(np.asarray(tiers, dtype=object), categories=list(RISK_TIERS)))
    if len(tier_values) != values.size:
        raise ValueError(f"tiers ({len(tier_values)}) and scores ({values.size}) differ in length")
    if tier_values.isna().any():
        raise ValueError(f"tiers must be one of {list(RISK_TIERS)}")
    edges = np.asarray(edges, dtype=float)
    counts, _ = np.histogram(values, bins=edges)
    tier_shares = tier_values.value_counts(normalize=True, sort=False).reindex(list(RISK_TIERS))
    return {
        "week": week,
        "n_members": int(values.size),
        "score_edges": edges.tolist(),
        "score_shares": (counts / values.size).tolist(),
        "tier_shares": {tier: float(share) for tier, share in tier_shares.items()},
    }


def build_reference(
    features: pd.DataFrame,
    feature_columns: Sequence[str],
    categorical_columns: Sequence[str],
    scores,
    tiers,
) -> dict:
    """Reference distributions for drift checks (JSON-serialisable).

    ``feature_columns`` not in ``categorical_columns`` are numeric: decile bin edges of the
    non-missing reference values, the share of all rows per bin and the NaN share.
    ``categorical_columns`` (they may be among ``feature_columns``, e.g. a coded card tier, or extra
    columns of ``features``): the share of each category, NaN counted as ``"__missing__"``.
    ``scores`` / ``tiers``: the reference score histogram and tier shares (:func:`score_distribution`).
    """
    categorical = list(dict.fromkeys(categorical_columns))
    numeric = [column for column in dict.fromkeys(feature_columns) if column not in categorical]
    missing = [column for column in numeric + categorical if column not in features.columns]
    if missing:
        raise ValueError(f"reference features lack columns {missing}")
    if features.empty:
        raise ValueError("reference features have no rows")
    numeric_reference = {}
    for column in numeric:
        values = _numeric_values(features, column)
        present = values[~np.isnan(values)]
        deciles = np.quantile(present, np.arange(1, NUMERIC_BINS) / NUMERIC_BINS) if present.size else np.array([])
        edges = np.unique(deciles)
        shares, missing_share = _binned_shares(values, edges)
        numeric_reference[column] = {
            "edges": edges.tolist(),
            "shares": shares.tolist(),
            "missing_share": missing_share,
        }
    categorical_reference = {
        column: {"shares": {str(k): float(v) for k, v in _category_shares(features[column]).items()}}
        for column in categorical
    }
    # Weekly scores are published as churn_risk_pct rounded to 0.1 point; bin the reference at the
    # same precision, or quantile edges between rounded values would move identical scores across bins.
    published = np.round(np.asarray(scores, dtype=float) * 100.0, 1) / 100.0
    distribution = score_distribution(published, tiers, reference_score_edges(published))
    return {
        "n_rows": len(features),
        "numeric": numeric_reference,
        "categorical": categorical_reference,
        "score_histogram": {"edges": distribution["score_edges"], "shares": distribution["score_shares"]},
        "tier_shares": distribution["tier_shares"],
    }


def feature_drift(
    reference: dict, features: pd.DataFrame, thresholds: DriftThresholds = DriftThresholds()
) -> pd.DataFrame:
    """One row per reference feature: ``feature, kind, statistic, value, status``.

    Numeric features: PSI over the reference bins plus the NaN bin. Categorical features:
    Jensen-Shannon distance over the union of reference and current categories (a new category
    has reference share ``eps``).
    """
    expected = list(reference["numeric"]) + list(reference["categorical"])
    missing = [column for column in expected if column not in features.columns]
    if missing:
        raise ValueError(f"features lack the reference columns {missing}")
    if features.empty:
        raise ValueError("features have no rows to compare with the reference")
    rows = []
    for column, spec in reference["numeric"].items():
        shares, missing_share = _binned_shares(
            _numeric_values(features, column), np.asarray(spec["edges"], dtype=float)
        )
        value = population_stability_index(
            spec["shares"] + [spec["missing_share"]], shares.tolist() + [missing_share], thresholds.eps
        )
        rows.append((column, "numeric", "psi", value, _status(value, thresholds.psi_warn, thresholds.psi_fail)))
    for column, spec in reference["categorical"].items():
        current = _category_shares(features[column])
        categories = list(dict.fromkeys([*spec["shares"], *current.index]))
        reference_shares = (
            pd.Series(spec["shares"], dtype=float).reindex(categories).fillna(0.0).clip(lower=thresholds.eps)
        )
        value = jensen_shannon(reference_shares.to_numpy(), current.reindex(categories).fillna(0.0).to_numpy())
        rows.append((column, "categorical", "js", value, _status(value, thresholds.js_warn, thresholds.js_fail)))
    return pd.DataFrame(rows, columns=DRIFT_COLUMNS)


def dataset_drift_status(drift_frame: pd.DataFrame, thresholds: DriftThresholds = DriftThresholds()) -> str:
    """``fail`` if the share of failed features exceeds ``dataset_fail_share``, ``warn`` if any warns or fails."""
    if drift_frame.empty:
        raise ValueError("drift_frame has no features")
    failed_share = float((drift_frame["status"] == "fail").mean())
    if failed_share > thresholds.dataset_fail_share:
        return "fail"
    return "warn" if drift_frame["status"].isin(["warn", "fail"]).any() else "ok"


def prediction_drift(
    reference: dict,
    scores,
    tiers,
    previous_weeks: list[dict] | None = None,
    thresholds: DriftThresholds = DriftThresholds(),
) -> dict:
    """Shift of this week's scores and tiers against the reference and previous weeks.

    ``previous_weeks`` are :func:`score_distribution` dicts of earlier weeks. Status is the worst
    of the PSI statuses of: score histogram vs reference, tier shares vs reference, and the largest
    score-histogram PSI vs a previous week.
    """
    edges = reference["score_histogram"]["edges"]
    current = score_distribution(scores, tiers, edges)
    score_psi = population_stability_index(
        reference["score_histogram"]["shares"], current["score_shares"], thresholds.eps
    )
    reference_tiers = [reference["tier_shares"][tier] for tier in RISK_TIERS]
    current_tiers = [current["tier_shares"][tier] for tier in RISK_TIERS]
    tier_psi = population_stability_index(reference_tiers, current_tiers, thresholds.eps)
    versus_previous = []
    for position, week in enumerate(previous_weeks or []):
        if not np.allclose(week["score_edges"], edges):
            raise ValueError(f"previous week {week.get('week', position)} was binned on other edges than the reference")
        psi = population_stability_index(week["score_shares"], current["score_shares"], thresholds.eps)
        versus_previous.append({"week": week.get("week"), "score_psi": psi})
    statuses = {
        "score_psi": _status(score_psi, thresholds.psi_warn, thresholds.psi_fail),
        "tier_psi": _status(tier_psi, thresholds.psi_warn, thresholds.psi_fail),
    }
    max_previous = max((entry["score_psi"] for entry in versus_previous), default=None)
    if max_previous is not None:
        statuses["max_previous_week_psi"] = _status(max_previous, thresholds.psi_warn, thresholds.psi_fail)
    status = _worst(list(statuses.values()))
    deltas = {tier: c - r for tier, c, r in zip(RISK_TIERS, current_tiers, reference_tiers)}
    delta_text = ", ".join(f"{tier} {delta * 100:+.1f} pp" for tier, delta in deltas.items())
    previous_text = "no previous weeks" if max_previous is None else f"max PSI vs previous weeks {max_previous:.3f}"
    return {
        "status": status,
        "score_psi_vs_reference": score_psi,
        "tier_psi_vs_reference": tier_psi,
        "tier_share_delta": deltas,
        "score_psi_vs_previous_weeks": versus_previous,
        "max_score_psi_vs_previous_weeks": max_previous,
        "statuses": statuses,
        "current": current,
        "message": (
            f"{status}: score PSI vs reference {score_psi:.3f}, tier PSI {tier_psi:.3f} "
            f"(tier shares vs reference: {delta_text}); {previous_text}"
        ),
    }


def concept_drift(
    scored_week: pd.DataFrame,
    outcomes: pd.Series,
    threshold: float,
    promotion_metrics: dict,
    thresholds: DriftThresholds = DriftThresholds(),
) -> dict:
    """Realised quality of a past week's predictions once its labels have matured.

    ``scored_week``: that week's ``churn_predictions`` rows (``loyalty_number``, ``churn_risk_pct``,
    ``risk_tier``); the probability is ``churn_risk_pct / 100`` (stored to 0.1 points, which ties a
    few scores and costs a little ROC-AUC). ``outcomes``: 0/1 realised churn indexed by
    ``loyalty_number``, covering every scored member. ``threshold``: the champion's frozen decision
    threshold (flag when probability >= threshold). ``promotion_metrics``: the champion's test
    metrics with ``roc_auc`` and ``recall``.
    """
    required = ["loyalty_number", "churn_risk_pct", "risk_tier"]
    missing_columns = [column for column in required if column not in scored_week.columns]
    if missing_columns:
        raise ValueError(f"scored_week lacks columns {missing_columns}")
    missing_metrics = [name for name in ("roc_auc", "recall") if name not in promotion_metrics]
    if missing_metrics:
        raise ValueError(f"promotion_metrics lacks {missing_metrics}")
    labels = outcomes.reindex(scored_week["loyalty_number"].to_numpy())
    unlabelled = int(labels.isna().sum())
    if unlabelled:
        raise ValueError(f"{unlabelled} of {len(labels)} scored members have no realised outcome")
    labels = labels.to_numpy(dtype=int)
    if not set(np.unique(labels).tolist()) <= {0, 1}:
        raise ValueError(f"outcomes must be 0/1, found {sorted(np.unique(labels).tolist())}")
    if np.unique(labels).size < 2:
        raise ValueError(f"realised outcomes hold only class {labels[0]}: ROC-AUC and recall are undefined")
    probability = scored_week["churn_risk_pct"].to_numpy(dtype=float) / 100.0
    roc_auc = float(roc_auc_score(labels, probability))
    recall = float(recall_score(labels, (probability >= threshold).astype(int)))

    tiers = pd.Categorical(scored_week["risk_tier"].astype(object), categories=list(RISK_TIERS), ordered=True)
    by_tier = (
        pd.DataFrame({"tier": tiers, "churned": labels})
        .groupby("tier", observed=False)["churned"]
        .agg(["mean", "size"])
    )
    populated = by_tier[by_tier["size"] > 0]
    rates = populated["mean"]
    violations = [
        f"{higher} ({rates[higher]:.1%}) <= {lower} ({rates[lower]:.1%})"
        for lower, higher in zip(rates.index[:-1], rates.index[1:])
        if rates[higher] <= rates[lower]
    ]
    auc_drop = float(promotion_metrics["roc_auc"]) - roc_auc
    recall_drop = float(promotion_metrics["recall"]) - recall
    status = _worst(
        [
            _status(auc_drop, thresholds.auc_drop_warn, thresholds.auc_drop_fail),
            _status(recall_drop, thresholds.recall_drop_warn, thresholds.recall_drop_fail),
            "warn" if violations else "ok",
        ]
    )
    rate_text = ", ".join(f"{tier} {rate:.1%}" for tier, rate in rates.items())
    return {
        "status": status,
        "n_members": int(labels.size),
        "n_churned": int(labels.sum()),
        "realised_churn_rate": float(labels.mean()),
        "roc_auc": roc_auc,
        "promotion_roc_auc": float(promotion_metrics["roc_auc"]),
        "roc_auc_drop": auc_drop,
        "recall_at_threshold": recall,
        "promotion_recall": float(promotion_metrics["recall"]),
        "recall_drop": recall_drop,
        "threshold": float(threshold),
        "churn_rate_by_tier": {tier: (float(row["mean"]) if row["size"] else None) for tier, row in by_tier.iterrows()},
        "members_by_tier": {tier: int(size) for tier, size in by_tier["size"].items()},
        "tier_order_violations": violations,
        "message": (
            f"{status}: realised ROC-AUC {roc_auc:.3f} vs {promotion_metrics['roc_auc']:.3f} at promotion "
            f"(drop {auc_drop:+.3f}); recall at threshold {threshold:.4f} {recall:.3f} vs "
            f"{promotion_metrics['recall']:.3f} (drop {recall_drop:+.3f}); churn rate by tier: {rate_text}; "
            f"tier order violations: {'; '.join(violations) if violations else 'none'}"
        ),
    }


def worst_first(drift_frame: pd.DataFrame) -> pd.DataFrame:
    """The :func:`feature_drift` table, worst status first and the largest value first within a status."""
    missing = [column for column in DRIFT_COLUMNS if column not in drift_frame.columns]
    if missing:
        raise ValueError(f"drift_frame lacks columns {missing}")
    rank = drift_frame["status"].map({status: -position for position, status in enumerate(STATUSES)})
    ordered = drift_frame.assign(_rank=rank).sort_values(["_rank", "value"], ascending=[True, False], kind="stable")
    return ordered[DRIFT_COLUMNS]


def drift_table_markdown(drift_frame: pd.DataFrame) -> str:
    """The :func:`feature_drift` table as Markdown, values to 4 decimals, worst status first."""
    return worst_first(drift_frame).to_markdown(index=False, floatfmt=".4f")
