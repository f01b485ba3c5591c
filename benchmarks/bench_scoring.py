"""Speed of weekly scoring (``score_members``) and of the drift checks.

The champion is shaped like ``churn.ChurnTrainingConfig``'s: ``CalibratedClassifierCV(FrozenEstimator(
Pipeline(SimpleImputer, RandomForestClassifier(300 trees, min_samples_leaf=25, sqrt features,
balanced_subsample))))``, fitted on 50,000 synthetic training rows of the 21 feature columns at a
churn rate of about 4% (more rows than the real data's training snapshots, so the trees are at
least as deep). Fitting takes minutes, so the fitted model, its tier cut-offs and its validation
scores are cached in the temp folder; ``main`` prepares the cache before timing.

Each note gives the timed part (wall and CPU seconds) and the load average: on a shared machine
wall time also counts other processes. Run: ``python -m benchmarks.bench_scoring``.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from loyalty_assets.domain.churn import ChurnTrainingConfig, forest_pipeline
from loyalty_assets.domain.drift import (
    build_reference,
    concept_drift,
    feature_drift,
    prediction_drift,
    score_distribution,
)
from loyalty_assets.domain.features import FEATURE_COLUMNS, categorical_among
from loyalty_assets.domain.reasons import usual_values
from loyalty_assets.domain.scoring import (
    assign_tiers,
    load_action_table,
    score_members,
    tier_cutoffs,
)
from loyalty_assets.domain.segmentation import SEGMENT_NAMES

TRAINING_ROWS = 50_000
VALIDATION_ROWS = 20_000
SEED = 20181203
CACHE_PATH = Path(tempfile.gettempdir()) / f"loyalty_bench_scoring_fitted_champion_{TRAINING_ROWS}_{SEED}.joblib"


def synthetic_features(count: int, rng: np.random.Generator) -> pd.DataFrame:
    """A ``scoring_features`` snapshot with the 21 feature columns, NaN where the features define it."""
    active_months = rng.binomial(12, rng.beta(2, 1.5, count)).astype(float)
    flights_12m = np.where(active_months > 0, active_months * (1 + rng.poisson(9, count)), 0).astype(float)
    flights_3m = np.floor(flights_12m * rng.beta(2, 6, count))
    distance_12m = flights_12m * rng.lognormal(np.log(236), 0.8, count)
    redeemed_12m = np.where(rng.random(count) < 0.5, rng.integers(300, 3000, count), 0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = {
            "flights_3m": flights_3m,
            "flights_6m": flights_3m + np.floor(flights_12m * rng.beta(2, 6, count)),
            "flights_12m": flights_12m,
            "distance_3m": flights_3m * rng.lognormal(np.log(236), 0.8, count),
            "distance_12m": distance_12m,
            "points_accumulated_12m": distance_12m * 0.1,
            "points_redeemed_3m": np.where(rng.random(count) < 0.15, rng.integers(300, 800, count), 0).astype(float),
            "points_redeemed_12m": redeemed_12m,
            "months_since_last_flight": np.where(active_months > 0, rng.integers(0, 6, count), 12).astype(float),
            "active_months_12m": active_months,
            "flights_mom_change": rng.integers(-10, 11, count).astype(float),
            "flights_3m_minus_prior_3m": rng.integers(-20, 21, count).astype(float),
            "flights_slope_6m": rng.normal(0, 1.5, count),
            "flights_cv_12m": np.where(flights_12m > 0, rng.gamma(2, 0.4, count), np.nan),
            "redeemed_to_accumulated_12m": np.where(distance_12m > 0, redeemed_12m / (distance_12m * 0.1), np.nan),
            "dollar_cost_per_redeemed_point_12m": np.where(redeemed_12m > 0, rng.normal(0.081, 0.003, count), np.nan),
            "distance_per_flight_12m": np.where(flights_12m > 0, distance_12m / flights_12m, np.nan),
            "companion_share_12m": np.where(flights_12m > 0, rng.beta(2, 8, count), np.nan),
            "tenure_months": rng.integers(1, 84, count).astype(float),
            "loyalty_card_tier": rng.choice([0.0, 1.0, 2.0], count, p=[0.456, 0.339, 0.205]),
            "promotion_enrollment": (rng.random(count) < 0.06).astype(float),
        }
    frame = pd.DataFrame(columns)[FEATURE_COLUMNS]
    frame.insert(0, "loyalty_number", 100_000 + np.arange(count, dtype=np.int64))
    frame.insert(1, "snapshot_month", pd.Timestamp("2018-11-01"))
    return frame


def synthetic_churn(features: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """About 4% churn, driven by short tenure, promotion enrolment and silence."""
    logit = (
        -4.2
        + 1.2 * (features["tenure_months"] < 12)
        + 1.3 * features["promotion_enrollment"]
        + 0.12 * features["months_since_last_flight"]
        - 0.3 * features["loyalty_card_tier"]
    )
    return (rng.random(len(features)) < 1 / (1 + np.exp(-logit.to_numpy()))).astype(int)


@dataclass(frozen=True)
class BenchmarkChampion:
    model: CalibratedClassifierCV
    cutoffs: dict[str, float]
    validation_features: pd.DataFrame
    validation_scores: np.ndarray


def _fit_champion() -> BenchmarkChampion:
    rng = np.random.default_rng(SEED)
    train = synthetic_features(TRAINING_ROWS, rng)
    validation = synthetic_features(VALIDATION_ROWS, rng)
    pipeline = forest_pipeline(ChurnTrainingConfig(), len(train))
    pipeline.fit(train[FEATURE_COLUMNS], synthetic_churn(train, rng))
    pipeline.named_steps["forest"].set_params(n_jobs=1)  # as the churn trainer leaves it
    model = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")
    model.fit(validation[FEATURE_COLUMNS], synthetic_churn(validation, rng))
    validation_scores = model.predict_proba(validation[FEATURE_COLUMNS])[:, 1]
    return BenchmarkChampion(model, tier_cutoffs(validation_scores), validation, validation_scores)


def champion() -> BenchmarkChampion:
    """The cached benchmark champion; fitted and cached on first use."""
    if not CACHE_PATH.exists():
        partial = CACHE_PATH.with_suffix(".partial")
        joblib.dump(_fit_champion(), partial)
        os.replace(partial, CACHE_PATH)
    return joblib.load(CACHE_PATH)


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _load_note() -> str:
    return f"load avg {os.getloadavg()[0]:.1f}"


def _bench_score(member_count: int) -> tuple[float, str]:
    fitted = champion()
    rng = np.random.default_rng(member_count)
    features = synthetic_features(member_count, rng)
    segments = np.asarray(SEGMENT_NAMES, dtype=object)[rng.integers(0, len(SEGMENT_NAMES), member_count)]
    table = load_action_table()
    usual = usual_values(fitted.validation_features, FEATURE_COLUMNS, categorical_among(FEATURE_COLUMNS))
    predictions, wall, cpu = _timed(
        lambda: score_members(
            fitted.model,
            features,
            FEATURE_COLUMNS,
            fitted.cutoffs,
            segments,
            table,
            "2018-12-03",
            "churn-bench",
            "segmentation-bench",
            usual=usual,
        )
    )
    explained = int((predictions["top_reasons"] != "").sum())
    trees = fitted.model.calibrated_classifiers_[0].estimator.estimator[-1].estimators_
    nodes = np.mean([tree.tree_.node_count for tree in trees])
    return wall, (
        f"score_members {cpu:.2f} s CPU; {member_count:,} members, {explained:,} explained "
        f"(each feature set to its usual value and scored again); {len(trees)} trees x {nodes:.0f} nodes; "
        f"{_load_note()}"
    )


def bench_score_15k() -> tuple[float, str]:
    return _bench_score(15_000)


def bench_score_1m() -> tuple[float, str]:
    return _bench_score(1_000_000)


def bench_drift_15k() -> str:
    """Drift checks of one 15k-member week; the week's scores are cached validation scores (no scoring here)."""
    fitted = champion()
    cutoffs = fitted.cutoffs
    reference, reference_seconds, _ = _timed(
        lambda: build_reference(
            fitted.validation_features,
            FEATURE_COLUMNS,
            categorical_among(FEATURE_COLUMNS),
            fitted.validation_scores,
            assign_tiers(fitted.validation_scores, cutoffs),
        )
    )
    rng = np.random.default_rng(15_000)
    features = synthetic_features(15_000, rng)
    scores = fitted.validation_scores[: len(features)]
    predictions = pd.DataFrame(
        {
            "loyalty_number": features["loyalty_number"],
            "churn_risk_pct": np.round(scores * 100.0, 1),
            "risk_tier": assign_tiers(scores, cutoffs),
        }
    )
    outcomes = pd.Series(synthetic_churn(features, rng), index=features["loyalty_number"].to_numpy())
    edges = reference["score_histogram"]["edges"]
    previous = [
        score_distribution(scores, predictions["risk_tier"], edges, week=f"2018-10-{day:02d}") for day in range(1, 9)
    ]

    def all_checks():
        feature_drift(reference, features)
        prediction_drift(reference, scores, predictions["risk_tier"], previous_weeks=previous)
        concept_drift(predictions, outcomes, 0.05, {"roc_auc": 0.75, "recall": 0.8})

    _, wall, cpu = _timed(all_checks)
    return (
        f"feature + prediction (8 previous weeks) + concept drift {wall:.2f} s wall, {cpu:.2f} s CPU; "
        f"build_reference {reference_seconds:.2f} s; {_load_note()}"
    )
