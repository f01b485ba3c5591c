"""Resources of the local environment pointed at test folders or buckets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

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
