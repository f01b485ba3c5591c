"""Weekly scoring with the promoted champions only, saved to the lake and as CSV and Parquet files."""

from datetime import date, timedelta

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.ingestion.drops import RAW_DROP_INS
from loyalty_assets.defs.metadata import markdown_table, table_metadata
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.defs.predictions.columns import PREDICTION_COLUMN_DESCRIPTIONS
from loyalty_assets.defs.resources.storage import LAZY_PARTITIONS, LakeResource, latest_partition
from loyalty_assets.domain.experiments import CONTROL, DEFAULT_CONTROL_SHARES, experiment_id
from loyalty_assets.domain.lake_keys import predictions_export_key
from loyalty_assets.domain.scoring import (
    ChurnScorer,
    add_relative_risk,
    load_action_table,
    tier_segment_counts,
    unscored_member_counts,
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
    # The scoring drop's members and quarantine, to count every member left out of the week.
    ins={
        "raw_loyalty_history": RAW_DROP_INS["raw_loyalty_history"],
        "raw_quarantine": dg.AssetIn(
            metadata=LAZY_PARTITIONS, partition_mapping=RAW_DROP_INS["raw_loyalty_history"].partition_mapping
        ),
    },
    io_manager_key="lake_io_manager",
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
    raw_loyalty_history,
    raw_quarantine,
    lake: LakeResource,
) -> dg.Output:
    """Every member enrolled on the week's latest drop date, scored by the promoted champions: churn risk
    (0-100%, calibrated), risk tier, segment, recommended action and the top reasons for High and
    Critical members. Each week is also a retention experiment: a hashed share of every cell is held
    out (``experiment_arm`` control, no intervention). Also written as CSV and Parquet to a stable
    per-week key in the lake. The metadata counts every member of the drop left out of scoring, per
    reason."""
    week = context.partition_key
    segments = assign_segments(segmentation_model.model, scoring_features)
    # The online API (loyalty_assets.serving) scores through the same ChurnScorer.
    scorer = ChurnScorer.from_bundle(churn_model, load_action_table(), control_shares=config.control_shares)
    predictions = add_relative_risk(scorer.score(scoring_features, segments, week, segmentation_model.version))
    drop_key, loyalty = latest_partition(raw_loyalty_history, "raw_loyalty_history", f"week {week}")
    if drop_key not in raw_quarantine:
        raise dg.Failure(f"raw_quarantine {drop_key} is missing beside raw_loyalty_history {drop_key}: ingest it again")
    quarantine = raw_quarantine[drop_key]()
    coverage = unscored_member_counts(loyalty, quarantine, predictions, date.fromisoformat(drop_key))
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
            "scoring_drop": drop_key,
            "members_in_drop": coverage["members_in_drop"],
            "members_cancelled": coverage["members_cancelled"],
            "members_left_out": coverage["members_left_out"],
            "members_left_out_by_reason": dg.MetadataValue.json(coverage["left_out_by_reason"]),
            "churn_model_version": churn_model.version,
            "segmentation_model_version": segmentation_model.version,
            "critical_share": float((predictions["risk_tier"] == "Critical").mean()),
            "mean_churn_risk_pct": float(predictions["churn_risk_pct"].mean()),
            "experiment_id": experiment_id(week),
            "held_out_members": int((predictions["experiment_arm"] == CONTROL).sum()),
            "tier_by_segment": dg.MetadataValue.md(markdown_table(counts.reset_index(), floatfmt=".0f")),
            "csv": dg.MetadataValue.path(store.url(csv_key)),
            "parquet": dg.MetadataValue.path(store.url(parquet_key)),
        },
    )
