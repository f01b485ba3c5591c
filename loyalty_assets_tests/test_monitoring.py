"""Model monitoring through Dagster: drift checks on the weekly assets and the HTML report.

A small simulated population (``domain.sample_data``) is ingested, featurised and labelled with
the real domain code; the champion is a real ``churn_model_candidate`` materialization. Each
test writes the upstream tables into its own lake folder and runs only the report, which evaluates
the week, and the checks that read its evaluation (the upstream assets are declared as specs).
"""

import json
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from loyalty_assets.defs.models.churn.assets import ChurnCandidateConfig, churn_model_candidate
from loyalty_assets.defs.monitoring.assets import MONITORING_ASSETS, monitoring_report
from loyalty_assets.defs.monitoring.checks import (
    MONITORING_CHECKS,
    concept_drift_check,
    feature_drift_check,
    prediction_drift_check,
)
from loyalty_assets.defs.partitions import daily_partitions, monthly_partitions, weekly_partitions
from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import ChurnBundle
from loyalty_assets.domain.drift import build_reference
from loyalty_assets.domain.features import (
    FEATURE_COLUMNS,
    all_snapshots,
    build_features,
    categorical_among,
    last_complete_month,
)
from loyalty_assets.domain.ingest import SourceFile, ingest_drop
from loyalty_assets.domain.labels import build_training_set, members_enrolled_on
from loyalty_assets.domain.lake_keys import drift_reference_key
from loyalty_assets.domain.sample_data import SampleConfig, encode_drop_file, extract_as_of, simulate_population
from loyalty_assets.domain.scoring import assign_tiers, load_action_table, score_members
from loyalty_assets.domain.segmentation import SEGMENT_NAMES
from loyalty_assets_tests.dagster_helpers import QUICK_CHURN_TRAINING
from loyalty_assets_tests.drop_files import put_committed_drop
from loyalty_assets_tests.lake_folder import LakeFolder

TRAINING_MONTH = "2024-01-01"
TRAINING_DROP = date(2024, 1, 9)
WEEK = "2024-06-03"
DROPS = {"2024-02-05": date(2024, 2, 6), "2024-05-27": date(2024, 5, 28), WEEK: date(2024, 6, 4)}
MATURE_WEEK = "2024-02-05"  # snapshot 2024-01 + 3 months <= 2024-05, the last complete month of WEEK's drop

UPSTREAM = [
    dg.AssetSpec("scoring_features", partitions_def=weekly_partitions).with_io_manager_key("lake_io_manager"),
    dg.AssetSpec("churn_predictions", partitions_def=weekly_partitions).with_io_manager_key("lake_io_manager"),
    dg.AssetSpec("churn_model").with_io_manager_key("model_io_manager"),
    dg.AssetSpec("raw_loyalty_history", partitions_def=daily_partitions).with_io_manager_key("lake_io_manager"),
    dg.AssetSpec("churn_training_set", partitions_def=monthly_partitions).with_io_manager_key("lake_io_manager"),
    dg.AssetSpec("retention_experiment_results", partitions_def=monthly_partitions).with_io_manager_key(
        "lake_io_manager"
    ),
]


class Lake(LakeFolder):
    def put_week(self, week: str, features: pd.DataFrame, predictions: pd.DataFrame) -> None:
        self.put_table("scoring_features", week, features)
        self.put_table("churn_predictions", week, predictions)


@dataclass
class World:
    loyalty: dict[str, pd.DataFrame]
    activity: dict[str, pd.DataFrame]
    training_set: pd.DataFrame
    bundle: ChurnBundle
    features: dict[str, pd.DataFrame]
    predictions: dict[str, pd.DataFrame]


def ingested(population, drop_date: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    loyalty, activity = extract_as_of(population, drop_date)
    result = ingest_drop(
        [SourceFile("loyalty.csv", encode_drop_file(loyalty, "csv"))],
        [SourceFile("activity.csv", encode_drop_file(activity, "csv"))],
        drop_date=drop_date,
    )
    return result.loyalty, result.activity


def week_features(loyalty: pd.DataFrame, activity: pd.DataFrame, drop_date: date) -> pd.DataFrame:
    """What ``scoring_features`` holds for a week whose latest drop is ``drop_date``."""
    features = build_features(loyalty, activity, [last_complete_month(drop_date)])
    return features[features["loyalty_number"].isin(members_enrolled_on(loyalty, drop_date))].reset_index(drop=True)


def predict(bundle: ChurnBundle, features: pd.DataFrame, week: str) -> pd.DataFrame:
    segments = np.full(len(features), SEGMENT_NAMES[0], dtype=object)
    return score_members(
        bundle.model,
        features,
        bundle.feature_columns,
        bundle.tier_cutoffs,
        segments,
        load_action_table(),
        week,
        bundle.version,
        "segmentation-test",
    )


def model_scores(bundle: ChurnBundle, features: pd.DataFrame) -> np.ndarray:
    return bundle.model.predict_proba(features[bundle.feature_columns])[:, 1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    population = simulate_population(SampleConfig(customers=3000, history_months=36), max(DROPS.values()))
    loyalty, activity = ingested(population, TRAINING_DROP)
    training_set = build_training_set(
        build_features(loyalty, activity, all_snapshots(activity, TRAINING_DROP)),
        loyalty,
        horizon_months=3,
        last_complete=last_complete_month(TRAINING_DROP),
        lookback_months=12,
    ).assign(label_horizon_months=3)
    lake = Lake(tmp_path_factory.mktemp("training") / "lake")
    lake.put_table("churn_training_set", TRAINING_MONTH, training_set)
    config = ChurnCandidateConfig(**{**QUICK_CHURN_TRAINING, "n_estimators": 30, "n_jobs": 1})
    dg.materialize(
        [*UPSTREAM, churn_model_candidate],
        selection=[churn_model_candidate],
        partition_key=TRAINING_MONTH,
        resources=lake.resources(),
        run_config=dg.RunConfig({"churn_model_candidate": config}),
    )
    bundle = registry.load_bundle(lake.store, "churn", registry.versions(lake.store, "churn")[-1]["version"])
    drops = {week: ingested(population, drop_date) for week, drop_date in DROPS.items()}
    features = {week: week_features(*drops[week], DROPS[week]) for week in DROPS}
    return World(
        loyalty={week: drops[week][0] for week in DROPS},
        activity={week: drops[week][1] for week in DROPS},
        training_set=training_set,
        bundle=bundle,
        features=features,
        predictions={week: predict(bundle, features[week], week) for week in DROPS},
    )


@pytest.fixture
def lake(world: World, tmp_path: Path) -> Lake:
    """A lake holding the week's committed drop, which labels the matured weeks."""
    lake = Lake(tmp_path / "lake")
    put_committed_drop(lake.store, DROPS[WEEK].isoformat(), world.loyalty[WEEK])
    return lake


def run_checks(lake: Lake, week: str, checks) -> dict[str, dg.AssetCheckEvaluation]:
    """Run the report, which evaluates the week, and ``checks`` for one week."""
    result = dg.materialize(
        [*UPSTREAM, *MONITORING_ASSETS, *checks],
        selection=dg.AssetSelection.assets(monitoring_report) | dg.AssetSelection.checks(*checks),
        partition_key=week,
        resources=lake.resources(),
    )
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def run_checks_alone(lake: Lake, week: str, checks, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    """Run only ``checks`` for one week (checks alone carry the partition as a run tag)."""
    return dg.materialize(
        [*UPSTREAM, *MONITORING_ASSETS, *checks],
        selection=dg.AssetSelection.checks(*checks),
        tags={"dagster/partition": week},
        resources=lake.resources(),
        raise_on_error=raise_on_error,
    )


def values(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {key: value.value for key, value in evaluation.metadata.items()}


def champion_with_reference_of(world: World, features: pd.DataFrame) -> ChurnBundle:
    """The champion, its reference built from ``features`` and their own scores."""
    scores = model_scores(world.bundle, features)
    reference = build_reference(
        features,
        FEATURE_COLUMNS,
        categorical_among(FEATURE_COLUMNS),
        scores,
        assign_tiers(scores, world.bundle.tier_cutoffs),
    )
    return replace(world.bundle, drift_reference=reference)


def test_identical_data_shows_no_drift(world, lake):
    features, predictions = world.features[WEEK], world.predictions[WEEK]
    lake.put_champion(champion_with_reference_of(world, features))
    lake.put_week(WEEK, features, predictions)
    lake.put_table("churn_predictions", "2024-05-27", predictions.assign(week="2024-05-27"))

    checks = run_checks(lake, WEEK, [feature_drift_check, prediction_drift_check])

    feature, prediction = checks["feature_drift"], checks["prediction_drift"]
    assert feature.passed and prediction.passed
    feature_values = values(feature)
    assert feature_values["drift_share"] == 0.0
    assert feature_values["max_drift_score"] == pytest.approx(0.0, abs=1e-9)
    assert feature_values["reference_source"] == "bundle"
    assert "| flights_3m" in feature_values["drift_table"]
    prediction_values = values(prediction)
    assert prediction_values["previous_weeks_compared"] == 1
    assert prediction_values["max_score_psi_vs_previous_weeks"] == pytest.approx(0.0, abs=1e-12)
    # churn_risk_pct is rounded to 0.1 point: only scores next to a bin edge can change bin.
    assert prediction_values["score_psi_vs_reference"] < 0.01
    assert prediction_values["tier_psi_vs_reference"] < 0.01


def test_planted_shift_fails_exactly_the_shifted_features_and_scores(world, lake):
    features = world.features[WEEK]
    lake.put_champion(champion_with_reference_of(world, features))
    aurora_merged_into_nova = features["loyalty_card_tier"].replace(2.0, 1.0)
    shifted = features.assign(flights_3m=features["flights_3m"] * 3, loyalty_card_tier=aurora_merged_into_nova)
    predictions = world.predictions[WEEK]
    tripled = np.minimum(model_scores(world.bundle, features) * 3, 1.0)
    shifted_predictions = predictions.assign(
        churn_risk_pct=np.round(tripled * 100, 1), risk_tier=assign_tiers(tripled, world.bundle.tier_cutoffs)
    )
    lake.put_week(WEEK, shifted, shifted_predictions)

    checks = run_checks(lake, WEEK, [feature_drift_check, prediction_drift_check])

    feature = values(checks["feature_drift"])
    assert set(feature["drifted_features"]) == {"flights_3m", "loyalty_card_tier"}
    assert feature["warn_share"] == 0.0
    assert feature["drift_share"] == pytest.approx(2 / 21)
    # 2 of 21 features is below the 30 % dataset limit: the dataset warns.
    assert not checks["feature_drift"].passed
    assert checks["feature_drift"].severity == dg.AssetCheckSeverity.WARN
    assert checks["prediction_drift"].severity == dg.AssetCheckSeverity.ERROR
    assert not checks["prediction_drift"].passed
    assert values(checks["prediction_drift"])["tier_psi_vs_reference"] > 0.25
    assert values(checks["prediction_drift"])["tier_share_change_Critical"] > 0.2  # from a 5% reference share

    volume = ["flights_3m", "flights_6m", "flights_12m", "distance_3m", "distance_12m", "points_accumulated_12m"]
    broad_shift = features.assign(**{name: features[name] * 3 for name in [*volume, "tenure_months"]})
    lake.put_week(WEEK, broad_shift, predictions)
    broad = run_checks(lake, WEEK, [feature_drift_check])["feature_drift"]
    assert set(values(broad)["drifted_features"]) == {*volume, "tenure_months"}
    assert broad.severity == dg.AssetCheckSeverity.ERROR and not broad.passed


def test_brand_new_card_category_is_measured_not_a_crash(world, lake):
    loyalty, activity = world.loyalty[WEEK], world.activity[WEEK]
    features = world.features[WEEK]
    lake.put_champion(champion_with_reference_of(world, features))
    renamed = loyalty["loyalty_number"].isin(features["loyalty_number"].iloc[::10])
    with_new_card = loyalty.assign(loyalty_card=loyalty["loyalty_card"].where(~renamed, "Titanium"))
    new_features = week_features(with_new_card, activity, DROPS[WEEK])
    assert new_features["loyalty_card_tier"].isna().mean() == pytest.approx(0.1, abs=0.01)
    lake.put_week(WEEK, new_features, world.predictions[WEEK])

    feature = values(run_checks(lake, WEEK, [feature_drift_check])["feature_drift"])

    assert feature["drifted_features"] == ["loyalty_card_tier"]
    assert feature["max_drift_feature"] == "loyalty_card_tier"
    assert 0.2 < feature["max_drift_score"] < 1.0


def test_report_and_checks_on_a_realistic_week(world, lake):
    lake.put_champion(world.bundle)
    for week in DROPS:
        lake.put_week(week, world.features[week], world.predictions[week])

    result = dg.materialize(
        [*UPSTREAM, *MONITORING_ASSETS, *MONITORING_CHECKS],
        selection=dg.AssetSelection.assets(monitoring_report) | dg.AssetSelection.checks(*MONITORING_CHECKS),
        partition_key=WEEK,
        resources=lake.resources(),
    )

    assert len(result.get_asset_check_evaluations()) == 3
    (event,) = result.get_asset_materialization_events()
    metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    key = f"exports/monitoring/week={WEEK}/monitoring_report.html"
    assert metadata["path"] == lake.store.url(key)
    assert metadata["report"] == Path(lake.store.url(key)).as_uri()
    assert metadata["weeks_with_matured_labels"] == 1
    page = lake.store.get_bytes(key).decode("utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "http" not in page
    assert all(f'<td class="text">{name}</td>' in page for name in FEATURE_COLUMNS)
    assert page.count("data:image/png;base64,") == 3  # score histogram, tier history, realised performance
    assert f'<td class="text">{MATURE_WEEK}</td>' in page
    assert "<h2>Retention experiments</h2>" in page and "No retention experiment has matured outcomes yet" in page
    evaluations = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    feature = values(evaluations["feature_drift"])
    assert metadata["max_drift_score"] == feature["max_drift_score"]
    first_drift_row = page.split("<h2>Feature drift</h2>")[1].split("<tbody><tr>")[1].split("</tr>")[0]
    assert f'<td class="text">{feature["max_drift_feature"]}</td>' in first_drift_row
    assert f"<td>{feature['max_drift_score']:.4f}</td>" in first_drift_row
    concept = values(evaluations["concept_drift"])
    assert concept["evaluated_week"] == MATURE_WEEK
    assert concept["labels_complete_to"] == "2024-05"
    assert concept["n_members"] == len(world.predictions[MATURE_WEEK])


def test_champion_without_reference_gets_one_computed_once_and_stored(world, lake):
    old_champion = replace(world.bundle, drift_reference=None)
    lake.put_champion(old_champion)
    lake.put_week(WEEK, world.features[WEEK], world.predictions[WEEK])
    stored_key = drift_reference_key(world.bundle.version)

    lake.put_table("churn_training_set", TRAINING_MONTH, world.training_set)
    first = values(run_checks(lake, WEEK, [feature_drift_check])["feature_drift"])
    assert first["reference_source"] == "computed"
    assert json.loads(lake.store.get_bytes(stored_key)) == json.loads(json.dumps(world.bundle.drift_reference))

    lake.store.delete(f"churn_training_set/{TRAINING_MONTH}.parquet")
    second = values(run_checks(lake, WEEK, [feature_drift_check])["feature_drift"])
    assert second["reference_source"] == "stored"
    assert second["drift_table"] == first["drift_table"]

    lake.store.delete(stored_key)
    assert f"churn_training_set {TRAINING_MONTH} is not in the lake" in feature_drift_failure(lake)
    lake.put_table("churn_training_set", TRAINING_MONTH, world.training_set.iloc[:-1])
    assert f"churn_training_set {TRAINING_MONTH} has changed since it was trained" in feature_drift_failure(lake)
    assert not lake.store.exists(stored_key)


def feature_drift_failure(lake: Lake) -> str:
    """The error message of a feature drift check run that is expected to fail."""
    result = dg.materialize(
        [*UPSTREAM, *MONITORING_ASSETS, feature_drift_check],
        selection=dg.AssetSelection.assets(monitoring_report) | dg.AssetSelection.checks(feature_drift_check),
        partition_key=WEEK,
        resources=lake.resources(),
        raise_on_error=False,
    )
    return failure_message(result)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The error message of the one failed step of a run."""
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    return failure.step_failure_data.error.message


def test_checks_read_the_weeks_evaluation_instead_of_recomputing_it(world, lake):
    features = world.features[WEEK]
    lake.put_champion(champion_with_reference_of(world, features))
    lake.put_week(WEEK, features, world.predictions[WEEK])
    before_report = run_checks_alone(lake, WEEK, [feature_drift_check], raise_on_error=False)
    assert f"monitoring_report {WEEK} is not in the lake" in failure_message(before_report)

    assert run_checks(lake, WEEK, [feature_drift_check])["feature_drift"].passed
    lake.put_week(WEEK, features.assign(flights_3m=features["flights_3m"] * 3), world.predictions[WEEK])
    (stored,) = run_checks_alone(lake, WEEK, [feature_drift_check]).get_asset_check_evaluations()
    assert stored.passed and values(stored)["drift_share"] == 0.0
    assert values(run_checks(lake, WEEK, [feature_drift_check])["feature_drift"])["drifted_features"] == ["flights_3m"]
