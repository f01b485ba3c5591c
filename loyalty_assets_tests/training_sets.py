"""Synthetic churn training sets built with numpy: members observed on consecutive monthly snapshots.

- ``make_training_set``: churn from a persistent latent trait, seen through ``FEATURES`` (signals
  and noise named as such), for the domain tests of training, gates and plots.
- ``synthetic_training_set``: the production ``MODEL_FEATURES``, for the Dagster assets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loyalty_assets.domain.churn import ChurnTrainingConfig
from loyalty_assets.domain.features import CATEGORICAL_FEATURES, MODEL_FEATURES

FEATURES = [
    "tenure_months", "promotion_enrollment", *(f"signal_{i}" for i in range(4)), *(f"noise_{i}" for i in range(15))
]
# Small grids keep the suite fast; the defaults are measured in benchmarks/bench_pipeline.py.
SMALL = ChurnTrainingConfig(
    n_estimators=50,
    test_snapshots=3,
    validation_snapshots=2,
    bootstrap_rounds=100,
    forest_settings=(
        {"min_samples_leaf": 25, "max_features": "sqrt"},
        {"min_samples_leaf": 50, "max_features": 0.5},
    ),
    boosting_settings=(
        {"learning_rate": 0.1, "max_iter": 40, "max_leaf_nodes": 7, "min_samples_leaf": 100},
        {"learning_rate": 0.1, "max_iter": 40, "max_leaf_nodes": 15, "min_samples_leaf": 50},
    ),
)


def _member_snapshots(members: int, snapshots: int, first_month: str, seed: int):
    """The generator, then per row (member-major): loyalty number, snapshot month, snapshot position."""
    rng = np.random.default_rng(seed)
    months = pd.date_range(first_month, periods=snapshots, freq="MS")
    member = np.repeat(np.arange(100_001, 100_001 + members), snapshots)
    step = np.tile(np.arange(snapshots), members)
    return rng, member, months[step], step


def make_training_set(n_members: int = 2000, n_snapshots: int = 12, seed: int = 0) -> pd.DataFrame:
    """Members observed monthly; churn risk from a persistent latent trait, tenure and promotion, plus noise."""
    rng, member, snapshot_month, step = _member_snapshots(n_members, n_snapshots, "2017-01-01", seed)
    latent = np.repeat(rng.normal(size=n_members), n_snapshots)
    promotion = np.repeat((rng.random(n_members) < 0.1).astype(float), n_snapshots)
    tenure = np.repeat(rng.integers(1, 80, n_members), n_snapshots) + step
    rows = len(member)
    trait = latent + 0.3 * rng.normal(size=rows)
    logit = -3.4 + 1.3 * trait + 0.6 * np.maximum(trait, 0) ** 2 + 0.9 * promotion - 0.012 * tenure
    frame = pd.DataFrame(
        {
            "loyalty_number": member.astype("int64"),
            "snapshot_month": snapshot_month,
            "history_months": np.minimum(step + 1, 12).astype("int64"),
            "tenure_months": tenure.astype(float),
            "promotion_enrollment": promotion,
            "signal_0": trait + 0.5 * rng.normal(size=rows),
            "signal_1": -trait + 0.7 * rng.normal(size=rows),
            "signal_2": np.maximum(trait, 0) + 0.5 * rng.normal(size=rows),
            "signal_3": np.where(rng.random(rows) < 0.1, np.nan, trait + rng.normal(size=rows)),
            **{f"noise_{i}": rng.normal(size=rows) for i in range(15)},
        }
    )
    frame["churned"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    return frame


def synthetic_training_set(members: int = 400, snapshots: int = 14, seed: int = 0) -> pd.DataFrame:
    """The model feature columns with churn driven by recent flights and tenure; 14 monthly snapshots."""
    rng, member, snapshot_month, step = _member_snapshots(members, snapshots, "2023-01-01", seed)
    rows = len(member)
    frame = pd.DataFrame({column: rng.gamma(2.0, 2.0, rows) for column in MODEL_FEATURES})
    for column in CATEGORICAL_FEATURES:
        frame[column] = rng.integers(0, 3, rows).astype(float)
    frame["promotion_enrollment"] = (rng.random(rows) < 0.1).astype(float)
    frame["tenure_months"] = np.repeat(rng.integers(1, 80, members), snapshots) + step.astype(float)
    logit = -2.0 - 0.5 * frame["flights_3m"] + 0.8 * frame["promotion_enrollment"] - 0.01 * frame["tenure_months"]
    return frame.assign(
        loyalty_number=member.astype("int64"),
        snapshot_month=snapshot_month,
        history_months=np.minimum(step + 1, 12).astype("int64"),
        churned=(rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64"),
        label_horizon_months=3,
    )
