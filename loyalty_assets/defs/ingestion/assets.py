"""Daily ingestion: one landing drop -> validated raw tables, a quarantine table and blocking gates.

The tables are written under the run's version and become visible in one step when the drop's
commit is written after them (``domain.drop_commits``); a drop a gate rejects is never committed.
"""

from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.gates import check_result, gated_outputs
from loyalty_assets.defs.metadata import table_metadata
from loyalty_assets.defs.partitions import daily_partitions
from loyalty_assets.defs.storage import LakeResource, LandingResource
from loyalty_assets.domain.completeness import (
    DropProfile,
    last_complete_month_problems,
    manifest_problems,
    row_count_problems,
)
from loyalty_assets.domain.drop_commits import (
    CommitError,
    DropCommit,
    commit_drop,
    previous_accepted_commit,
)
from loyalty_assets.domain.ingest import ACTIVITY_TABLE, LOYALTY_TABLE, DropError, IngestResult, SourceFile, ingest_drop
from loyalty_assets.domain.lake_keys import table_version_key
from loyalty_assets.domain.schemas import schema_violations

OWNERS = ["team:data-engineering"]


class IngestConfig(dg.Config):
    max_quarantine_share: float = Field(
        default=0.02,
        description="Largest share of rows (both files) that may be quarantined before the drop is rejected.",
    )
    max_missing_last_month_share: float = Field(
        default=0.01,
        description=(
            "Largest share of the members who flew in the month before the drop's last complete month "
            "that may have no row in that last complete month."
        ),
    )
    max_shrink_share: float = Field(
        default=0.01,
        description="Largest share by which each table's row count may fall below the previous accepted drop's.",
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
    _check(
        "raw_flight_activity",
        "last_complete_month_complete",
        "The drop's last complete month has a row for (nearly) every member who flew in the month before it.",
    ),
    _check(
        "raw_loyalty_history",
        "rows_within_bounds_of_previous_drop",
        "Rows read fall at most the configured share below the previous accepted drop's.",
    ),
    _check(
        "raw_flight_activity",
        "rows_within_bounds_of_previous_drop",
        "Rows read fall at most the configured share below the previous accepted drop's.",
    ),
    *(
        _check(asset, "matches_manifest", "The files match the folder's _manifest.json, when there is one.")
        for asset in ("raw_loyalty_history", "raw_flight_activity")
    ),
]


@dataclass(frozen=True)
class LandedTable:
    """One table's files of a drop and its folder's manifest (None when the folder has none)."""

    folder: str
    files: list[SourceFile]
    manifest_path: str
    manifest: bytes | None


def _land(landing: LandingResource, table: str, drop_date: str) -> LandedTable:
    folder, files = landing.drop_files(table, drop_date)
    return LandedTable(folder, files, *landing.drop_manifest(table, drop_date))


def _completeness_results(
    result: IngestResult,
    drop_date: str,
    landed: dict[str, LandedTable],
    previous: DropCommit | None,
    config: IngestConfig,
) -> list[dg.AssetCheckResult]:
    """The completeness gate (``domain.completeness``) as check results."""
    missing, missing_metadata = last_complete_month_problems(
        result.activity, date.fromisoformat(drop_date), config.max_missing_last_month_share
    )
    previous_profile = DropProfile.from_dict(previous.profile) if previous else None
    results = [check_result("raw_flight_activity", "last_complete_month_complete", missing, missing_metadata)]
    for asset, table, field in (
        ("raw_loyalty_history", LOYALTY_TABLE, "loyalty_rows"),
        ("raw_flight_activity", ACTIVITY_TABLE, "activity_rows"),
    ):
        rows = result.stats["rows_read"][table]
        previous_rows = getattr(previous_profile, field) if previous_profile else None
        previous_drop = previous.drop_date if previous else None
        results.append(
            check_result(
                asset,
                "rows_within_bounds_of_previous_drop",
                row_count_problems(table, rows, previous_rows, previous_drop, config.max_shrink_share),
                {"rows": rows, "previous_rows": previous_rows or 0, "previous_drop": previous_drop or "none"},
            )
        )
    for asset, table in (("raw_loyalty_history", LOYALTY_TABLE), ("raw_flight_activity", ACTIVITY_TABLE)):
        drop = landed[table]
        files = {source.name: source.data for source in drop.files}
        problems = manifest_problems(drop.manifest_path, drop.manifest, files, result.stats["rows_read"][table])
        results.append(check_result(asset, "matches_manifest", problems, {"manifest": drop.manifest is not None}))
    return results


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
def raw_loyalty_tables(
    context: dg.AssetExecutionContext, config: IngestConfig, landing: LandingResource, lake: LakeResource
):
    """Reads the loyalty-history and flight-activity files of the partition's ``dt=`` folder."""
    drop_date = context.partition_key
    landed = {table: _land(landing, table, drop_date) for table in (LOYALTY_TABLE, ACTIVITY_TABLE)}
    loyalty_folder, loyalty_files = landed[LOYALTY_TABLE].folder, landed[LOYALTY_TABLE].files
    activity_folder, activity_files = landed[ACTIVITY_TABLE].folder, landed[ACTIVITY_TABLE].files
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

    store = lake.store()
    previous = previous_accepted_commit(store, drop_date)
    gates = _gate_results(result, config) + _completeness_results(result, drop_date, landed, previous, config)
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
    # A rejected drop keeps its quarantine table for inspection under its own version; its clean tables
    # are not written and nothing is committed, so the committed version of the partition stays.
    quarantine_path = store.url(table_version_key("raw_quarantine", drop_date, context.run.run_id))
    yield from gated_outputs(
        clean_tables, gates, f"drop {drop_date}", rejected=[quarantine], note=f"its quarantine: {quarantine_path}"
    )
    # Dagster hands each output to the IO manager as it is yielded: every table is written by now.
    profile = DropProfile(
        loyalty_rows=stats["rows_read"][LOYALTY_TABLE],
        activity_rows=stats["rows_read"][ACTIVITY_TABLE],
        members=len(result.loyalty),
    )
    try:
        commit_drop(store, drop_date, context.run.run_id, profile.to_dict())
    except CommitError as error:
        raise dg.Failure(description=str(error)) from error
    context.log.info(f"committed drop {drop_date} version {context.run.run_id}")
