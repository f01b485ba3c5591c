"""The one redaction function: DSN passwords (well- and malformed), URI userinfo, secret variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loyalty_assets.domain.redaction import SECRET_ENVIRONMENT_VARIABLES, mask_quoted, one_line, redact

REPO_ROOT = Path(__file__).resolve().parents[1]
# Names that hold credentials by convention.
SECRET_NAME = re.compile(r"(PASSWORD|DSN|SECRET|TOKEN|API_KEYS?)$")


@pytest.fixture(autouse=True)
def no_secret_variables(monkeypatch):
    for name in SECRET_ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=db port=5432 password=hunter22 dbname=x", "host=db port=5432 password=*** dbname=x"),
        ("host=db PASSWORD = 'two words\\' and' dbname=x", "host=db PASSWORD = *** dbname=x"),
        ("postgresql://loader:hunter22@db:5432/x", "postgresql://loader:***@db:5432/x"),
        ("postgresql://loader:p%zz!@db/x failed", "postgresql://loader:***@db/x failed"),
        ("postgresql://loader:p@ss/w@rd@db/x", "postgresql://loader:***@db/x"),
        ("s3://bucket/key and https://host:443/path stay", "s3://bucket/key and https://host:443/path stay"),
    ],
)
def test_connection_string_passwords_are_masked(text, expected):
    assert redact(text) == expected


def test_the_fragments_of_a_mistyped_dsn_variable_are_masked(monkeypatch):
    monkeypatch.setenv("LOYALTY_RDS_DSN", "host=db user=loader password=Bad Pw_SECRET_3 dbname=x")
    libpq = 'invalid dsn: missing "=" after "Pw_SECRET_3" in connection info string'
    assert redact(libpq) == 'invalid dsn: missing "=" after "***" in connection info string'


def test_uri_dsn_passwords_are_masked_raw_and_decoded(monkeypatch):
    monkeypatch.setenv("LOYALTY_RDS_DSN", "postgresql://loader:p%40ss%zzword@db/x")
    assert redact('invalid percent-encoded token: "p%40ss%zzword"') == 'invalid percent-encoded token: "***"'
    assert redact("auth failed for p@ss%zzword") == "auth failed for ***"


def test_every_secret_variable_and_each_api_key_is_masked(monkeypatch):
    for name in SECRET_ENVIRONMENT_VARIABLES:
        monkeypatch.setenv(name, f"value-of-{name}")
    monkeypatch.setenv("LOYALTY_API_KEYS", "first-key-1234, second-key-5678")
    text = " ".join(f"value-of-{name}" for name in SECRET_ENVIRONMENT_VARIABLES if name != "LOYALTY_API_KEYS")
    assert set(redact(text).split()) == {"***"}
    assert redact("rejected second-key-5678 and first-key-1234") == "rejected *** and ***"


def test_explicit_secrets_are_masked_but_short_parts_alone_are_not():
    assert redact("login bot/ab cdefgh refused", ["ab cdefgh"]) == "login bot/*** refused"
    assert redact("ab is a word", ["ab cdefgh"]) == "ab is a word"


def test_mask_quoted_and_one_line():
    assert mask_quoted('missing "=" after "x y" in string') == 'missing "***" after "***" in string'
    assert one_line("could not connect\n\tIs the server running?\n") == "could not connect Is the server running?"


def test_every_secret_variable_the_project_reads_is_known_to_redaction():
    sources = [*(REPO_ROOT / "loyalty_assets").rglob("*.py"), REPO_ROOT / "deploy" / "dagster.yaml"]
    read = set()
    for path in sources:
        text = path.read_text()
        read |= set(re.findall(r"""(?:EnvVar|getenv|environ\.get|_env|_setting)\(\s*["']([A-Z0-9_]+)["']""", text))
        read |= set(re.findall(r"env:\s*([A-Z0-9_]+)", text))
    secret_like = {name for name in read if SECRET_NAME.search(name)}
    assert {"LOYALTY_RDS_DSN", "LOYALTY_SMTP_PASSWORD", "DAGSTER_PG_PASSWORD"} <= secret_like
    assert secret_like <= set(SECRET_ENVIRONMENT_VARIABLES)
