"""Blocking promotion gates on ``churn_model_candidate``: one check per gate, ERROR severity.

Each verdict is also written to the registry, so a promotion (or a later rollback) can prove
that the version it promotes passed every gate.
"""

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.ingestion.drops import RAW_DROP_INS
from loyalty_assets.defs.models.churn.assets import ChurnCandidateConfig, churn_model_candidate
from loyalty_assets.defs.models.promotion import gate_verdict, promotion_gate
from loyalty_assets.defs.partitions import monthly_partitions
from loyalty_assets.defs.resources.storage import LakeResource, latest_partition, read_champion
from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import ChurnBundle
from loyalty_assets.domain.churn import (
    ChurnGateConfig,
    ChurnTrainingConfig,
    compare_with_champion,
    gate_beats_baseline,
    gate_not_worse_than_champion,
    gate_recall,
    gate_roc_auc_floor,
    leakage_violations,
    split_out_of_time,
)
from loyalty_assets.domain.features import build_features

DEFAULTS = ChurnGateConfig()


class RocAucFloorConfig(dg.Config):
    roc_auc_floor: float = Field(default=DEFAULTS.roc_auc_floor, description="Lowest out-of-time ROC-AUC.")


class BaselineMarginConfig(dg.Config):
    baseline_margin: float = Field(
        default=DEFAULTS.baseline_margin,
        description="The 95% lower bound of the paired ROC-AUC gain over the baseline must exceed this.",
    )


class ChampionToleranceConfig(dg.Config):
    champion_tolerance: float = Field(
        default=DEFAULTS.champion_tolerance,
        description="The 95% lower bound of candidate - champion ROC-AUC on the same test rows must exceed -this.",
    )


class RecallToleranceConfig(dg.Config):
    recall_tolerance: float = Field(
        default=DEFAULTS.recall_tolerance, description="Allowed shortfall of test recall below the target."
    )


def _verdict(lake: LakeResource, bundle: ChurnBundle, gate: str, passed: bool, message: str, **metadata):
    return gate_verdict(lake, bundle, gate, passed, message, **metadata)


def _gate(name: str, description: str, **kwargs):
    return promotion_gate(churn_model_candidate, monthly_partitions, name, description, **kwargs)


@_gate(
    "roc_auc_floor",
    "Out-of-time ROC-AUC, averaged over the rolling backtest windows, at or above a floor an honest model meets.",
)
def roc_auc_floor(config: RocAucFloorConfig, churn_model_candidate, lake: LakeResource) -> dg.AssetCheckResult:
    metrics = churn_model_candidate.record.metrics
    passed, message = gate_roc_auc_floor(metrics, config.roc_auc_floor)
    return _verdict(
        lake,
        churn_model_candidate,
        "roc_auc_floor",
        passed,
        message,
        roc_auc=metrics["roc_auc"],
        rolling_roc_auc_mean=metrics["rolling_roc_auc_mean"],
        rolling_roc_auc_windows=metrics["rolling_roc_auc_windows"],
    )


@_gate(
    "beats_baseline",
    "Paired member-bootstrap ROC-AUC gain over the gradient-boosted tenure + promotion baseline, lower bound > margin.",
)
def beats_baseline(config: BaselineMarginConfig, churn_model_candidate, lake: LakeResource) -> dg.AssetCheckResult:
    metrics = churn_model_candidate.record.metrics
    passed, message = gate_beats_baseline(metrics, config.baseline_margin)
    return _verdict(
        lake,
        churn_model_candidate,
        "beats_baseline",
        passed,
        message,
        roc_auc=metrics["roc_auc"],
        baseline_roc_auc=metrics["baseline_roc_auc"],
        baseline_difference=metrics["baseline_difference"],
        baseline_difference_low=metrics["baseline_difference_low"],
        baseline_difference_high=metrics["baseline_difference_high"],
    )


@_gate(
    "not_worse_than_champion",
    "Not worse than the current champion on the candidate's out-of-time test rows, beyond a tolerance.",
    additional_ins={"churn_training_set": dg.AssetIn()},
)
def not_worse_than_champion(
    config: ChampionToleranceConfig, churn_model_candidate, churn_training_set, lake: LakeResource
) -> dg.AssetCheckResult:
    metrics = churn_model_candidate.record.metrics
    champion = read_champion(lake, "churn_model")
    difference = {"estimate": float("nan"), "low": float("nan"), "high": float("nan")}
    champion_auc = float("nan")
    candidate_record = churn_model_candidate.record
    if champion is not None and registry.trained_on_older_data(candidate_record.to_json(), champion.record.to_json()):
        # The champion may have learnt from these older test rows, so comparing would flatter it.
        passed, message = True, (
            f"not compared: the champion {champion.version} was trained on newer data "
            f"(partition {champion.record.source_partition}), so this candidate is registered, not promoted"
        )
    else:
        compared = None
        if champion is not None:
            training_config = _training_config(churn_model_candidate)
            split = split_out_of_time(churn_training_set, training_config)
            intervals = compare_with_champion(
                split.test,
                churn_model_candidate.test_scores["score"],
                champion.model,
                champion.feature_columns,
                training_config.bootstrap_rounds,
                training_config.seed,
            )
            compared = difference = intervals["candidate - champion"]
            champion_auc = intervals["champion"]["estimate"]
        passed, message = gate_not_worse_than_champion(compared, config.champion_tolerance)
    return _verdict(
        lake,
        churn_model_candidate,
        "not_worse_than_champion",
        passed,
        message,
        champion_roc_auc=champion_auc,
        champion_difference=difference["estimate"],
        champion_difference_low=difference["low"],
        champion_difference_high=difference["high"],
    )


@_gate(
    "recall_at_threshold",
    "Out-of-time recall at the frozen evaluation threshold at or above the target minus a tolerance.",
)
def recall_at_threshold(
    config: RecallToleranceConfig, churn_model_candidate, lake: LakeResource
) -> dg.AssetCheckResult:
    metrics = churn_model_candidate.record.metrics
    passed, message = gate_recall(metrics, metrics["recall_target"], config.recall_tolerance)
    return _verdict(lake, churn_model_candidate, "recall_at_threshold", passed, message, recall=metrics["recall"])


@_gate(
    "no_leakage",
    "No feature value computed after its snapshot (recomputed point-in-time on a sample), and no member "
    "in both train and test for the same snapshot.",
    additional_ins={"churn_training_set": dg.AssetIn(), **RAW_DROP_INS},
)
def no_leakage(
    context: dg.AssetCheckExecutionContext,
    churn_model_candidate,
    churn_training_set,
    raw_loyalty_history,
    raw_flight_activity,
    lake: LakeResource,
) -> dg.AssetCheckResult:
    window = f"month {context.partition_key[:7]}"
    _, loyalty = latest_partition(raw_loyalty_history, "raw_loyalty_history", window)
    _, activity = latest_partition(raw_flight_activity, "raw_flight_activity", window)
    split = split_out_of_time(churn_training_set, _training_config(churn_model_candidate))
    violations = leakage_violations(
        churn_training_set, split, lambda snapshots: build_features(loyalty, activity, snapshots)
    )
    message = "; ".join(violations[:10]) or "no leakage found"
    return _verdict(lake, churn_model_candidate, "no_leakage", not violations, message, violations=len(violations))


def _training_config(bundle: ChurnBundle) -> ChurnTrainingConfig:
    return ChurnCandidateConfig(**bundle.record.config).to_training_config(bundle.record.horizon_months)
