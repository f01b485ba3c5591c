"""The local environment pointed at test folders or buckets: its resources, or a whole project home."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loyalty_assets.environment import resources_for
from loyalty_assets.settings import StorageSettings, load_settings


def local_test_resources(home: Path, landing_uri: str | None = None, lake_uri: str | None = None) -> dict[str, Any]:
    settings = replace(
        load_settings(),
        env="local",
        home=home,
        storage=StorageSettings(
            landing_uri=landing_uri or str(home / "landing"), lake_uri=lake_uri or str(home / "lake")
        ),
    )
    return resources_for(settings)


@contextmanager
def project_home(home: Path) -> Iterator[Path]:
    """For the ``with`` block, the local environment on ``home``: its landing zone, lake and Dagster
    instance (``LOYALTY_HOME``, ``DAGSTER_HOME``); the process environment is restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOYALTY_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
        for name in ("LOYALTY_ENV", "LOYALTY_LANDING_URI", "LOYALTY_LAKE_URI"):
            patch.delenv(name, raising=False)
        yield home
