"""Weekly model monitoring: ``monitoring_report`` evaluates the week's drift once
(``domain.monitoring.evaluate_week``), stores the evaluation for the drift checks (``checks.py``) and
writes the HTML page beside the week's predictions export.

Earlier weeks of ``churn_predictions`` and ``scoring_features`` are read by their lake keys: an asset
cannot declare a second input on other partitions of an asset it already reads.
"""

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field

from loyalty_assets.defs.drops import RAW_DROP_INS
from loyalty_assets.defs.experiments.assets import LATEST_EXPERIMENT_RESULTS, latest_results
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.defs.storage import (
    LakeModelIOManager,
    LakeParquetIOManager,
    LakeResource,
    latest_partition,
)
from loyalty_assets.domain.drift import DriftThresholds
from loyalty_assets.domain.features import ID_COLUMNS
from loyalty_assets.domain.lake_keys import monitoring_report_key
from loyalty_assets.domain.monitoring import (
    SCORED_COLUMNS,
    MonitoringSettings,
    WeekDriftEvaluation,
    browser_link,
    evaluate_week,
    report_summary,
)
from loyalty_assets.domain.monitoring_report import render_monitoring_report
from loyalty_assets.domain.storage import joblib_bytes_to_object, object_to_joblib_bytes

OWNERS = ["team:ml-engineering"]
DEFAULT_SETTINGS = MonitoringSettings()
DEFAULT_THRESHOLDS = DEFAULT_SETTINGS.thresholds


class MonitoringReportConfig(dg.Config):
    """Warn / fail limits of the drift evaluation (a status is reached strictly above its limit) and
    how many earlier weeks it looks back at."""

    psi_warn: float = Field(default=DEFAULT_THRESHOLDS.psi_warn, description="PSI above this warns.")
    psi_fail: float = Field(default=DEFAULT_THRESHOLDS.psi_fail, description="PSI above this fails.")
    js_warn: float = Field(default=DEFAULT_THRESHOLDS.js_warn, description="Jensen-Shannon distance that warns.")
    js_fail: float = Field(default=DEFAULT_THRESHOLDS.js_fail, description="Jensen-Shannon distance that fails.")
    dataset_fail_share: float = Field(
        default=DEFAULT_THRESHOLDS.dataset_fail_share,
        description="The dataset fails when more than this share of the features fails.",
    )
    auc_drop_warn: float = Field(
        default=DEFAULT_THRESHOLDS.auc_drop_warn, description="Realised ROC-AUC drop that warns."
    )
    auc_drop_fail: float = Field(
        default=DEFAULT_THRESHOLDS.auc_drop_fail, description="Realised ROC-AUC drop that fails."
    )
    recall_drop_warn: float = Field(default=DEFAULT_THRESHOLDS.recall_drop_warn, description="Recall drop that warns.")
    recall_drop_fail: float = Field(default=DEFAULT_THRESHOLDS.recall_drop_fail, description="Recall drop that fails.")
    previous_weeks: int = Field(
        default=DEFAULT_SETTINGS.previous_weeks,
        description="Earlier weeks whose score histograms this week is compared with.",
    )
    history_weeks: int = Field(
        default=DEFAULT_SETTINGS.history_weeks, description="Earlier weeks shown in the tier-share history."
    )
    label_lookback_weeks: int = Field(
        default=DEFAULT_SETTINGS.label_lookback_weeks,
        description="Earlier weeks searched for predictions whose churn labels have matured.",
    )

    def settings(self) -> MonitoringSettings:
        thresholds = DriftThresholds(**self.model_dump(include=set(DriftThresholds.__dataclass_fields__)))
        return MonitoringSettings(thresholds, self.previous_weeks, self.history_weeks, self.label_lookback_weeks)


@contextmanager
def failure_on_refusal() -> Iterator[None]:
    """A ``ValueError`` of the domain becomes a ``dg.Failure`` with its one-line message."""
    try:
        yield
    except ValueError as error:
        raise dg.Failure(str(error)) from error


def weeks_before(week: str, count: int) -> list[str]:
    """The (at most) ``count`` weekly partition keys just before ``week``, oldest first."""
    start = weekly_partitions.time_window_for_partition_key(week).start
    window = dg.TimeWindow(max(start - timedelta(weeks=count), weekly_partitions.start), start)
    return list(weekly_partitions.get_partition_keys_in_time_window(window))


def lake_partitions(
    lake: LakeResource, asset: str, keys: list[str], columns: list[str]
) -> dict[str, Callable[[], pd.DataFrame]]:
    """Loaders for the stored partitions of a lake table among ``keys``, reading only ``columns``;
    one table is held in memory at a time."""
    store = lake.store()
    stored = LakeParquetIOManager(lake=lake).stored_partitions(store, dg.AssetKey(asset), keys)

    def read(object_key: str) -> pd.DataFrame:
        # domain.storage.parquet_bytes_to_dataframe decodes every column; the top reasons are costly text.
        return pq.read_table(io.BytesIO(store.get_bytes(object_key)), columns=columns).to_pandas()

    return {key: replace(loader, read=read) for key, loader in stored.items()}


def evaluation_key(lake: LakeResource, week: str) -> str:
    """Where the week's evaluation is stored: the lake's place for the value of ``monitoring_report``."""
    return LakeModelIOManager(lake=lake).object_key(dg.AssetKey("monitoring_report"), week)


def stored_evaluation(lake: LakeResource, week: str) -> WeekDriftEvaluation:
    """The evaluation ``monitoring_report`` stored for ``week``."""
    store = lake.store()
    key = evaluation_key(lake, week)
    if not store.exists(key):
        raise dg.Failure(f"monitoring_report {week} is not in the lake ({store.url(key)}): materialize it first")
    return joblib_bytes_to_object(store.get_bytes(key))


@dg.asset(
    partitions_def=weekly_partitions,
    ins={
        "churn_model": dg.AssetIn(),
        "raw_loyalty_history": RAW_DROP_INS["raw_loyalty_history"],
        "retention_experiment_results": LATEST_EXPERIMENT_RESULTS,
    },
    group_name="monitoring",
    kinds={"html"},
    owners=OWNERS,
    description=(
        "The week's drift evaluation, computed once and read by the feature, prediction and concept drift "
        "checks, and one self-contained HTML page per week stored beside the predictions export: feature "
        "drift table, score histogram against the champion's reference and earlier weeks, risk-tier shares "
        "over the weeks, realised ROC-AUC, recall and churn rate per tier once labels mature, and the "
        "latest retention experiment results."
    ),
)
def monitoring_report(
    context: dg.AssetExecutionContext,
    config: MonitoringReportConfig,
    scoring_features,
    churn_predictions,
    churn_model,
    raw_loyalty_history,
    retention_experiment_results,
    lake: LakeResource,
) -> dg.MaterializeResult:
    week = context.partition_key
    settings = config.settings()
    drop_key, loyalty = latest_partition(raw_loyalty_history, "raw_loyalty_history", f"week {week}")
    training_sets = LakeParquetIOManager(lake=lake)
    store = lake.store()
    with failure_on_refusal():
        evaluation = evaluate_week(
            week,
            churn_model,
            scoring_features,
            churn_predictions,
            earlier_predictions=lake_partitions(
                lake, "churn_predictions", weeks_before(week, settings.lookback_weeks), SCORED_COLUMNS
            ),
            earlier_features=lake_partitions(
                lake, "scoring_features", weeks_before(week, settings.label_lookback_weeks), ID_COLUMNS
            ),
            drop=(date.fromisoformat(drop_key), loyalty),
            settings=settings,
            store=store,
            training_set_key=lambda partition: training_sets.object_key(dg.AssetKey("churn_training_set"), partition),
        )
        page = render_monitoring_report(evaluation, latest_results(retention_experiment_results))
    store.put_bytes(evaluation_key(lake, week), object_to_joblib_bytes(evaluation))
    key = monitoring_report_key(week)
    store.put_bytes(key, page.encode("utf-8"))
    url = store.url(key)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(url),
            "report": dg.MetadataValue.url(browser_link(url)),
            **report_summary(evaluation),
        }
    )


MONITORING_ASSETS = [monitoring_report]
