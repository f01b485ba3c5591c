"""One project home after ``run --as-of``: sample drops ingested, both champions trained and
promoted, a week scored and distributed, every run recorded in its Dagster instance.

The end-to-end tests (test_pipeline, test_browser) share it: it is built once per test session,
by whichever pytest-xdist worker asks first, and each test works on its own copy.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from datetime import date
from pathlib import Path

import pytest

from loyalty_assets.domain.sample_data import SampleConfig, write_drops
from loyalty_assets.domain.storage import LocalStore
from loyalty_assets.runner import demo_drop_dates, run_as_of
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.dagster_helpers import project_home

AS_OF = date(2026, 11, 27)
WEEK = "2026-11-23"  # the Monday of AS_OF
MONTH = "2026-10-01"  # the churn training partition of AS_OF
SECOND_QUARTER_DROP = date(2026, 6, 30)  # lets a test fit a second segmentation version
DROPS = sorted([*demo_drop_dates(AS_OF), SECOND_QUARTER_DROP])
CUSTOMERS = 15000  # on 3,000, 6,000 or 10,000 members the churn candidate fails its gates


def build(home: Path) -> None:
    with project_home(home):
        write_drops(LocalStore(home / "landing"), DROPS, SampleConfig(customers=CUSTOMERS))
        run_as_of(load_settings(), AS_OF, echo=lambda line: None)


def session_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's build, made on first use; the xdist workers share the session's temp root."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    home, done = root / "scored_home", root / "scored_home.done"
    with open(root / "scored_home.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another worker builds it (filelock is no dependency)
        if not done.exists():
            shutil.rmtree(home, ignore_errors=True)  # what a failed build left
            build(home)
            done.touch()
    return home
