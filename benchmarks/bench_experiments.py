"""Retention experiments: hold-out assignment in the 15k weekly scoring, and a year of results."""

from __future__ import annotations

import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from loyalty_assets.domain.experiments import (
    assign_experiment,
    cell_control_shares,
    experiment_id,
    measure_experiments,
    sample_ratio_mismatches,
)
from loyalty_assets.domain.scoring import RISK_TIERS, load_action_table, recommend_actions
from loyalty_assets.domain.segmentation import SEGMENT_NAMES

MEMBERS = 15_000
FIRST_WEEK = date(2025, 1, 6)


def _week(members: np.ndarray, week: date, rng: np.random.Generator, table: pd.DataFrame) -> pd.DataFrame:
    tiers = rng.choice(RISK_TIERS, size=members.size, p=[0.60, 0.25, 0.10, 0.05])
    segments = rng.choice(SEGMENT_NAMES, size=members.size)
    return pd.DataFrame(
        {
            "loyalty_number": members,
            "week": week.isoformat(),
            "snapshot_month": pd.Timestamp(week).to_period("M").to_timestamp() - pd.DateOffset(months=1),
            "risk_tier": tiers,
            "segment": segments,
            "recommended_action": recommend_actions(segments, tiers, table).to_numpy(),
        }
    )


def bench_assignment_15k() -> tuple[float, str]:
    table = load_action_table()
    week = _week(np.arange(100_001, 100_001 + MEMBERS), FIRST_WEEK, np.random.default_rng(1), table)
    started = time.perf_counter()
    assigned = assign_experiment(week, cell_control_shares(table), experiment_id(FIRST_WEEK))
    seconds = time.perf_counter() - started
    return seconds, f"{int((assigned['experiment_arm'] == 'control').sum())} held out (target <= 0.05 s)"


def bench_results_52_weeks() -> tuple[float, str]:
    """52 weekly Parquet files of 15k members read back and measured, as the monthly asset does."""
    rng = np.random.default_rng(2)
    table = load_action_table()
    shares = cell_control_shares(table)
    members = np.arange(100_001, 100_001 + MEMBERS)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for offset in range(52):
            week = FIRST_WEEK + timedelta(weeks=offset)
            frame = assign_experiment(_week(members, week, rng, table), shares, experiment_id(week))
            path = Path(folder) / f"{week}.parquet"
            frame.to_parquet(path)
            paths.append(path)
        cancelled = rng.random(MEMBERS) < 0.1
        loyalty = pd.DataFrame(
            {
                "loyalty_number": members,
                "cancellation_year": np.where(cancelled, 2025, np.nan),
                "cancellation_month": np.where(cancelled, rng.integers(1, 13, MEMBERS), np.nan),
            }
        )
        started = time.perf_counter()
        scored = pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)
        measurement = measure_experiments(scored, loyalty, date(2026, 1, 5), horizon=3)
        sample_ratio_mismatches(measurement.assignments)
        seconds = time.perf_counter() - started
    return seconds, f"{len(scored):,} scored rows, {len(measurement.results)} result rows (target <= 5 s)"
