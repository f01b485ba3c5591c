"""Weekly model monitoring: the champion's drift reference, the evaluations the checks share, and the
HTML report stored beside the week's predictions.

The drift checks (``checks.py``) and ``monitoring_report`` run the same evaluations below, each a
thin composition of ``domain.drift`` on tables read from the lake. Earlier weeks of
``churn_predictions`` and ``scoring_features`` are read by their lake keys: a check cannot declare
an input on other partitions of the asset it checks.
"""

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
from pydantic import Field

from loyalty_assets.defs.drops import RAW_DROP_INS
from loyalty_assets.defs.experiments.assets import LATEST_EXPERIMENT_RESULTS, latest_results
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.defs.storage import (
    LakeParquetIOManager,
    LakeResource,
    latest_partition,
)
from loyalty_assets.domain import registry
from loyalty_assets.domain.churn import data_fingerprint
from loyalty_assets.domain.drift import (
    DriftThresholds,
    build_reference,
    concept_drift,
    dataset_drift_status,
    drift_table_markdown,
    feature_drift,
    prediction_drift,
    score_distribution,
)
from loyalty_assets.domain.features import (
    ID_COLUMNS,
    categorical_among,
    last_complete_month,
)
from loyalty_assets.domain.labels import add_churn_labels
from loyalty_assets.domain.monitoring_report import (
    REALISED_COLUMNS,
    MonitoringReport,
    render_monitoring_report,
)
from loyalty_assets.domain.scoring import RISK_TIERS, assign_tiers
from loyalty_assets.domain.storage import parquet_bytes_to_dataframe, split_s3_uri

OWNERS = ["team:ml-engineering"]
DEFAULT_THRESHOLDS = DriftThresholds()
METRIC_COLUMNS = ["roc_auc", "promotion_roc_auc", "recall_at_threshold", "promotion_recall"]
TIER_RATE_COLUMNS = [f"churn_rate_{tier}" for tier in RISK_TIERS]
SCORED_COLUMNS = ["loyalty_number", "snapshot_month", "churn_risk_pct", "risk_tier", "churn_model_version"]
REALISED_TABLE_COLUMNS = [*REALISED_COLUMNS, *TIER_RATE_COLUMNS, "message"]

Loaders = Mapping[str, Callable[[], pd.DataFrame]]


class DriftThresholdsConfig(dg.Config):
    """Warn / fail limits of the drift checks (a status is reached strictly above its limit)."""

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

    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(**self.model_dump(include=set(DriftThresholds.__dataclass_fields__)))


class PredictionDriftConfig(DriftThresholdsConfig):
    previous_weeks: int = Field(
        default=4, description="Earlier weeks whose score histograms this week is compared with."
    )


class ConceptDriftConfig(DriftThresholdsConfig):
    label_lookback_weeks: int = Field(
        default=26, description="Earlier weeks searched for predictions whose churn labels have matured."
    )


class MonitoringReportConfig(PredictionDriftConfig, ConceptDriftConfig):
    history_weeks: int = Field(default=12, description="Earlier weeks shown in the tier-share history.")


def drift_check_result(status: str, description: str, metadata: dict) -> dg.AssetCheckResult:
    """``ok`` passes; ``warn`` fails with WARN severity, ``fail`` with ERROR."""
    severity = dg.AssetCheckSeverity.ERROR if status == "fail" else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(passed=status == "ok", severity=severity, description=description, metadata=metadata)


# --- the reference -------------------------------------------------------------------------------


def reference_key(version: str) -> str:
    """Where a reference computed after promotion is stored: beside the registry version."""
    return f"registry/churn/{version}.reference.json"


def reference_from_training_set(champion: dict, training_set: pd.DataFrame) -> dict:
    """The reference the candidate stores today: its out-of-time test rows, scored by the model."""
    test_snapshots = pd.to_datetime(champion["record"]["training_window"]["test"])
    rows = training_set[training_set["snapshot_month"].isin(test_snapshots)]
    if rows.empty:
        raise dg.Failure(
            f"churn version {champion['version']}: its training set holds none of its test snapshots "
            f"{[str(s.date()) for s in test_snapshots]}"
        )
    columns = list(champion["feature_columns"])
    scores = champion["model"].predict_proba(rows[columns])[:, 1]
    return build_reference(
        rows, columns, categorical_among(columns), scores, assign_tiers(scores, champion["tier_cutoffs"])
    )


def champion_reference(lake: LakeResource, champion: dict) -> tuple[dict, str]:
    """The drift reference of a churn model bundle and where it came from.

    ``bundle``: carried by the bundle (every candidate since drift monitoring). ``stored``: computed
    earlier for an older bundle and read from ``reference_key``. ``computed``: built now from the
    candidate's ``churn_training_set`` partition (refused if that partition changed since training)
    and stored for later runs.
    """
    if champion.get("drift_reference") is not None:
        return champion["drift_reference"], "bundle"
    store = lake.store()
    version = champion["version"]
    key = reference_key(version)
    if store.exists(key):
        return json.loads(store.get_bytes(key)), "stored"
    partition = champion["record"]["source_partition"]
    training_key = LakeParquetIOManager(lake=lake).object_key(dg.AssetKey("churn_training_set"), partition)
    if not store.exists(training_key):
        raise dg.Failure(
            f"churn version {version} carries no drift reference and its training set churn_training_set "
            f"{partition} is not in the lake ({store.url(training_key)}): re-materialize that partition"
        )
    training_set = parquet_bytes_to_dataframe(store.get_bytes(training_key))
    if data_fingerprint(training_set) != champion["record"]["data_fingerprint"]:
        raise dg.Failure(
            f"churn version {version} carries no drift reference and churn_training_set {partition} has "
            "changed since it was trained (data fingerprint differs): promote a model trained since"
        )
    reference = reference_from_training_set(champion, training_set)
    store.put_bytes(key, json.dumps(reference).encode("utf-8"))
    return reference, "computed"


def scoring_bundle(lake: LakeResource, champion: dict, predictions: pd.DataFrame) -> dict:
    """The bundle of the model version that scored ``predictions``: the champion or a registered one."""
    version = single_value(predictions, "churn_model_version", "churn_predictions")
    return champion if version == champion["version"] else registry.load_bundle(lake.store(), "churn", version)


# --- earlier weeks from the lake -----------------------------------------------------------------


def weeks_before(week: str, count: int) -> list[str]:
    """The (at most) ``count`` weekly partition keys just before ``week``, oldest first."""
    start = weekly_partitions.time_window_for_partition_key(week).start
    window = dg.TimeWindow(max(start - timedelta(weeks=count), weekly_partitions.start), start)
    return list(weekly_partitions.get_partition_keys_in_time_window(window))


def lake_partitions(
    lake: LakeResource, asset: str, keys: list[str], columns: list[str] | None = None
) -> dict[str, Callable[[], pd.DataFrame]]:
    """Loaders for the partitions of a lake table among ``keys`` that readers may see (drop tables:
    committed drops only), reading only ``columns`` (all when None); one table is held in memory at a time."""
    store = lake.store()
    stored = LakeParquetIOManager(lake=lake).stored_partitions(store, dg.AssetKey(asset), keys)

    def read(object_key: str) -> pd.DataFrame:
        # domain.storage.parquet_bytes_to_dataframe decodes every column; the top reasons are costly text.
        return pq.read_table(io.BytesIO(store.get_bytes(object_key)), columns=columns).to_pandas()

    return {key: replace(loader, read=read) for key, loader in stored.items()}


def subset(loaders: Loaders, keys: list[str]) -> dict[str, Callable[[], pd.DataFrame]]:
    return {key: loaders[key] for key in keys if key in loaders}


def single_value(frame: pd.DataFrame, column: str, what: str):
    values = frame[column].unique()
    if len(values) != 1:
        raise dg.Failure(f"{what} holds {len(values)} values of {column}, expected exactly one")
    return values[0]


# --- evaluations ---------------------------------------------------------------------------------


def evaluate_feature_drift(
    reference: dict, features: pd.DataFrame, thresholds: DriftThresholds
) -> tuple[pd.DataFrame, str]:
    """Per-feature drift table and the dataset verdict."""
    frame = feature_drift(reference, features, thresholds)
    return frame, dataset_drift_status(frame, thresholds)


def feature_drift_summary(frame: pd.DataFrame, status: str, thresholds: DriftThresholds) -> tuple[str, dict]:
    """Message and metadata: ``drift_share`` is the share of features that fail (drifted)."""
    failed = frame.loc[frame["status"] == "fail", "feature"].tolist()
    warned = frame.loc[frame["status"] == "warn", "feature"].tolist()
    top = frame.loc[frame["value"].idxmax()]
    message = (
        f"{status}: {len(failed)} of {len(frame)} features drifted ({', '.join(failed) or 'none'}), "
        f"{len(warned)} more warn ({', '.join(warned) or 'none'}); the dataset fails when more than "
        f"{thresholds.dataset_fail_share:.0%} drift; largest: {top['feature']} {top['statistic']} {top['value']:.4f}"
    )
    metadata = {
        "drift_table": dg.MetadataValue.md(drift_table_markdown(frame)),
        "max_drift_score": float(top["value"]),
        "max_drift_feature": str(top["feature"]),
        "drift_share": len(failed) / len(frame),
        "warn_share": len(warned) / len(frame),
        "drifted_features": dg.MetadataValue.json(failed),
    }
    return message, metadata


def scores_and_tiers(predictions: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The probability (``churn_risk_pct / 100``) and tier of each scored member."""
    return predictions["churn_risk_pct"].astype(float) / 100.0, predictions["risk_tier"].astype(object)


def weekly_distributions(weeks: Loaders, edges: list[float]) -> list[dict]:
    """``drift.score_distribution`` of each week's predictions on the reference's bins, oldest first."""
    return [score_distribution(*scores_and_tiers(load()), edges, week=week) for week, load in sorted(weeks.items())]


def evaluate_prediction_drift(
    reference: dict, predictions: pd.DataFrame, previous_weeks: Loaders, thresholds: DriftThresholds
) -> dict:
    """``drift.prediction_drift`` of this week's predictions against the reference and earlier weeks."""
    scores, tiers = scores_and_tiers(predictions)
    previous = weekly_distributions(previous_weeks, reference["score_histogram"]["edges"])
    return prediction_drift(reference, scores, tiers, previous, thresholds)


def prediction_drift_metadata(result: dict) -> dict:
    previous = pd.DataFrame(result["score_psi_vs_previous_weeks"], columns=["week", "score_psi"])
    metadata = {
        "score_psi_vs_reference": result["score_psi_vs_reference"],
        "tier_psi_vs_reference": result["tier_psi_vs_reference"],
        "previous_weeks_compared": len(previous),
        **{f"tier_share_{tier}": result["current"]["tier_shares"][tier] for tier in RISK_TIERS},
        **{f"tier_share_change_{tier}": result["tier_share_delta"][tier] for tier in RISK_TIERS},
    }
    if result["max_score_psi_vs_previous_weeks"] is not None:
        metadata["max_score_psi_vs_previous_weeks"] = result["max_score_psi_vs_previous_weeks"]
        metadata["score_psi_by_week"] = dg.MetadataValue.md(previous.to_markdown(index=False, floatfmt=".4f"))
    return metadata


def evaluate_realised_performance(
    lake: LakeResource,
    champion: dict,
    scored_weeks: Loaders,
    feature_weeks: Loaders,
    loyalty: pd.DataFrame,
    last_complete: pd.Timestamp,
    thresholds: DriftThresholds,
) -> pd.DataFrame:
    """Concept drift of every earlier scored week whose labels have matured by ``last_complete``.

    A week is judged against the promotion metrics and frozen threshold of the model version
    that scored it (the champion's record, or the registry's for an older version), with that
    version's label horizon; its members' labels come from ``loyalty`` (the current drop) through
    ``labels.add_churn_labels``. A matured week whose members all churned or none did cannot be
    scored: it is listed with status ``n/a``. One row per matured week, oldest first.
    """
    records = {champion["version"]: champion["record"]}
    rows = []
    for week, load in sorted(scored_weeks.items()):  # one pass per earlier week, not per member
        scored = load()
        snapshot = pd.Timestamp(single_value(scored, "snapshot_month", f"churn_predictions {week}"))
        version = single_value(scored, "churn_model_version", f"churn_predictions {week}")
        if version not in records:
            records[version] = registry.record(lake.store(), "churn", version)
        record = records[version]
        horizon = int(record["horizon_months"])
        if snapshot + pd.DateOffset(months=horizon) > last_complete:
            continue
        if week not in feature_weeks:
            raise dg.Failure(
                f"churn_predictions {week} has matured labels but scoring_features {week} is not in the lake: "
                "the scored snapshots cannot be labelled"
            )
        labelled = add_churn_labels(feature_weeks[week]()[ID_COLUMNS], loyalty, horizon, last_complete)
        outcomes = labelled.set_index("loyalty_number")["churned"]
        row = {
            "week": week,
            "snapshot_month": str(snapshot.date()),
            "model_version": version,
            "n_members": len(outcomes),
            "n_churned": int(outcomes.sum()),
            "realised_churn_rate": float(outcomes.mean()),
        }
        if outcomes.nunique() < 2:
            only = "churned" if outcomes.iloc[0] == 1 else "stayed"
            rows.append({**row, "status": "n/a", "message": f"every member {only}: ROC-AUC and recall are undefined"})
            continue
        result = concept_drift(scored, outcomes, float(record["threshold"]), record["metrics"], thresholds)
        rows.append(
            {
                **row,
                **{column: result[column] for column in METRIC_COLUMNS},
                **{f"churn_rate_{tier}": rate for tier, rate in result["churn_rate_by_tier"].items()},
                "status": result["status"],
                "message": result["message"],
            }
        )
    return pd.DataFrame(rows, columns=REALISED_TABLE_COLUMNS).astype(
        {column: float for column in ["realised_churn_rate", *METRIC_COLUMNS, *TIER_RATE_COLUMNS]}
    )


def concept_verdict(
    realised: pd.DataFrame, champion: dict, last_complete: pd.Timestamp, lookback_weeks: int
) -> tuple[str | None, str]:
    """Status and message of the latest scorable matured week, or ``(None, why there is none)``."""
    evaluated = realised[realised["status"] != "n/a"]
    if evaluated.empty:
        return None, (
            f"no scored week of the last {lookback_weeks} has labels matured by {last_complete:%Y-%m} "
            "with both churners and non-churners yet"
        )
    latest = evaluated.iloc[-1]
    message = (
        f"week {latest['week']} (snapshot {latest['snapshot_month']}, model {latest['model_version']}): "
        f"{latest['message']}"
    )
    if latest["model_version"] != champion["version"]:
        message += f"; that model has since been replaced by {champion['version']}"
    if latest["status"] == "fail":
        message += "; consider retraining"
    return latest["status"], message


def concept_drift_metadata(realised: pd.DataFrame, last_complete: pd.Timestamp) -> dict:
    evaluated = realised[realised["status"] != "n/a"]
    metadata = {
        "weeks_evaluated": len(evaluated),
        "labels_complete_to": f"{last_complete:%Y-%m}",
    }
    if evaluated.empty:
        return metadata
    latest = evaluated.iloc[-1]
    numbers = [*METRIC_COLUMNS, "realised_churn_rate", *TIER_RATE_COLUMNS]
    table = realised[REALISED_COLUMNS]
    return {
        **metadata,
        "evaluated_week": latest["week"],
        "n_members": int(latest["n_members"]),
        "n_churned": int(latest["n_churned"]),
        **{name: float(latest[name]) for name in numbers if pd.notna(latest[name])},
        "roc_auc_drop": float(latest["promotion_roc_auc"] - latest["roc_auc"]),
        "recall_drop": float(latest["promotion_recall"] - latest["recall_at_threshold"]),
        "realised_by_week": dg.MetadataValue.md(table.to_markdown(index=False, floatfmt=".4f")),
    }


def week_drop(raw_loyalty_history: Loaders, week: str) -> tuple[pd.DataFrame, pd.Timestamp]:
    """The week's latest loyalty drop and its last complete month (labels are known up to it)."""
    drop_key, loyalty = latest_partition(raw_loyalty_history, "raw_loyalty_history", f"week {week}")
    return loyalty, last_complete_month(date.fromisoformat(drop_key))


# --- the report ----------------------------------------------------------------------------------


def report_key(week: str) -> str:
    """``exports/monitoring/week=YYYY-MM-DD/monitoring_report.html``, beside the week's predictions export."""
    return f"exports/monitoring/week={week}/monitoring_report.html"


def browser_link(url: str) -> str:
    """A link a browser opens: ``file://`` for a local file, the S3 console for ``s3://``."""
    if url.startswith("s3://"):
        bucket, key = split_s3_uri(url)
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    return Path(url).as_uri()


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
        "One self-contained HTML page per week, stored beside the predictions export: feature drift "
        "table, score histogram against the champion's reference and earlier weeks, risk-tier shares "
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
    thresholds = config.thresholds()
    feature_reference, reference_source = champion_reference(lake, churn_model)
    drift_frame, feature_status = evaluate_feature_drift(feature_reference, scoring_features, thresholds)
    feature_message, feature_metadata = feature_drift_summary(drift_frame, feature_status, thresholds)
    scorer = scoring_bundle(lake, churn_model, churn_predictions)
    prediction_reference = feature_reference if scorer is churn_model else champion_reference(lake, scorer)[0]
    lookback = max(config.previous_weeks, config.history_weeks, config.label_lookback_weeks)
    earlier = lake_partitions(lake, "churn_predictions", weeks_before(week, lookback), SCORED_COLUMNS)
    previous = subset(earlier, weeks_before(week, config.previous_weeks))
    prediction = evaluate_prediction_drift(prediction_reference, churn_predictions, previous, thresholds)

    loyalty, last_complete = week_drop(raw_loyalty_history, week)
    label_weeks = weeks_before(week, config.label_lookback_weeks)
    realised = evaluate_realised_performance(
        lake,
        churn_model,
        subset(earlier, label_weeks),
        lake_partitions(lake, "scoring_features", label_weeks, ID_COLUMNS),
        loyalty,
        last_complete,
        thresholds,
    )
    concept_status, concept_message = concept_verdict(realised, churn_model, last_complete, config.label_lookback_weeks)

    distributions = [
        *weekly_distributions(
            subset(earlier, weeks_before(week, config.history_weeks)), prediction_reference["score_histogram"]["edges"]
        ),
        {**prediction["current"], "week": week},
    ]
    tier_history = pd.DataFrame([d["tier_shares"] for d in distributions], index=[d["week"] for d in distributions])
    page = render_monitoring_report(
        MonitoringReport(
            week=week,
            model_version=churn_model["version"],
            reference_source=reference_source,
            n_members=len(churn_predictions),
            snapshot_month=str(
                pd.Timestamp(single_value(churn_predictions, "snapshot_month", "churn_predictions")).date()
            ),
            feature_drift=drift_frame,
            feature_status=feature_status,
            feature_message=feature_message,
            thresholds=thresholds,
            prediction=prediction,
            reference=prediction_reference,
            tier_history=tier_history,
            realised=realised,
            concept_status=concept_status,
            concept_message=concept_message,
            experiments=latest_results(retention_experiment_results),
        )
    )
    store = lake.store()
    key = report_key(week)
    store.put_bytes(key, page.encode("utf-8"))
    url = store.url(key)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(url),
            "report": dg.MetadataValue.url(browser_link(url)),
            "churn_model_version": churn_model["version"],
            "reference_source": reference_source,
            "feature_drift_status": feature_status,
            "drift_share": feature_metadata["drift_share"],
            "max_drift_score": feature_metadata["max_drift_score"],
            "prediction_drift_status": prediction["status"],
            "score_psi_vs_reference": prediction["score_psi_vs_reference"],
            "concept_drift_status": concept_status or "n/a",
            "weeks_with_matured_labels": len(realised),
        }
    )


MONITORING_ASSETS = [monitoring_report]
