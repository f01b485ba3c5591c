"""The code location (workspace.yaml and [tool.dagster] load this module): every group's folder loaded
with its group, and the resources, schedules and sensors of the chosen settings."""

from types import ModuleType

import dagster as dg

from loyalty_assets.defs import (
    distribution,
    experiments,
    features,
    ingestion,
    models,
    monitoring,
    predictions,
)
from loyalty_assets.defs.automation.jobs import JOBS
from loyalty_assets.defs.automation.schedules import build_schedules
from loyalty_assets.defs.automation.sensors import build_sensors
from loyalty_assets.defs.partitions import check_partitions_match
from loyalty_assets.environment import resources_for
from loyalty_assets.settings import Settings, load_settings

# Folder = group: the UI's group name is the package under loyalty_assets/defs/ that holds its code.
# A folder loads every asset its modules hold, imported ones too: name another group's asset by its
# key, never import it (Dagster then rejects the key defined twice).
GROUP_PACKAGES: dict[str, ModuleType] = {
    "ingestion": ingestion,
    "features": features,
    "models": models,
    "predictions": predictions,
    "distribution": distribution,
    "monitoring": monitoring,
    "experiments": experiments,
}


def group_assets(group: str) -> list[dg.AssetsDefinition]:
    """The assets of ``group``'s folder, carrying the group the UI shows and the jobs select."""
    return dg.load_assets_from_package_module(GROUP_PACKAGES[group], group_name=group)


def build_defs(settings: Settings) -> dg.Definitions:
    """The code location for ``settings``: its resources, schedules and sensors.

    The partitions are built when the assets are imported; ``settings`` must agree with them.
    """
    check_partitions_match(settings)
    return dg.Definitions(
        assets=[asset for group in GROUP_PACKAGES for asset in group_assets(group)],
        asset_checks=[
            check for package in GROUP_PACKAGES.values() for check in dg.load_asset_checks_from_package_module(package)
        ],
        jobs=JOBS,
        schedules=build_schedules(settings),
        sensors=build_sensors(settings),
        resources=resources_for(settings),
    )


defs = build_defs(load_settings())
