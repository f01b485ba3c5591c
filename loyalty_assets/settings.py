"""The deployment settings, read from the environment in this one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ENVIRONMENTS = ("local", "aws")
DEFAULT_START_DATE = "2024-01-01"


class SettingsError(ValueError):
    """An environment variable holds a value the project cannot use."""


@dataclass(frozen=True)
class Settings:
    env: str
    home: Path
    landing_uri: str
    lake_uri: str
    start_date: str
    timezone: str
    schedules_running: bool

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster_home")

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def outbox_uri(self) -> str:
        return str(self.home / "outbox")


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={value!r}: use true or false")


def load_settings() -> Settings:
    env = os.environ.get("LOYALTY_ENV", "local").strip().lower() or "local"
    if env not in ENVIRONMENTS:
        raise SettingsError(f"LOYALTY_ENV={env!r}: use one of {', '.join(ENVIRONMENTS)}")
    home = Path(os.environ.get("LOYALTY_HOME") or Path.cwd() / ".loyalty").expanduser().resolve()
    start_date = os.environ.get("LOYALTY_START_DATE") or DEFAULT_START_DATE
    try:
        date.fromisoformat(start_date)
    except ValueError as error:
        raise SettingsError(f"LOYALTY_START_DATE={start_date!r}: use YYYY-MM-DD") from error
    return Settings(
        env=env,
        home=home,
        landing_uri=os.environ.get("LOYALTY_LANDING_URI") or str(home / "landing"),
        lake_uri=os.environ.get("LOYALTY_LAKE_URI") or str(home / "lake"),
        start_date=start_date,
        timezone=os.environ.get("LOYALTY_TIMEZONE") or "UTC",
        schedules_running=_flag("LOYALTY_SCHEDULES_RUNNING", default=env == "aws"),
    )


# --- Network bounds: every call to S3, SNS, AppFlow, CloudWatch, SES, PostgreSQL, Redshift and SMTP ---
NETWORK_DEFAULTS = {
    "LOYALTY_CONNECT_TIMEOUT_SECONDS": 10.0,
    "LOYALTY_READ_TIMEOUT_SECONDS": 60.0,
    "LOYALTY_MAX_ATTEMPTS": 3,
    "LOYALTY_STATEMENT_TIMEOUT_SECONDS": 1800.0,
}


@dataclass(frozen=True)
class NetworkSettings:
    """How long a network call may wait, and how often botocore tries it (the first try included)."""

    connect_timeout_seconds: float = NETWORK_DEFAULTS["LOYALTY_CONNECT_TIMEOUT_SECONDS"]
    read_timeout_seconds: float = NETWORK_DEFAULTS["LOYALTY_READ_TIMEOUT_SECONDS"]
    max_attempts: int = NETWORK_DEFAULTS["LOYALTY_MAX_ATTEMPTS"]
    statement_timeout_seconds: float = NETWORK_DEFAULTS["LOYALTY_STATEMENT_TIMEOUT_SECONDS"]


def _positive(name: str, default: float | int, kind: type) -> float | int:
    """A positive finite number from ``name``, ``default`` when it is unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if not 0 < number < float("inf"):
        raise SettingsError(f"{name}={value!r}: use a positive {'whole ' if kind is int else ''}number")
    return number


def load_network_settings() -> NetworkSettings:
    return NetworkSettings(
        connect_timeout_seconds=_positive("LOYALTY_CONNECT_TIMEOUT_SECONDS", NETWORK_DEFAULTS["LOYALTY_CONNECT_TIMEOUT_SECONDS"], float),
        read_timeout_seconds=_positive("LOYALTY_READ_TIMEOUT_SECONDS", NETWORK_DEFAULTS["LOYALTY_READ_TIMEOUT_SECONDS"], float),
        max_attempts=_positive("LOYALTY_MAX_ATTEMPTS", NETWORK_DEFAULTS["LOYALTY_MAX_ATTEMPTS"], int),
        statement_timeout_seconds=_positive("LOYALTY_STATEMENT_TIMEOUT_SECONDS", NETWORK_DEFAULTS["LOYALTY_STATEMENT_TIMEOUT_SECONDS"], float),
    )


@dataclass(frozen=True)
class ApiSettings:
    """The online scoring API (``loyalty-assets serve``)."""

    api_keys: tuple[str, ...]
    reload_seconds: float
    max_body_bytes: int


def load_api_settings() -> ApiSettings:
    """``LOYALTY_API_KEYS`` (comma-separated secret, required), ``LOYALTY_API_RELOAD_SECONDS``,
    ``LOYALTY_API_MAX_BODY_BYTES``."""
    keys = tuple(key.strip() for key in os.environ.get("LOYALTY_API_KEYS", "").split(",") if key.strip())
    if not keys:
        raise SettingsError("LOYALTY_API_KEYS is not set: give the API at least one key (comma-separated)")
    return ApiSettings(
        api_keys=keys,
        reload_seconds=_positive("LOYALTY_API_RELOAD_SECONDS", 30.0, float),
        max_body_bytes=_positive("LOYALTY_API_MAX_BODY_BYTES", 65536, int),
    )
