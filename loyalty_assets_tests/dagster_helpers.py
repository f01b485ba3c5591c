"""The local environment pointed at test folders or buckets: its resources, or a whole project home."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loyalty_assets.environment import resources_for
from loyalty_assets.settings import StorageSettings, load_settings


# A quicker churn recipe than production's defaults (one setting of each family, fewer trees, one
# backtest window, fewer bootstrap rounds, fewer training rows) for tests whose assertions do not
# depend on the model's strength; the scored end-to-end homes train the defaults.
QUICK_CHURN_TRAINING = {
    "settings_per_family": 1,
    "n_estimators": 50,
    "n_jobs": 1,  # two pytest workers share the two cores
    "backtest_windows": 1,
    "bootstrap_rounds": 100,
    "max_train_rows": 40_000,
}


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
def project_home(home: Path, churn_training: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """For the ``with`` block, the local environment on ``home``: its landing zone, lake and Dagster
    instance (``LOYALTY_HOME``, ``DAGSTER_HOME``), and ``churn_training`` as the run config of the
    churn training (``LOYALTY_CHURN_TRAINING_CONFIG``) when given; the process environment is
    restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOYALTY_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
        if churn_training is None:
            patch.delenv("LOYALTY_CHURN_TRAINING_CONFIG", raising=False)
        else:
            patch.setenv("LOYALTY_CHURN_TRAINING_CONFIG", json.dumps(churn_training))
        for name in ("LOYALTY_ENV", "LOYALTY_LANDING_URI", "LOYALTY_LAKE_URI"):
            patch.delenv(name, raising=False)
        yield home
