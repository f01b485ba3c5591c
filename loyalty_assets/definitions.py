"""The code location (workspace.yaml and [tool.dagster] load this module): the domains assembled, with the
resources of the chosen environment."""

import dagster as dg

from loyalty_assets.defs.churn.assets import churn_model, churn_model_candidate
from loyalty_assets.defs.churn.checks import CHURN_CHECKS
from loyalty_assets.defs.distribution.assets import DISTRIBUTION_ASSETS
from loyalty_assets.defs.experiments.assets import EXPERIMENT_ASSETS
from loyalty_assets.defs.features.assets import (
    churn_training_set,
    customer_features,
    scoring_features,
)
from loyalty_assets.defs.ingestion.assets import raw_loyalty_tables
from loyalty_assets.defs.monitoring.assets import MONITORING_ASSETS
from loyalty_assets.defs.monitoring.checks import MONITORING_CHECKS
from loyalty_assets.defs.orchestration.jobs import JOBS
from loyalty_assets.defs.orchestration.schedules import build_schedules
from loyalty_assets.defs.orchestration.sensors import build_sensors
from loyalty_assets.defs.partitions import check_partitions_match
from loyalty_assets.defs.scoring.assets import churn_predictions
from loyalty_assets.defs.segmentation.assets import (
    segmentation_model,
    segmentation_model_candidate,
)
from loyalty_assets.defs.segmentation.checks import SEGMENTATION_CHECKS
from loyalty_assets.environment import resources_for
from loyalty_assets.settings import Settings, load_settings


def build_defs(settings: Settings) -> dg.Definitions:
    """The code location for ``settings``: its resources, schedules and sensors.

    The partitions are built when the assets are imported; ``settings`` must agree with them.
    """
    check_partitions_match(settings)
    return dg.Definitions(
        assets=[
            raw_loyalty_tables,
            customer_features,
            churn_training_set,
            scoring_features,
            churn_model_candidate,
            churn_model,
            segmentation_model_candidate,
            segmentation_model,
            churn_predictions,
            *DISTRIBUTION_ASSETS,
            *MONITORING_ASSETS,
            *EXPERIMENT_ASSETS,
        ],
        asset_checks=[*CHURN_CHECKS, *SEGMENTATION_CHECKS, *MONITORING_CHECKS],
        jobs=JOBS,
        schedules=build_schedules(settings),
        sensors=build_sensors(settings),
        resources=resources_for(settings),
    )


defs = build_defs(load_settings())
