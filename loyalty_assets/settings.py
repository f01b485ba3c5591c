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


@dataclass(frozen=True)
class ApiSettings:
    """The online scoring API (``loyalty-assets serve``)."""

    api_keys: tuple[str, ...]
    reload_seconds: float
    max_body_bytes: int


def _positive_number(name: str, default: str, kind: type):
    text = os.environ.get(name) or default
    try:
        value = kind(text)
    except ValueError as error:
        raise SettingsError(f"{name}={text!r}: use a positive number") from error
    if not value > 0:
        raise SettingsError(f"{name}={text!r}: use a positive number")
    return value


def load_api_settings() -> ApiSettings:
    """``LOYALTY_API_KEYS`` (comma-separated secret, required), ``LOYALTY_API_RELOAD_SECONDS``,
    ``LOYALTY_API_MAX_BODY_BYTES``."""
    keys = tuple(key.strip() for key in os.environ.get("LOYALTY_API_KEYS", "").split(",") if key.strip())
    if not keys:
        raise SettingsError("LOYALTY_API_KEYS is not set: give the API at least one key (comma-separated)")
    return ApiSettings(
        api_keys=keys,
        reload_seconds=_positive_number("LOYALTY_API_RELOAD_SECONDS", "30", float),
        max_body_bytes=_positive_number("LOYALTY_API_MAX_BODY_BYTES", "65536", int),
    )
