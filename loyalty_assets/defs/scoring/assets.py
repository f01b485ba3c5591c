"""Weekly scoring with the promoted champions only, saved to the lake and as CSV and Parquet files."""

from datetime import timedelta

import dagster as dg

from loyalty_assets.defs.metadata import markdown_table, table_metadata
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.defs.scoring.columns import PREDICTION_COLUMN_DESCRIPTIONS
from loyalty_assets.defs.scoring.exports import predictions_export_key
from loyalty_assets.defs.storage import LakeResource
from pydantic import Field

from loyalty_assets.domain.experiments import (
    CONTROL,
    DEFAULT_CONTROL_SHARES,
    assign_experiment,
    cell_control_shares,
    experiment_id,
)
from loyalty_assets.domain.scoring import (
    load_action_table,
    score_members,
    tier_segment_counts,
)
from loyalty_assets.domain.segmentation import assign_segments
from loyalty_assets.domain.storage import dataframe_to_parquet_bytes


class ScoringConfig(dg.Config):
    control_shares: dict[str, float] = Field(
        default=DEFAULT_CONTROL_SHARES,
        description="Retention experiment hold-out share per risk tier; the action table's control_share "
        "column overrides it per cell.",
    )


@dg.asset(
    partitions_def=weekly_partitions,
    io_manager_key="lake_io_manager",
    group_name="predictions",
    kinds={"scikit-learn", "pandas", "s3"},
    owners=["team:ml-engineering"],
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(days=8), warn_window=timedelta(days=7, hours=6)
    ),
)
def churn_predictions(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    scoring_features,
    churn_model,
    segmentation_model,
    lake: LakeResource,
) -> dg.Output:
    """Every member enrolled on the week's latest drop date, scored by the promoted champions: churn risk
    (0-100%, calibrated), risk tier, segment, recommended action and the top reasons for High and
    Critical members. Each week is also a retention experiment: a hashed share of every cell is held
    out (``experiment_arm`` control, no intervention). Also written as CSV and Parquet to a stable per-week key in the lake."""
    week = context.partition_key
    segments = assign_segments(segmentation_model["model"], scoring_features)
    action_table = load_action_table()
    scored = score_members(
        churn_model["model"],
        scoring_features,
        churn_model["feature_columns"],
        churn_model["tier_cutoffs"],
        segments,
        action_table,
        week,
        churn_model["version"],
        segmentation_model["version"],
    )
    predictions = assign_experiment(scored, cell_control_shares(action_table, config.control_shares), experiment_id(week))
    store = lake.store()
    csv_key, parquet_key = predictions_export_key(week, "csv"), predictions_export_key(week, "parquet")
    store.put_bytes(csv_key, predictions.to_csv(index=False).encode("utf-8"))
    store.put_bytes(parquet_key, dataframe_to_parquet_bytes(predictions))
    counts = tier_segment_counts(predictions)
    return dg.Output(
        predictions,
        metadata={
            **table_metadata(predictions, PREDICTION_COLUMN_DESCRIPTIONS),
            "members_scored": len(predictions),
            "churn_model_version": churn_model["version"],
            "segmentation_model_version": segmentation_model["version"],
            "critical_share": float((predictions["risk_tier"] == "Critical").mean()),
            "mean_churn_risk_pct": float(predictions["churn_risk_pct"].mean()),
            "experiment_id": experiment_id(week),
            "held_out_members": int((predictions["experiment_arm"] == CONTROL).sum()),
            "tier_by_segment": dg.MetadataValue.md(markdown_table(counts.reset_index(), floatfmt=".0f")),
            "csv": dg.MetadataValue.path(store.url(csv_key)),
            "parquet": dg.MetadataValue.path(store.url(parquet_key)),
        },
    )
