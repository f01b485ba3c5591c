"""Shared fixtures: real local servers (moto for S3-compatible AWS, PostgreSQL, SMTP, `dagster dev`) and
the scored end-to-end home.

- ``moto_server`` (session): endpoint URL of an in-process moto HTTP server.
- ``aws_env``: dummy credentials + ``AWS_ENDPOINT_URL`` for this test; moto state reset afterwards.
- ``s3_bucket``: the bucket ``loyalty-test`` created on moto.
- ``postgres_dsn``: a ``PostgresTarget`` (dsn, schema) with a fresh schema per test, dropped after.
- ``smtp_server``: a recording aiosmtpd server; ``make_smtp_server(**smtp_options)`` for TLS/auth variants.
- ``scored_home_build`` (session): the home after ``run --as-of`` (scored_home.py), read-only;
  ``scored_home``: this test's own copy of it, as ``LOYALTY_HOME`` and its Dagster instance.
- ``dagster_dev`` (module): `dagster dev` serving the environment of the module's ``e2e_env`` fixture.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import boto3
import pytest
from aiosmtpd.controller import Controller
from moto.server import ThreadedMotoServer

from loyalty_assets_tests import scored_home as scored
from loyalty_assets_tests.dagster_helpers import project_home
from loyalty_assets_tests.dagster_webserver import DagsterDev, running_dagster_dev
from loyalty_assets_tests.ports import free_port
from loyalty_assets_tests.postgres import temporary

POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
S3_TEST_BUCKET = "loyalty-test"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Points boto3 at moto for one test; yields the endpoint URL."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    yield moto_server
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10)


@pytest.fixture
def s3_bucket(aws_env: str) -> str:
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket=S3_TEST_BUCKET)
    return S3_TEST_BUCKET


@dataclass(frozen=True)
class PostgresTarget:
    dsn: str
    schema: str


@pytest.fixture
def postgres_dsn() -> Iterator[PostgresTarget]:
    with temporary(POSTGRES_DSN, "SCHEMA", "test") as schema:
        yield PostgresTarget(dsn=POSTGRES_DSN, schema=schema)


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd handler hook
        parsed = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
        self.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


@pytest.fixture
def make_smtp_server() -> Iterator:
    """Factory: ``make_smtp_server(**options)`` starts a recording server; options go to aiosmtpd."""
    controllers: list[Controller] = []

    def start(**options) -> SmtpServer:
        recorder = SmtpServer(host="127.0.0.1", port=free_port())
        controller = Controller(recorder, hostname=recorder.host, port=recorder.port, **options)
        controller.start()
        controllers.append(controller)
        return recorder

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp_server(make_smtp_server) -> SmtpServer:
    return make_smtp_server()


@pytest.fixture(scope="session")
def scored_home_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scored.session_build(tmp_path_factory)


@pytest.fixture
def scored_home(scored_home_build: Path, tmp_path: Path) -> Iterator[Path]:
    home = shutil.copytree(scored_home_build, tmp_path / "home")
    with project_home(home):
        yield home


@pytest.fixture(scope="module")
def dagster_dev(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    with running_dagster_dev(e2e_env, tmp_path_factory.mktemp("dagster_dev") / "dagster_dev.log") as server:
        yield server
