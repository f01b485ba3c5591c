"""The four cadences as asset jobs (names from the public interface).

Each job names what it selects (whole groups, or asset keys where it takes part of the ``features`` or
``models`` group) and says so in its description, which the UI shows on the job's page.
"""

from __future__ import annotations

import dagster as dg

daily_ingest_job = dg.define_asset_job(
    "daily_ingest_job",
    selection=dg.AssetSelection.groups("ingestion"),
    description="Ingest one day's landing drop into validated raw tables behind data-quality gates. "
    "Selects the group ingestion.",
)

monthly_churn_training_job = dg.define_asset_job(
    "monthly_churn_training_job",
    selection=dg.AssetSelection.assets(
        "customer_features", "churn_training_set", "churn_model_candidate", "churn_model"
    )
    | dg.AssetSelection.groups("experiments"),
    description="Features, training set, candidate, gates and promotion for one month; the month's "
    "retention experiment results. Selects customer_features, churn_training_set, churn_model_candidate, "
    "churn_model and the group experiments.",
)

quarterly_segmentation_job = dg.define_asset_job(
    "quarterly_segmentation_job",
    selection=dg.AssetSelection.assets("segmentation_model_candidate", "segmentation_model"),
    description="Fit, gate and promote the K-Means segmentation for one quarter. Selects "
    "segmentation_model_candidate and segmentation_model.",
)

weekly_scoring_job = dg.define_asset_job(
    "weekly_scoring_job",
    selection=dg.AssetSelection.groups("predictions", "distribution", "monitoring"),
    description="Score every eligible member with the champions and distribute the week's results. "
    "Selects the groups predictions, distribution and monitoring.",
)

JOBS = [daily_ingest_job, weekly_scoring_job, monthly_churn_training_job, quarterly_segmentation_job]
