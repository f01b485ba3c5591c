"""Point-in-time features: every monthly snapshot for training (the weekly scoring's snapshot is
``defs/predictions/features.py``).

``customer_features`` month K is built from the latest drop dated in K (all its complete
snapshots, up to K-1), and ``churn_training_set`` labels its mature snapshots.
"""

from datetime import date

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.features.checks import (
    FeatureCheckConfig,
    feature_check_specs,
    feature_table_checks,
)
from loyalty_assets.defs.gates import gated_outputs
from loyalty_assets.defs.ingestion.drops import RAW_DROP_INS, latest_drop
from loyalty_assets.defs.metadata import markdown_table, table_metadata
from loyalty_assets.defs.partitions import monthly_partitions
from loyalty_assets.defs.resources.storage import latest_partition
from loyalty_assets.domain.features import (
    all_snapshots,
    build_features,
    feature_summary_markdown,
    last_complete_month,
)
from loyalty_assets.domain.labels import (
    build_training_set,
    label_counts_by_snapshot,
    positive_rate,
)

OWNERS = ["team:ml-engineering"]


def feature_output(features, drop_date, snapshots) -> dg.Output:
    latest = features[features["snapshot_month"] == features["snapshot_month"].max()]
    return dg.Output(
        features,
        metadata={
            **table_metadata(features),
            "source_drop": drop_date.isoformat(),
            "snapshots": len(snapshots),
            "last_snapshot": str(snapshots[-1].date()),
            "distribution_latest_snapshot": dg.MetadataValue.md(feature_summary_markdown(latest)),
        },
    )


@dg.asset(
    description=(
        "Point-in-time features (the model's columns: 21 documented, member attributes, lifetime and "
        "redemption), one row per eligible member and complete snapshot month of the latest drop in the "
        "month; features at snapshot s read only months <= s."
    ),
    io_manager_key="lake_io_manager",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    ins=RAW_DROP_INS,
    partitions_def=monthly_partitions,
    check_specs=feature_check_specs("customer_features"),
)
def customer_features(
    context: dg.AssetExecutionContext, config: FeatureCheckConfig, raw_loyalty_history, raw_flight_activity
):
    drop_date, loyalty, activity = latest_drop(context, raw_loyalty_history, raw_flight_activity)
    snapshots = all_snapshots(activity, drop_date)
    features = build_features(loyalty, activity, snapshots)
    checks = feature_table_checks("customer_features", features, loyalty, config)
    yield from gated_outputs(
        [feature_output(features, drop_date, snapshots)], checks, f"customer_features {context.partition_key}"
    )


class TrainingSetConfig(dg.Config):
    horizon_months: int = Field(default=3, description="Label: the member cancels within this many months after s.")
    lookback_months: int = Field(
        default=36, description="How many mature snapshots (at most) to train on; 36 keeps every one of 24 months."
    )


@dg.asset(
    partitions_def=monthly_partitions,
    ins={"raw_loyalty_history": RAW_DROP_INS["raw_loyalty_history"]},
    io_manager_key="lake_io_manager",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
)
def churn_training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, customer_features, raw_loyalty_history
) -> dg.Output:
    """Eligible members x mature snapshots in the look-back window, labelled ``churned`` when they
    cancel within ``horizon_months`` after the snapshot; immature snapshots are never emitted."""
    drop_key, loyalty = latest_partition(raw_loyalty_history, "raw_loyalty_history", context.partition_key)
    last_complete = last_complete_month(date.fromisoformat(drop_key))
    if customer_features["snapshot_month"].max() != last_complete:
        raise dg.Failure(
            f"customer_features {context.partition_key} ends at {customer_features['snapshot_month'].max().date()} "
            f"but the month's latest drop dt={drop_key} ends at {last_complete.date()}: re-materialize both together"
        )
    training_set = build_training_set(
        customer_features,
        loyalty,
        horizon_months=config.horizon_months,
        last_complete=last_complete,
        lookback_months=config.lookback_months,
    ).assign(label_horizon_months=config.horizon_months)
    counts = label_counts_by_snapshot(training_set)
    return dg.Output(
        training_set,
        metadata={
            **table_metadata(training_set),
            "source_drop": drop_key,
            "snapshots": len(counts),
            "positive_rate": positive_rate(training_set),
            "horizon_months": config.horizon_months,
            "counts_per_snapshot": dg.MetadataValue.md(markdown_table(counts)),
        },
    )
