"""Weekly distribution of ``churn_predictions``: dashboards, warehouse, Salesforce, marketing.

Each destination is its own asset, so a failure at one (a database down, an SMTP refusal)
fails that asset alone while the others complete. Every write replaces the week's rows or
file, so re-running a week repairs a destination without duplicates. The marketing e-mail,
which cannot be replaced once sent, goes out once per week (a sent-marker in the lake).
"""

from datetime import date

import dagster as dg
import pandas as pd
from pydantic import Field

from loyalty_assets.defs.distribution.resources import (
    AppFlowResource,
    DashboardDatabase,
)
from loyalty_assets.defs.drops import RAW_DROP_INS
from loyalty_assets.defs.experiments.assets import LATEST_EXPERIMENT_RESULTS, latest_results
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.defs.resources.mailer import Mailer
from loyalty_assets.defs.storage import LAZY_PARTITIONS, LakeResource, latest_partition
from loyalty_assets.domain import registry
from loyalty_assets.domain.experiments import uplift_lines
from loyalty_assets.domain.lake_keys import (
    appflow_source_key,
    marketing_message_name,
    predictions_export_key,
    sent_marker_key,
)
from loyalty_assets.domain.messaging import (
    build_marketing_email,
    critical_members,
    deliver_once,
    summarize_for_marketing,
)
from loyalty_assets.domain.warehouse import crm_export, start_appflow

GROUP = "distribution"
OWNERS = ["team:data-engineering"]
DASHBOARD_TABLE = "churn_predictions"


def segmentation_version_of(predictions: pd.DataFrame) -> str:
    """The one segmentation model version that assigned the week's segments."""
    versions = predictions["segmentation_model_version"].unique()
    if len(versions) != 1:
        raise dg.Failure(f"the week's predictions carry several segmentation versions: {sorted(versions)}")
    return str(versions[0])


@dg.asset(
    partitions_def=weekly_partitions,
    group_name=GROUP,
    kinds={"postgres", "pandas"},
    owners=OWNERS,
    description=(
        "The week's churn predictions in the dashboard database (RDS PostgreSQL; a DuckDB file locally), "
        "table churn_predictions: the week's rows are replaced in one transaction."
    ),
)
def rds_churn_predictions(
    context: dg.AssetExecutionContext, churn_predictions: pd.DataFrame, dashboard_database: DashboardDatabase
) -> dg.MaterializeResult:
    week = date.fromisoformat(context.partition_key)
    location = dashboard_database.location()
    try:
        written = dashboard_database.replace_week(DASHBOARD_TABLE, churn_predictions, week)
    except ConnectionError as error:
        raise dg.Failure(
            description=f"dashboard database {location} is unreachable; week {week} was not loaded: {error}",
            metadata={"destination": location},
        ) from error
    context.log.info(f"replaced week {week} of {dashboard_database.table_name(DASHBOARD_TABLE)} in {location}")
    return dg.MaterializeResult(
        metadata={
            "rows_written": written,
            "dagster/partition_row_count": written,
            "dagster/table_name": dashboard_database.table_name(DASHBOARD_TABLE),
            "destination": location,
        }
    )


@dg.asset(
    partitions_def=weekly_partitions,
    group_name=GROUP,
    kinds={"redshift", "pandas"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    metadata={"partition_expr": "week"},
    description=(
        "The week's churn predictions in the warehouse (Redshift; DuckDB schema analytics locally), "
        "week as a timestamp column; the warehouse IO manager replaces the week's rows."
    ),
)
def redshift_churn_predictions(churn_predictions: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    frame = churn_predictions.assign(week=pd.to_datetime(churn_predictions["week"], format="%Y-%m-%d"))
    return dg.Output(frame, metadata={"rows_written": len(frame)})


@dg.asset(
    partitions_def=weekly_partitions,
    group_name=GROUP,
    kinds={"salesforce", "s3"},
    owners=OWNERS,
    description=(
        "The CRM columns of the week's predictions as CSV where the S3 -> Salesforce AppFlow flow reads "
        "(churn_scores/week=<week>/churn_scores.csv), then an on-demand run of that flow."
    ),
)
def salesforce_churn_sync(
    context: dg.AssetExecutionContext, churn_predictions: pd.DataFrame, appflow: AppFlowResource
) -> dg.MaterializeResult:
    week = context.partition_key
    export = crm_export(churn_predictions)
    store = appflow.source_store()
    key = appflow_source_key(week)
    store.put_bytes(key, export.to_csv(index=False).encode("utf-8"))
    metadata = {
        "rows_written": len(export),
        "columns": ", ".join(export.columns),
        "source_file": dg.MetadataValue.path(store.url(key)),
    }
    if appflow.flow_name is None:
        context.log.info(f"AppFlow is not configured (no LOYALTY_APPFLOW_FLOW_NAME): wrote {store.url(key)} only")
        return dg.MaterializeResult(metadata={**metadata, "appflow": "not configured"})
    # One token per run and week: a retried step does not start the flow twice.
    execution_id = start_appflow(appflow.client(), appflow.flow_name, client_token=f"{context.run.run_id}:{week}")
    context.log.info(f"started AppFlow flow {appflow.flow_name} (execution {execution_id}) for {store.url(key)}")
    return dg.MaterializeResult(
        metadata={**metadata, "appflow": appflow.flow_name, "appflow_execution_id": execution_id}
    )


class MarketingEmailConfig(dg.Config):
    top_members: int = Field(default=10, description="Critical members listed, by expected loss.")
    resend: bool = Field(
        default=False, description="Send a new e-mail even though this week's already went out (its sent-marker)."
    )


@dg.asset(
    partitions_def=weekly_partitions,
    group_name=GROUP,
    kinds={"email"},
    owners=OWNERS,
    ins={
        # This week and the one before, loaded lazily: the first week has no previous one.
        "churn_predictions": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-1), metadata=LAZY_PARTITIONS
        ),
        "raw_loyalty_history": RAW_DROP_INS["raw_loyalty_history"],
        "retention_experiment_results": LATEST_EXPERIMENT_RESULTS,
    },
    description=(
        "The weekly marketing e-mail: members per risk tier and segment, change from last week, the top "
        "Critical members to call by expected loss (risk x CLV, in CAD) with each one's action and reasons, "
        "what the capacity-based tiers mean, the segment profile of the segmentation that scored the week, "
        "the latest realised uplift per action and where the full file is. SMTP or SES; an .eml file in the "
        "outbox locally. Sent once per week: a "
        "re-run finds the week's sent-marker in the lake and sends nothing unless config resend is true."
    ),
)
def marketing_email(
    context: dg.AssetExecutionContext,
    config: MarketingEmailConfig,
    churn_predictions,
    raw_loyalty_history,
    retention_experiment_results,
    marketing_mailer: Mailer,
    lake: LakeResource,
) -> dg.MaterializeResult:
    week = context.partition_key
    if week not in churn_predictions:
        raise dg.Failure(f"churn_predictions {week} is not in the lake: materialize it first")
    predictions = churn_predictions[week]()
    previous_weeks = sorted(key for key in churn_predictions if key < week)
    previous = churn_predictions[previous_weeks[-1]]() if previous_weeks else None
    window = context.partition_time_window
    drop, loyalty = latest_partition(
        raw_loyalty_history, "raw_loyalty_history", f"{window.start.date()} .. {window.end.date()} (exclusive)"
    )
    store = lake.store()
    export_key = predictions_export_key(week, "csv")
    if not store.exists(export_key):
        raise dg.Failure(f"the full prediction file {store.url(export_key)} is missing: materialize churn_predictions")
    member_value = loyalty.set_index("loyalty_number")["clv"]
    segmentation = registry.record(store, "segmentation", segmentation_version_of(predictions))
    recorded_profile = segmentation.get("segment_profile")
    summary = summarize_for_marketing(
        predictions,
        member_value,
        store.url(export_key),
        previous,
        config.top_members,
        uplift_lines(latest_results(retention_experiment_results)),
        pd.DataFrame(recorded_profile).set_index("segment") if recorded_profile else None,
        segmentation.get("churn_basis", ""),
    )
    message = build_marketing_email(summary, marketing_mailer.sender, marketing_mailer.recipient_list())
    name = marketing_message_name(week)
    delivery = deliver_once(
        store, name, message, lambda mail: marketing_mailer.deliver(mail, name), resend=config.resend
    )
    sent = delivery.record
    if delivery.sent:
        context.log.info(f"marketing e-mail for week {week} delivered: {sent['delivered']}")
    else:
        context.log.info(
            f"marketing e-mail for week {week} already sent at {sent['sent_at']} ({sent['delivered']}): nothing sent; "
            "set config resend: true to send a new one"
        )
    counts = summary.counts
    return dg.MaterializeResult(
        metadata={
            "delivery": "sent" if delivery.sent else "already sent",
            "sent_at": sent["sent_at"],
            "message_id": sent["message_id"],
            "sent_marker": dg.MetadataValue.path(store.url(sent_marker_key(name))),
            "subject": sent["subject"],
            "recipients": len(marketing_mailer.recipient_list()),
            "delivered": sent["delivered"],
            "scored_members": int(counts.to_numpy().sum()),
            "critical_members": critical_members(counts),
            "previous_week": previous_weeks[-1] if previous_weeks else "none",
            "member_value_drop": drop,
            "full_file": dg.MetadataValue.path(summary.file_location),
        }
    )


DISTRIBUTION_ASSETS = [rds_churn_predictions, redshift_churn_predictions, salesforce_churn_sync, marketing_email]
