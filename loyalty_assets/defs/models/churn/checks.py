"""Blocking promotion gates on ``churn_model_candidate``: one check per gate, ERROR severity.

Each verdict is also written to the registry, so a promotion (or a later rollback) can prove
that the version it promotes passed every gate.
"""

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.ingestion.drops import RAW_DROP_INS
from loyalty_assets.defs.models.churn.assets import churn_model_candidate
from loyalty_assets.defs.models.promotion import gate_verdict, promotion_gate
from loyalty_assets.defs.partitions import monthly_partitions
from loyalty_assets.defs.resources.storage import LakeResource, latest_partition, read_champion
from loyalty_assets.domain import registry
from loyalty_assets.domain.churn import (
    ChurnGateConfig,
    ChurnTrainingConfig,
    gate_beats_baseline,
    gate_not_worse_than_champion,
    gate_recall,
    gate_roc_auc_floor,
    leakage_violations,
    score_champion_on,
    split_out_of_time,
)
from loyalty_assets.domain.features import build_features

DEFAULTS = ChurnGateConfig()


class RocAucFloorConfig(dg.Config):
    roc_auc_floor: float = Field(default=DEFAULTS.roc_auc_floor, description="Lowest out-of-time ROC-AUC.")


class BaselineMarginConfig(dg.Config):
    baseline_margin: float = Field(default=DEFAULTS.baseline_margin, description="ROC-AUC lead over the baseline.")


class ChampionToleranceConfig(dg.Config):
    champion_tolerance: float = Field(
        default=DEFAULTS.champion_tolerance, description="How much worse than the champion, on the same test rows."
    )


class RecallToleranceConfig(dg.Config):
    recall_tolerance: float = Field(
        default=DEFAULTS.recall_tolerance, description="Allowed shortfall of test recall below the target."
    )


def _verdict(lake: LakeResource, bundle: dict, gate: str, passed: bool, message: str, **metadata):
    return gate_verdict(lake, "churn", bundle, gate, passed, message, **metadata)


def _gate(name: str, description: str, **kwargs):
    return promotion_gate(churn_model_candidate, monthly_partitions, name, description, **kwargs)


@_gate("roc_auc_floor", "Out-of-time ROC-AUC at or above a floor an honest model on real data can meet.")
def roc_auc_floor(config: RocAucFloorConfig, churn_model_candidate, lake: LakeResource) -> dg.AssetCheckResult:
    metrics = churn_model_candidate["record"]["metrics"]
    passed, message = gate_roc_auc_floor(metrics, config.roc_auc_floor)
    return _verdict(lake, churn_model_candidate, "roc_auc_floor", passed, message, roc_auc=metrics["roc_auc"])


@_gate("beats_baseline", "ROC-AUC at or above the tenure and cohort baseline plus a margin.")
def beats_baseline(config: BaselineMarginConfig, churn_model_candidate, lake: LakeResource) -> dg.AssetCheckResult:
    metrics = churn_model_candidate["record"]["metrics"]
    passed, message = gate_beats_baseline(metrics, config.baseline_margin)
    return _verdict(
        lake,
        churn_model_candidate,
        "beats_baseline",
        passed,
        message,
        roc_auc=metrics["roc_auc"],
        baseline_roc_auc=metrics["baseline_roc_auc"],
    )


@_gate(
    "not_worse_than_champion",
    "Not worse than the current champion on the candidate's out-of-time test rows, beyond a tolerance.",
    additional_ins={"churn_training_set": dg.AssetIn()},
)
def not_worse_than_champion(
    config: ChampionToleranceConfig, churn_model_candidate, churn_training_set, lake: LakeResource
) -> dg.AssetCheckResult:
    metrics = churn_model_candidate["record"]["metrics"]
    champion = read_champion(lake, "churn_model")
    champion_auc = None
    if champion is not None and registry.trained_on_older_data(churn_model_candidate["record"], champion["record"]):
        # The champion may have learnt from these older test rows, so comparing would flatter it.
        passed, message = True, (
            f"not compared: the champion {champion['version']} was trained on newer data "
            f"(partition {champion['record']['source_partition']}), so this candidate is registered, not promoted"
        )
    else:
        if champion is not None:
            split = split_out_of_time(churn_training_set, _training_config(churn_model_candidate))
            champion_auc = score_champion_on(split.test, champion["model"], champion["feature_columns"])
        passed, message = gate_not_worse_than_champion(metrics["roc_auc"], champion_auc, config.champion_tolerance)
    return _verdict(
        lake,
        churn_model_candidate,
        "not_worse_than_champion",
        passed,
        message,
        champion_roc_auc=champion_auc if champion_auc is not None else float("nan"),
    )


@_gate("recall_at_threshold", "Out-of-time recall at the frozen threshold at or above the target minus a tolerance.")
def recall_at_threshold(
    config: RecallToleranceConfig, churn_model_candidate, lake: LakeResource
) -> dg.AssetCheckResult:
    metrics = churn_model_candidate["record"]["metrics"]
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


def _training_config(bundle: dict) -> ChurnTrainingConfig:
    config = bundle["record"]["config"]
    horizon = bundle["record"]["horizon_months"]
    return ChurnTrainingConfig(
        test_snapshots=config["test_snapshots"],
        validation_snapshots=config["validation_snapshots"],
        horizon_months=horizon,
        embargo_months=horizon,
    )
