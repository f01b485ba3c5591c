"""Point-in-time features: every monthly snapshot for training, the latest one for weekly scoring.

``customer_features`` month K is built from the latest drop dated in K (all its complete
snapshots, up to K-1). ``scoring_features`` week W is built from the latest drop dated in W
(its last complete month only, for members still enrolled on the drop date), so a backfill of
an old week scores exactly what that week knew.
"""

from datetime import date

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.drops import RAW_DROP_INS, latest_drop
from loyalty_assets.defs.features.checks import (
    FeatureCheckConfig,
    feature_check_specs,
    feature_table_checks,
)
from loyalty_assets.defs.gates import gated_outputs
from loyalty_assets.defs.metadata import markdown_table, table_metadata
from loyalty_assets.defs.partitions import monthly_partitions, weekly_partitions
from loyalty_assets.defs.storage import latest_partition
from loyalty_assets.domain.features import (
    all_snapshots,
    build_features,
    feature_summary_markdown,
    last_complete_month,
)
from loyalty_assets.domain.labels import (
    build_training_set,
    label_counts_by_snapshot,
    members_enrolled_on,
    positive_rate,
)

OWNERS = ["team:ml-engineering"]


def _feature_output(features, drop_date, snapshots) -> dg.Output:
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
        "Point-in-time features (21 documented columns), one row per eligible member and complete "
        "snapshot month of the latest drop in the month; features at snapshot s read only months <= s."
    ),
    io_manager_key="lake_io_manager",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    ins=RAW_DROP_INS,
    partitions_def=monthly_partitions,
    check_specs=feature_check_specs("customer_features"),
    group_name="features",
)
def customer_features(
    context: dg.AssetExecutionContext, config: FeatureCheckConfig, raw_loyalty_history, raw_flight_activity
):
    drop_date, loyalty, activity = latest_drop(context, raw_loyalty_history, raw_flight_activity)
    snapshots = all_snapshots(activity, drop_date)
    features = build_features(loyalty, activity, snapshots)
    checks = feature_table_checks("customer_features", features, loyalty, config)
    yield from gated_outputs(
        [_feature_output(features, drop_date, snapshots)], checks, f"customer_features {context.partition_key}"
    )


@dg.asset(
    description=(
        "The 21 features as of the last complete month before the week's latest drop, one row per "
        "member still enrolled on that drop's date: what the weekly scoring reads."
    ),
    io_manager_key="lake_io_manager",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    ins=RAW_DROP_INS,
    partitions_def=weekly_partitions,
    check_specs=feature_check_specs("scoring_features"),
    group_name="predictions",
)
def scoring_features(
    context: dg.AssetExecutionContext, config: FeatureCheckConfig, raw_loyalty_history, raw_flight_activity
):
    drop_date, loyalty, activity = latest_drop(context, raw_loyalty_history, raw_flight_activity)
    snapshot = last_complete_month(drop_date)
    features = build_features(loyalty, activity, [snapshot])
    checks = feature_table_checks("scoring_features", features, loyalty, config)
    enrolled = features[features["loyalty_number"].isin(members_enrolled_on(loyalty, drop_date))]
    output = _feature_output(enrolled.reset_index(drop=True), drop_date, [snapshot])
    yield from gated_outputs([output], checks, f"scoring_features {context.partition_key}")


class TrainingSetConfig(dg.Config):
    horizon_months: int = Field(default=3, description="Label: the member cancels within this many months after s.")
    lookback_months: int = Field(
        default=36, description="How many mature snapshots (at most) to train on; 36 keeps every one of 24 months."
    )


@dg.asset(
    partitions_def=monthly_partitions,
    ins={"raw_loyalty_history": RAW_DROP_INS["raw_loyalty_history"]},
    io_manager_key="lake_io_manager",
    group_name="features",
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
