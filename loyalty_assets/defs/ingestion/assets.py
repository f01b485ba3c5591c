"""Daily ingestion: one landing drop -> validated raw tables, a quarantine table and blocking gates."""

from datetime import timedelta

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.gates import check_result, gated_outputs
from loyalty_assets.defs.metadata import table_metadata
from loyalty_assets.defs.partitions import daily_partitions
from loyalty_assets.defs.storage import LandingResource
from loyalty_assets.domain.ingest import DropError, IngestResult, ingest_drop
from loyalty_assets.domain.schemas import schema_violations

OWNERS = ["team:data-engineering"]


class IngestConfig(dg.Config):
    max_quarantine_share: float = Field(
        default=0.02,
        description="Largest share of rows (both files) that may be quarantined before the drop is rejected.",
    )


def _check(asset: str, name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name=name, asset=asset, blocking=True, description=description)


RAW_CHECKS = [
    _check("raw_loyalty_history", "columns_and_types", "Every required column is present with its contract type."),
    _check("raw_loyalty_history", "unique_loyalty_number", "One row per member."),
    _check("raw_flight_activity", "columns_and_types", "Every required column is present with its contract type."),
    _check("raw_flight_activity", "unique_member_month", "One row per member and month after de-duplication."),
    _check("raw_flight_activity", "members_in_loyalty_history", "Every activity member exists in the loyalty history."),
    _check(
        "raw_quarantine", "quarantine_share_within_limit", "Quarantined rows stay at or below the configured share."
    ),
]


def _gate_results(result: IngestResult, config: IngestConfig) -> list[dg.AssetCheckResult]:
    loyalty, activity = result.loyalty, result.activity
    share = result.stats["quarantine_share"]
    duplicated_members = int(loyalty["loyalty_number"].duplicated().sum())
    duplicated_months = int(activity.duplicated(["loyalty_number", "year", "month"]).sum())
    orphans = int((~activity["loyalty_number"].isin(loyalty["loyalty_number"])).sum())
    return [
        check_result("raw_loyalty_history", "columns_and_types", schema_violations(loyalty, "loyalty_history")),
        check_result(
            "raw_loyalty_history",
            "unique_loyalty_number",
            [f"{duplicated_members} duplicated loyalty numbers"] if duplicated_members else [],
        ),
        check_result("raw_flight_activity", "columns_and_types", schema_violations(activity, "flight_activity")),
        check_result(
            "raw_flight_activity",
            "unique_member_month",
            [f"{duplicated_months} duplicated member-months"] if duplicated_months else [],
        ),
        check_result(
            "raw_flight_activity",
            "members_in_loyalty_history",
            [f"{orphans} activity rows of unknown members"] if orphans else [],
        ),
        check_result(
            "raw_quarantine",
            "quarantine_share_within_limit",
            [f"quarantine share {share:.2%} is above the limit {config.max_quarantine_share:.2%}"]
            if share > config.max_quarantine_share
            else [],
            {"quarantine_share": float(share), "limit": config.max_quarantine_share},
        ),
    ]


def _raw_out(description: str) -> dg.AssetOut:
    return dg.AssetOut(
        description=description,
        io_manager_key="lake_io_manager",
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=30), warn_window=timedelta(hours=26)
        ),
    )


@dg.multi_asset(
    outs={
        "raw_loyalty_history": _raw_out("Validated customer master from the day's drop (one row per member)."),
        "raw_flight_activity": _raw_out("Validated, de-duplicated monthly flight activity from the day's drop."),
        "raw_quarantine": _raw_out(
            "Rows of the day's drop that could not be used, each with file, row, column and reason."
        ),
    },
    partitions_def=daily_partitions,
    check_specs=RAW_CHECKS,
    group_name="ingestion",
)
def raw_loyalty_tables(context: dg.AssetExecutionContext, config: IngestConfig, landing: LandingResource):
    """Reads the loyalty-history and flight-activity files of the partition's ``dt=`` folder."""
    drop_date = context.partition_key
    loyalty_folder, loyalty_files = landing.drop_files("loyalty_history", drop_date)
    activity_folder, activity_files = landing.drop_files("flight_activity", drop_date)
    try:
        result = ingest_drop(
            loyalty_files,
            activity_files,
            drop_date=drop_date,
            loyalty_folder=loyalty_folder,
            activity_folder=activity_folder,
        )
    except DropError as error:
        raise dg.Failure(description=str(error)) from error

    gates = _gate_results(result, config)
    stats = result.stats

    def output(name: str, frame, **extra) -> dg.Output:
        return dg.Output(frame, output_name=name, metadata={**table_metadata(frame), "drop_date": drop_date, **extra})

    quarantine = output(
        "raw_quarantine",
        result.quarantine,
        quarantined_rows=stats["quarantined_rows"],
        quarantine_share=float(stats["quarantine_share"]),
        quarantined_by_reason=dg.MetadataValue.json(stats["quarantined_by_reason"]),
    )
    clean_tables = [
        output(
            "raw_loyalty_history",
            result.loyalty,
            source_files=dg.MetadataValue.json(stats["source_files"]["loyalty_history"]),
            negative_salary=stats["negative_salary"],
            unknown_category=stats["unknown_category"],
        ),
        output(
            "raw_flight_activity",
            result.activity,
            source_files=dg.MetadataValue.json(stats["source_files"]["flight_activity"]),
            activity_variant=stats["activity_variant"],
            exact_duplicates_dropped=stats["exact_duplicates_dropped"],
            conflicting_keys_resolved=stats["conflicting_keys_resolved"],
            conflicting_rows_dropped=stats["conflicting_rows_dropped"],
            flights_before_enrollment=stats["flights_before_enrollment"],
        ),
    ]
    # A rejected drop keeps its quarantine table for inspection; its clean tables are not written.
    yield from gated_outputs(clean_tables, gates, f"drop {drop_date}", rejected=[quarantine])
