"""The features the weekly scoring reads: week W is built from the latest drop dated in W (its last
complete month only, for members still enrolled on the drop date), so a backfill of an old week
scores exactly what that week knew."""

import dagster as dg

from loyalty_assets.defs.features.assets import OWNERS, feature_output
from loyalty_assets.defs.features.checks import FeatureCheckConfig, feature_check_specs, feature_table_checks
from loyalty_assets.defs.gates import gated_outputs
from loyalty_assets.defs.ingestion.drops import RAW_DROP_INS, latest_drop
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.domain.features import build_features, last_complete_month
from loyalty_assets.domain.labels import members_enrolled_on


@dg.asset(
    description=(
        "The model's features as of the last complete month before the week's latest drop, one row per "
        "member still enrolled on that drop's date: what the weekly scoring reads."
    ),
    io_manager_key="lake_io_manager",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    ins=RAW_DROP_INS,
    partitions_def=weekly_partitions,
    check_specs=feature_check_specs("scoring_features"),
)
def scoring_features(
    context: dg.AssetExecutionContext, config: FeatureCheckConfig, raw_loyalty_history, raw_flight_activity
):
    drop_date, loyalty, activity = latest_drop(context, raw_loyalty_history, raw_flight_activity)
    snapshot = last_complete_month(drop_date)
    features = build_features(loyalty, activity, [snapshot])
    checks = feature_table_checks("scoring_features", features, loyalty, config)
    enrolled = features[features["loyalty_number"].isin(members_enrolled_on(loyalty, drop_date))]
    output = feature_output(enrolled.reset_index(drop=True), drop_date, [snapshot])
    yield from gated_outputs([output], checks, f"scoring_features {context.partition_key}")
