"""One member's ``churn_predictions`` row with numpy only: the online API's fast path.

The batch scores thousands of rows through pandas and scikit-learn; for one row their per-call
overhead (frames, input validation, thread pools) costs ten times the arithmetic. Everything a row
needs is taken from the champions once, when they load:

- segment: the segmentation pipeline's log1p columns, scaler mean and scale and K-Means centres;
  the nearest centre is ``KMeans.predict``'s label, and inactive members are Dabblers by rule;
- risk: the compiled churn model (``compiled.ServingModel``);
- tier: the champion's cut-offs, with ``assign_tiers``'s rule (highest bound strictly exceeded);
- action and experiment arm: the action table's (segment x tier) matrix and control shares, and
  the experiments module's ``experiment_id`` and ``assignment_unit``;
- reasons, only for the tiers the batch explains: ``scoring.top_reasons``'s rule on the one row
  (each feature outside its usual range set to its usual value, all such rows scored in one call of
  the compiled model, the largest rounded drops kept) with the scorer's usual values and the
  batch's ``reason_text``.

``check_against_batch`` compares these rows with ``ChurnScorer.score`` on the champion's validation
rows when the champions load; on any difference the API scores with the batch code instead, so a
change to the batch rules can make the API slower, never different.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from loyalty_assets.domain.experiments import (
    CONTROL,
    EXPERIMENT_COLUMNS,
    HOLD_OUT_ACTION,
    TREATMENT,
    assignment_unit,
    cell_control_shares,
    experiment_id,
)
from loyalty_assets.domain.features import CATEGORICAL_FEATURES, MODEL_FEATURES
from loyalty_assets.domain.periods import week_start
from loyalty_assets.domain.reasons import NO_SINGLE_REASON, reason_text
from loyalty_assets.domain.scoring import (
    EXPLAINED_TIERS,
    PREDICTION_COLUMNS,
    REASON_DECIMALS,
    RISK_TIERS,
    ChurnScorer,
    action_matrix,
)
from loyalty_assets.domain.segmentation import (
    DABBLERS,
    FLIGHTS,
    SEGMENT_NAMES,
    SegmentationModel,
    _log1p_selected,
    assign_segments,
)
from loyalty_assets.serving.compiled import ServingModel, UnsupportedModel

ROW_COLUMNS = PREDICTION_COLUMNS + EXPERIMENT_COLUMNS
# Validation rows the fast path is compared on at load time (all of them when fewer).
CHECK_ROWS = 1500
# Reasons per member: ``top_reasons``'s default ``k``, the one ``ChurnScorer.reasons`` uses.
REASON_COUNT = 3


def current_week() -> str:
    """Monday of the current UTC week: the week a batch run today would score."""
    return week_start(datetime.now(timezone.utc).date()).isoformat()


def feature_frame(loyalty_number: int, snapshot_month: date, features: np.ndarray) -> pd.DataFrame:
    """One member's ``scoring_features`` row, as the batch scores it."""
    frame = pd.DataFrame(features[None, :], columns=MODEL_FEATURES)
    frame.insert(0, "loyalty_number", [loyalty_number])
    frame.insert(1, "snapshot_month", [pd.Timestamp(snapshot_month)])
    return frame


class NearestCentroid:
    """``assign_segments`` for one feature vector: log1p, standardise, nearest K-Means centre."""

    def __init__(self, model: SegmentationModel, feature_columns: Sequence[str] = MODEL_FEATURES):
        steps = model.pipeline.named_steps
        log1p, scaler, kmeans = steps.get("log1p"), steps.get("scale"), steps.get("kmeans")
        if log1p is None or log1p.func is not _log1p_selected or scaler is None or kmeans is None:
            raise UnsupportedModel(f"segmentation pipeline steps {list(steps)}, expected log1p, scale, kmeans")
        columns = list(feature_columns)
        self.positions = np.array([columns.index(name) for name in model.engagement_columns])
        self.flights = columns.index(FLIGHTS)
        self.log_mask = np.asarray(log1p.kw_args["log_mask"], dtype=bool)
        self.mean = scaler.mean_ if scaler.with_mean else np.zeros(len(self.positions))
        self.scale = scaler.scale_ if scaler.with_std else np.ones(len(self.positions))
        self.centers = np.asarray(kmeans.cluster_centers_, dtype=np.float64)
        # KMeans.predict ranks centres by |c|^2 - 2 x.c (|x|^2 is the same for every centre).
        self.center_norms = (self.centers**2).sum(axis=1)
        self.names = [model.names[cluster] for cluster in range(len(self.centers))]

    def segment(self, features: np.ndarray) -> str:
        if not features[self.flights] > 0:
            return DABBLERS
        values = features[self.positions]
        if not np.isfinite(values).all() or (values[self.log_mask] < 0).any():
            raise ValueError("engagement features must be finite, and non-negative where log-scaled")
        values = values.copy()
        values[self.log_mask] = np.log1p(values[self.log_mask])
        scaled = (values - self.mean) / self.scale
        return self.names[int(np.argmin(self.center_norms - 2.0 * (self.centers @ scaled)))]


class UsualRanges:
    """``top_reasons`` for one row of the model's feature columns, with the compiled model."""

    def __init__(self, scorer: ChurnScorer, compiled: ServingModel):
        columns = list(scorer.feature_columns)
        missing = [column for column in columns if column not in scorer.usual_values]
        if missing:
            raise UnsupportedModel(f"no usual value for features {missing}")
        self.columns = columns
        self.low, self.usual, self.high = (
            np.array([scorer.usual_values[column][name] for column in columns], dtype=np.float64)
            for name in ("low", "usual", "high")
        )
        self.categorical = [column in CATEGORICAL_FEATURES for column in columns]
        self.probability = compiled.matrix_probability

    def top_reasons(self, row: np.ndarray, risk: float) -> tuple[str, str]:
        """(``top_reasons``, ``top_reason_features``) of one member whose risk is ``risk``."""
        unusual = ~np.isnan(self.usual) & ((row < self.low) | (row > self.high) | np.isnan(row))
        changed_positions = np.flatnonzero(unusual)
        drops = np.zeros(len(row))
        if changed_positions.size:
            changed = np.repeat(row[None, :], changed_positions.size, axis=0)
            changed[np.arange(changed_positions.size), changed_positions] = self.usual[changed_positions]
            drops[changed_positions] = risk - self.probability(changed)
        drops = np.round(drops, REASON_DECIMALS)
        kept = [position for position in np.argsort(-drops, kind="stable")[:REASON_COUNT] if drops[position] > 0]
        texts = [
            reason_text(self.columns[position], row[position], self.usual[position], self.categorical[position])
            for position in kept
        ]
        return "; ".join(texts) or NO_SINGLE_REASON, ",".join(self.columns[position] for position in kept)


class MemberScorer:
    """The ``churn_predictions`` row of one member from their feature vector (``MODEL_FEATURES`` order)."""

    def __init__(
        self,
        scorer: ChurnScorer,
        segmentation: SegmentationModel,
        segmentation_version: str,
        compiled: ServingModel,
        action_table: pd.DataFrame,
    ):
        if compiled.engine != "treelite":
            raise UnsupportedModel(f"the churn model is served by {compiled.engine}, not compiled")
        if list(scorer.feature_columns) != list(compiled.feature_columns):
            raise UnsupportedModel("the scorer and the compiled model name different feature columns")
        self.scorer = scorer
        self.segmentation, self.segmentation_version = segmentation, str(segmentation_version)
        self.segments = NearestCentroid(segmentation)
        self.compiled = compiled
        self.model_columns = np.array([MODEL_FEATURES.index(name) for name in scorer.feature_columns])
        self.reasons = UsualRanges(scorer, compiled)
        self.bounds = np.array([scorer.cutoffs[tier] for tier in RISK_TIERS[1:]], dtype=np.float64)
        self.actions = action_matrix(action_table)
        shares = cell_control_shares(action_table)
        self.control_shares = {cell: float(share) for cell, share in shares.items()}

    def score(self, loyalty_number: int, snapshot_month: date, features: np.ndarray, week: str) -> dict[str, Any]:
        row = features[self.model_columns][None, :]
        probability = float(self.compiled.matrix_probability(row)[0])
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"churn probability {probability} outside [0, 1]")
        tier_code = int(np.searchsorted(self.bounds, probability, side="left"))
        tier = RISK_TIERS[tier_code]
        segment = self.segments.segment(features)
        action = self.actions[SEGMENT_NAMES.index(segment), tier_code]
        reasons, reason_features = "", ""
        if tier in EXPLAINED_TIERS:
            reasons, reason_features = self.reasons.top_reasons(row[0], probability)
        experiment = experiment_id(week)
        share = self.control_shares[(segment, tier)]
        arm = CONTROL if assignment_unit(experiment, loyalty_number) < share else TREATMENT
        values = {
            "loyalty_number": int(loyalty_number),
            "week": week,
            "snapshot_month": snapshot_month,
            "churn_risk_pct": float(np.round(probability * 100.0, 1)),
            "risk_tier": tier,
            "segment": segment,
            "recommended_action": HOLD_OUT_ACTION if arm == CONTROL else action,
            "top_reasons": reasons,
            "top_reason_features": reason_features,
            "churn_model_version": self.scorer.churn_model_version,
            "segmentation_model_version": self.segmentation_version,
            "experiment_id": experiment,
            "experiment_arm": arm,
            "assigned_action": action,
            "control_share": share,
        }
        return {name: values[name] for name in ROW_COLUMNS}

    def check_against_batch(self, rows: pd.DataFrame, week: str) -> list[str]:
        """Differences from ``ChurnScorer.score`` on ``rows`` (one snapshot), at most ten, none when equal."""
        rows = rows.sort_values("loyalty_number", kind="stable").head(CHECK_ROWS).reset_index(drop=True)
        segments = assign_segments(self.segmentation, rows)
        batch = self.scorer.score(rows, segments, week, self.segmentation_version)
        batch = batch.assign(risk_tier=batch["risk_tier"].astype(object))
        features = rows[MODEL_FEATURES].to_numpy(dtype=np.float64)
        snapshot_month = pd.Timestamp(rows["snapshot_month"].iloc[0]).date()
        differences = []
        for position, expected in enumerate(batch[ROW_COLUMNS].to_dict("records")):
            member = int(expected["loyalty_number"])
            actual = self.score(member, snapshot_month, features[position], week)
            expected["snapshot_month"] = pd.Timestamp(expected["snapshot_month"]).date()
            changed = [name for name in ROW_COLUMNS if actual[name] != expected[name]]
            if changed:
                differences.append(f"member {member}: {', '.join(changed)} differ")
                if len(differences) == 10:
                    break
        return differences

