"""Drift checks on the weekly scoring assets, against the churn champion's reference.

None of them blocks. Drift is evidence about the model, not a defect of the week's data (the
data-quality gates on ``scoring_features`` guard that), and every week the retention team
needs its list: stopping the distribution would leave it with last week's scores, which have
drifted further. A failed check shows in the UI (WARN or ERROR severity), feeds the alerts and
the CloudWatch sensor (``drift_share``), and the remedy is retraining, not holding the week back.
"""

from datetime import date, timedelta

import dagster as dg

from loyalty_assets.defs.features.assets import scoring_features
from loyalty_assets.defs.monitoring.assets import (
    SCORED_COLUMNS,
    ConceptDriftConfig,
    DriftThresholdsConfig,
    PredictionDriftConfig,
    champion_reference,
    concept_drift_metadata,
    concept_verdict,
    drift_check_result,
    evaluate_feature_drift,
    evaluate_prediction_drift,
    evaluate_realised_performance,
    feature_drift_summary,
    lake_partitions,
    prediction_drift_metadata,
    scoring_bundle,
    week_drop,
    weeks_before,
)
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.defs.scoring.assets import churn_predictions
from loyalty_assets.defs.storage import LakeResource
from loyalty_assets.domain.features import ID_COLUMNS

NOT_BLOCKING = " Not blocking: drift is reported, the week's scores are still distributed."


@dg.asset_check(
    asset=scoring_features,
    name="feature_drift",
    partitions_def=weekly_partitions,
    additional_ins={"churn_model": dg.AssetIn()},
    blocking=False,
    description=(
        "Each of the champion's features against its reference (the candidate's out-of-time test rows): "
        "PSI over reference deciles for numeric features, Jensen-Shannon distance for categorical ones. "
        "WARN when any feature warns or fails, ERROR when the share of failed features exceeds the "
        "dataset limit." + NOT_BLOCKING
    ),
)
def feature_drift_check(
    config: DriftThresholdsConfig,
    scoring_features,
    churn_model,
    lake: LakeResource,
) -> dg.AssetCheckResult:
    thresholds = config.thresholds()
    reference, source = champion_reference(lake, churn_model)
    frame, status = evaluate_feature_drift(reference, scoring_features, thresholds)
    message, metadata = feature_drift_summary(frame, status, thresholds)
    return drift_check_result(
        status,
        message,
        {**metadata, "churn_model_version": churn_model["version"], "reference_source": source},
    )


@dg.asset_check(
    asset=churn_predictions,
    name="prediction_drift",
    partitions_def=weekly_partitions,
    additional_ins={"churn_model": dg.AssetIn()},
    blocking=False,
    description=(
        "This week's risk-score histogram and tier shares against the scoring model's reference, and "
        "the score histogram against the previous weeks in the lake (PSI). WARN above the PSI warn "
        "limit, ERROR above the fail limit." + NOT_BLOCKING
    ),
)
def prediction_drift_check(
    context: dg.AssetCheckExecutionContext,
    config: PredictionDriftConfig,
    churn_predictions,
    churn_model,
    lake: LakeResource,
) -> dg.AssetCheckResult:
    bundle = scoring_bundle(lake, churn_model, churn_predictions)
    reference, source = champion_reference(lake, bundle)
    weeks = weeks_before(context.partition_key, config.previous_weeks)
    previous = lake_partitions(lake, "churn_predictions", weeks, SCORED_COLUMNS)
    result = evaluate_prediction_drift(reference, churn_predictions, previous, config.thresholds())
    return drift_check_result(
        result["status"],
        result["message"],
        {**prediction_drift_metadata(result), "churn_model_version": bundle["version"], "reference_source": source},
    )


@dg.asset_check(
    asset=churn_predictions,
    name="concept_drift",
    partitions_def=weekly_partitions,
    additional_ins={"churn_model": dg.AssetIn()},
    blocking=False,
    description=(
        "Realised quality of earlier weeks whose churn labels have matured in this week's latest drop: "
        "ROC-AUC, recall at the frozen threshold and churn rate per tier (must rise from Low to "
        "Critical), against the figures at promotion of the model that scored the week. The latest "
        "matured week decides: WARN or ERROR (consider retraining); passes while no label has matured." + NOT_BLOCKING
    ),
)
def concept_drift_check(
    context: dg.AssetCheckExecutionContext,
    config: ConceptDriftConfig,
    churn_model,
    lake: LakeResource,
) -> dg.AssetCheckResult:
    week = context.partition_key
    # Checks ignore the partition mapping of additional inputs, so the week's committed drops are read directly.
    week_days = [(date.fromisoformat(week) + timedelta(days=offset)).isoformat() for offset in range(7)]
    loyalty, last_complete = week_drop(lake_partitions(lake, "raw_loyalty_history", week_days), week)
    label_weeks = weeks_before(week, config.label_lookback_weeks)
    realised = evaluate_realised_performance(
        lake,
        churn_model,
        lake_partitions(lake, "churn_predictions", label_weeks, SCORED_COLUMNS),
        lake_partitions(lake, "scoring_features", label_weeks, ID_COLUMNS),
        loyalty,
        last_complete,
        config.thresholds(),
    )
    status, message = concept_verdict(realised, churn_model, last_complete, config.label_lookback_weeks)
    metadata = concept_drift_metadata(realised, last_complete)
    return drift_check_result(status or "ok", message, metadata)


MONITORING_CHECKS = [feature_drift_check, prediction_drift_check, concept_drift_check]
