"""AWS clients whose every call has a bounded wait: connect and read timeouts, a bounded number of tries.

The bounds come from ``LOYALTY_CONNECT_TIMEOUT_SECONDS``, ``LOYALTY_READ_TIMEOUT_SECONDS`` and
``LOYALTY_MAX_ATTEMPTS`` (``settings.NetworkSettings``). botocore's timeout errors name the endpoint
URL that did not answer. boto3 still honours ``AWS_ENDPOINT_URL`` and ``AWS_DEFAULT_REGION``.
"""

from typing import Any

import boto3
import dagster as dg
from botocore.config import Config
from botocore.handlers import disable_signing
from dagster_aws.s3 import S3Resource
from pydantic import Field

from loyalty_assets.settings import NetworkSettings


def bounded_config(connect_timeout: float, read_timeout: float, max_attempts: int) -> Config:
    """botocore client config: both timeouts, and ``standard`` retries (which retry timeouts) up to ``max_attempts``."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
    )


class BoundedS3Resource(S3Resource):
    """dagster-aws ``S3Resource`` plus connect and read timeouts.

    ``S3Resource`` only takes ``max_attempts`` (its client has botocore's 60 s timeouts and no way
    to pass a ``Config``), so ``get_client`` builds the same client with the bounded config.
    """

    max_attempts: int = Field(default=NetworkSettings.max_attempts, description="Tries per call, the first included.")
    connect_timeout: float = Field(default=NetworkSettings.connect_timeout_seconds, description="Seconds per connect.")
    read_timeout: float = Field(default=NetworkSettings.read_timeout_seconds, description="Seconds per read.")

    def get_client(self) -> Any:
        client = boto3.session.Session(profile_name=self.profile_name).client(
            "s3",
            region_name=self.region_name,
            use_ssl=self.use_ssl,
            verify=self.verify,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=bounded_config(self.connect_timeout, self.read_timeout, self.max_attempts),
        )
        if self.use_unsigned_session:
            client.meta.events.register("choose-signer.s3.*", disable_signing)
        return client


class BoundedAwsClients(dg.ConfigurableResource):
    """Base of resources that call AWS (SNS, AppFlow, CloudWatch, SES): ``aws_client`` has the same bounds."""

    region_name: str | None = Field(default=None, description="Region; None: boto3's default.")
    max_attempts: int = Field(default=NetworkSettings.max_attempts, description="Tries per call, the first included.")
    connect_timeout: float = Field(default=NetworkSettings.connect_timeout_seconds, description="Seconds per connect.")
    read_timeout: float = Field(default=NetworkSettings.read_timeout_seconds, description="Seconds per read.")

    def aws_client(self, service_name: str) -> Any:
        config = bounded_config(self.connect_timeout, self.read_timeout, self.max_attempts)
        return boto3.client(service_name, region_name=self.region_name, config=config)


def client_bounds(network: NetworkSettings) -> dict[str, Any]:
    """The bound fields of ``BoundedS3Resource`` and ``BoundedAwsClients`` from the settings."""
    return {
        "max_attempts": network.max_attempts,
        "connect_timeout": network.connect_timeout_seconds,
        "read_timeout": network.read_timeout_seconds,
    }


def bounded_s3(network: NetworkSettings) -> BoundedS3Resource:
    return BoundedS3Resource(**client_bounds(network))
