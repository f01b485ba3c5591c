"""Monthly churn training: a gated candidate, and the promoted champion that scoring reads."""

import dagster as dg
import pandas as pd
from pydantic import Field

from loyalty_assets.defs.metadata import CHURN_INTERFACE_METRICS, markdown_table, significant
from loyalty_assets.defs.partitions import monthly_partitions
from loyalty_assets.defs.promotion import PromotionConfig, promote
from loyalty_assets.defs.storage import LAZY_PARTITIONS, LakeResource
from loyalty_assets.domain import registry
from loyalty_assets.domain.churn import (
    ChurnTrainingConfig,
    data_fingerprint,
    evaluation_plot_png,
    train_churn_candidate,
)
from loyalty_assets.domain.drift import build_reference
from loyalty_assets.domain.features import FEATURE_COLUMNS, categorical_among
from loyalty_assets.domain.figures import png_markdown
from loyalty_assets.domain.reasons import usual_values
from loyalty_assets.domain.scoring import assign_tiers, tier_cutoffs

OWNERS = ["team:ml-engineering"]
CHURN_GATES = ["roc_auc_floor", "beats_baseline", "not_worse_than_champion", "recall_at_threshold", "no_leakage"]


class ChurnCandidateConfig(dg.Config):
    seed: int = Field(default=42, description="Random seed: the same seed and data give the same model.")
    n_estimators: int = 300
    min_samples_leaf: int = 25
    n_jobs: int = Field(default=2, description="Cores for the forest.")
    # 24 months of history give 9-10 mature snapshots with full 12-month windows; with the embargo
    # of one label horizon at both cuts, 2 test and 1 validation snapshot leave 2-3 for training.
    test_snapshots: int = Field(default=2, description="Latest mature snapshots held out as the out-of-time test.")
    validation_snapshots: int = Field(
        default=1, description="Snapshot(s) before the test, after an embargo, for calibration and threshold."
    )
    recall_target: float = Field(default=0.81, description="The threshold is the highest with this validation recall.")


def _metadata_value(value):
    return [str(item) for item in value] if isinstance(value, list) else value


@dg.asset(
    partitions_def=monthly_partitions,
    io_manager_key="model_io_manager",
    group_name="models",
    kinds={"scikit-learn", "pandas"},
    owners=OWNERS,
)
def churn_model_candidate(
    context: dg.AssetExecutionContext, config: ChurnCandidateConfig, churn_training_set, lake: LakeResource
) -> dg.Output:
    """RandomForest (class-weighted) calibrated on later validation snapshots, evaluated on the latest
    mature snapshots (out of time). Registered as a version; promotion waits for the blocking gates."""
    horizon = int(churn_training_set["label_horizon_months"].iloc[0])
    training_config = ChurnTrainingConfig(
        seed=config.seed,
        n_estimators=config.n_estimators,
        min_samples_leaf=config.min_samples_leaf,
        n_jobs=config.n_jobs,
        test_snapshots=config.test_snapshots,
        validation_snapshots=config.validation_snapshots,
        horizon_months=horizon,
        embargo_months=horizon,
        recall_target=config.recall_target,
    )
    candidate = train_churn_candidate(churn_training_set, FEATURE_COLUMNS, training_config)
    cutoffs = tier_cutoffs(candidate.validation_scores)
    test_rows = churn_training_set[churn_training_set["snapshot_month"].isin(candidate.test_snapshots)]
    test_scores = candidate.test_scores["score"].to_numpy()
    tiers = assign_tiers(test_scores, cutoffs)
    reference = build_reference(test_rows, FEATURE_COLUMNS, categorical_among(FEATURE_COLUMNS), test_scores, tiers)
    fingerprint = data_fingerprint(churn_training_set)
    version = registry.make_version(context.partition_key, fingerprint, config.model_dump())
    window = {
        "train": [str(s.date()) for s in candidate.train_snapshots],
        "validation": [str(s.date()) for s in candidate.validation_snapshots],
        "test": [str(s.date()) for s in candidate.test_snapshots],
    }
    record = {
        "source_partition": context.partition_key,
        "training_window": window,
        "metrics": candidate.metrics,
        "threshold": candidate.threshold,
        "tier_cutoffs": cutoffs,
        "feature_list": FEATURE_COLUMNS,
        "data_fingerprint": fingerprint,
        "library_versions": registry.library_versions(),
        "config": config.model_dump(),
        "horizon_months": horizon,
    }
    bundle = {
        "kind": "churn",
        "version": version,
        "model": candidate.model,
        "threshold": candidate.threshold,
        "feature_columns": FEATURE_COLUMNS,
        "tier_cutoffs": cutoffs,
        "drift_reference": reference,
        # What the weekly and online reasons compare a member with: the test snapshots' usual values.
        "usual_values": usual_values(test_rows, FEATURE_COLUMNS, categorical_among(FEATURE_COLUMNS)),
        "test_scores": candidate.test_scores,
        "record": record,
    }
    registry.register(lake.store(), "churn", version, bundle, record)
    importances = markdown_table(pd.DataFrame(candidate.feature_importances.items(), columns=["feature", "importance"]))
    metrics = {key: significant(_metadata_value(candidate.metrics[key])) for key in CHURN_INTERFACE_METRICS}
    return dg.Output(
        bundle,
        metadata={
            **metrics,
            "test_snapshots": dg.MetadataValue.json(candidate.metrics["test_snapshots"]),
            "version": version,
            "horizon_months": horizon,
            "feature_importances": dg.MetadataValue.md(importances),
            "evaluation_plot": dg.MetadataValue.md(
                png_markdown(evaluation_plot_png(candidate.test_scores), "ROC and precision-recall on the test")
            ),
        },
    )


@dg.asset(
    ins={"churn_model_candidate": dg.AssetIn(metadata=LAZY_PARTITIONS)},
    io_manager_key="model_io_manager",
    group_name="models",
    kinds={"scikit-learn"},
    owners=OWNERS,
    output_required=False,
)
def churn_model(
    context: dg.AssetExecutionContext, config: PromotionConfig, churn_model_candidate, lake: LakeResource
):
    """The promoted churn champion, the only churn model scoring reads. It materializes only after
    every blocking gate on its candidate passed, and never moves back in training-data time by
    itself; otherwise the previous champion stays."""
    yield from promote(context, "churn", CHURN_GATES, config, churn_model_candidate, lake)
