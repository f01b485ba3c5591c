"""One place chooses the environment: a dictionary of resources per ``LOYALTY_ENV``.

``local`` is the embedded default (folders under ``LOYALTY_HOME`` and a DuckDB file, alerts to a
JSON-lines file, metrics to the log); ``aws`` uses S3 through dagster-aws ``S3Resource``, SNS and
e-mail for alerts, CloudWatch for run metrics. Secrets are read through ``dg.EnvVar`` only. Every
network client is bounded by the ``LOYALTY_*_TIMEOUT_SECONDS`` and ``LOYALTY_MAX_ATTEMPTS`` settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loyalty_assets.defs.clients import bounded_s3
from loyalty_assets.defs.distribution.resources import (
    aws_distribution_resources,
    local_distribution_resources,
)
from loyalty_assets.defs.orchestration.resources import (
    aws_orchestration_resources,
    local_orchestration_resources,
)
from loyalty_assets.defs.storage import (
    LakeModelIOManager,
    LakeParquetIOManager,
    LakeResource,
    LandingResource,
)
from loyalty_assets.settings import NetworkSettings, Settings, load_network_settings


def _storage_resources(settings: Settings, network: NetworkSettings) -> dict[str, Any]:
    # boto3 itself honours AWS_ENDPOINT_URL and AWS_DEFAULT_REGION when these are left unset.
    s3 = bounded_s3(network)
    lake = LakeResource(uri=settings.lake_uri, s3=s3)
    return {
        "s3": s3,
        "landing": LandingResource(uri=settings.landing_uri, s3=s3),
        "lake": lake,
        "lake_io_manager": LakeParquetIOManager(lake=lake),
        "model_io_manager": LakeModelIOManager(lake=lake),
    }


def local_resources(settings: Settings) -> dict[str, Any]:
    network = load_network_settings()
    storage = _storage_resources(settings, network)
    return {
        **storage,
        **local_distribution_resources(settings, storage["s3"], network),
        **local_orchestration_resources(settings),
    }


def aws_resources(settings: Settings) -> dict[str, Any]:
    network = load_network_settings()
    storage = _storage_resources(settings, network)
    return {
        **storage,
        **aws_distribution_resources(settings, storage["s3"], network),
        **aws_orchestration_resources(settings, storage["s3"], network),
    }


RESOURCES_BY_ENV: dict[str, Callable[[Settings], dict[str, Any]]] = {
    "local": local_resources,
    "aws": aws_resources,
}


def resources_for(settings: Settings) -> dict[str, Any]:
    return RESOURCES_BY_ENV[settings.env](settings)
