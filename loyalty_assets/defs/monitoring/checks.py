"""Drift checks on the weekly scoring assets, against the churn champion's reference.

Each check reports its verdict from the week's drift evaluation, which ``monitoring_report``
computes once and stores; a check runs after it and recomputes nothing.

None of them blocks. Drift is evidence about the model, not a defect of the week's data (the
data-quality gates on ``scoring_features`` guard that), and every week the retention team
needs its list: stopping the distribution would leave it with last week's scores, which have
drifted further. A failed check shows in the UI (WARN or ERROR severity), feeds the alerts and
the CloudWatch sensor (``drift_share``), and the remedy is retraining, not holding the week back.
"""

import dagster as dg

from loyalty_assets.defs.features.assets import scoring_features
from loyalty_assets.defs.monitoring.assets import monitoring_report, stored_evaluation
from loyalty_assets.defs.partitions import weekly_partitions
from loyalty_assets.defs.scoring.assets import churn_predictions
from loyalty_assets.defs.storage import LakeResource
from loyalty_assets.domain.monitoring import DriftVerdict, Markdown

NOT_BLOCKING = " Not blocking: drift is reported, the week's scores are still distributed."
EVALUATED_ONCE = " Read from the week's evaluation stored by monitoring_report."


def drift_check_result(verdict: DriftVerdict) -> dg.AssetCheckResult:
    """``ok`` (or nothing to judge yet) passes; ``warn`` fails with WARN severity, ``fail`` with ERROR."""
    status = verdict.status or "ok"
    metadata = {
        key: dg.MetadataValue.md(value)
        if isinstance(value, Markdown)
        else dg.MetadataValue.json(value)
        if isinstance(value, list)
        else value
        for key, value in verdict.metadata.items()
    }
    severity = dg.AssetCheckSeverity.ERROR if status == "fail" else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(passed=status == "ok", severity=severity, description=verdict.message, metadata=metadata)


def drift_check(asset: dg.AssetsDefinition, name: str, description: str) -> dg.AssetChecksDefinition:
    """The non-blocking check ``name`` on ``asset``: the verdict of that name in the stored evaluation."""

    @dg.asset_check(
        asset=asset,
        name=name,
        partitions_def=weekly_partitions,
        additional_deps=[monitoring_report],
        blocking=False,
        description=description + EVALUATED_ONCE + NOT_BLOCKING,
    )
    def check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        return drift_check_result(stored_evaluation(lake, context.partition_key).verdicts[name])

    return check


feature_drift_check = drift_check(
    scoring_features,
    "feature_drift",
    "Each of the champion's features against its reference (the candidate's out-of-time test rows): "
    "PSI over reference deciles for numeric features, Jensen-Shannon distance for categorical ones. "
    "WARN when any feature warns or fails, ERROR when the share of failed features exceeds the "
    "dataset limit.",
)
prediction_drift_check = drift_check(
    churn_predictions,
    "prediction_drift",
    "This week's risk-score histogram and tier shares against the scoring model's reference, and "
    "the score histogram against the previous weeks in the lake (PSI). WARN above the PSI warn "
    "limit, ERROR above the fail limit.",
)
concept_drift_check = drift_check(
    churn_predictions,
    "concept_drift",
    "Realised quality of earlier weeks whose churn labels have matured in this week's latest drop: "
    "ROC-AUC, recall at the frozen threshold and churn rate per tier (must rise from Low to "
    "Critical), against the figures at promotion of the model that scored the week. The latest "
    "matured week decides: WARN or ERROR (consider retraining); passes while no label has matured.",
)

MONITORING_CHECKS = [feature_drift_check, prediction_drift_check, concept_drift_check]
