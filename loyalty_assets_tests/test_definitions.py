"""The graph as the UI shows it: loadable, a snapshot of its shape, and the metadata every asset and check
carries (description, group, kinds, owners), plus metrics emitted as numbers the UI can plot."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import dagster as dg
import pytest

from loyalty_assets import defs
from loyalty_assets.definitions import build_defs
from loyalty_assets.defs.ingestion.assets import raw_loyalty_tables
from loyalty_assets.defs.models.churn.assets import ChurnCandidateConfig, churn_model_candidate
from loyalty_assets.defs.partitions import monthly_partitions
from loyalty_assets.domain.churn import BOOSTING_SETTINGS, FOREST_SETTINGS
from loyalty_assets.domain.storage import LocalStore, dataframe_to_parquet_bytes
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.dagster_helpers import local_test_resources
from loyalty_assets_tests.drop_files import small_drop
from loyalty_assets_tests.training_sets import synthetic_training_set

GROUPS = {"ingestion", "features", "models", "predictions", "distribution", "monitoring", "experiments"}
CADENCE_BY_CRON = {"0 0 * * *": "daily", "0 0 * * 1": "weekly", "0 0 1 * *": "monthly", "0 0 1 1,4,7,10 *": "quarterly"}

# The whole graph in one place: update it on purpose when the graph changes on purpose.
EXPECTED_GRAPH = {
    "assets": {
        "churn_model": None,
        "churn_model_candidate": "monthly",
        "churn_predictions": "weekly",
        "churn_training_set": "monthly",
        "customer_features": "monthly",
        "marketing_email": "weekly",
        "monitoring_report": "weekly",
        "raw_flight_activity": "daily",
        "raw_loyalty_history": "daily",
        "raw_quarantine": "daily",
        "rds_churn_predictions": "weekly",
        "redshift_churn_predictions": "weekly",
        "redshift_retention_experiment_results": "monthly",
        "retention_experiment_results": "monthly",
        "salesforce_churn_sync": "weekly",
        "scoring_features": "weekly",
        "segmentation_model": None,
        "segmentation_model_candidate": "quarterly",
    },
    "checks": {
        "churn_model_candidate": [
            "beats_baseline",
            "no_leakage",
            "not_worse_than_champion",
            "recall_at_threshold",
            "roc_auc_floor",
        ],
        "churn_predictions": ["concept_drift", "prediction_drift"],
        "customer_features": [
            "no_infinite_values",
            "null_share_within_limit",
            "one_row_per_eligible_member",
            "plausible_ranges",
        ],
        "raw_flight_activity": [
            "columns_and_types",
            "last_complete_month_complete",
            "matches_manifest",
            "members_in_loyalty_history",
            "rows_within_bounds_of_previous_drop",
            "unique_member_month",
        ],
        "raw_loyalty_history": [
            "columns_and_types",
            "matches_manifest",
            "rows_within_bounds_of_previous_drop",
            "unique_loyalty_number",
        ],
        "raw_quarantine": ["quarantine_share_within_limit"],
        "retention_experiment_results": ["effect_at_planned_size", "no_harmful_action", "sample_ratio"],
        "scoring_features": [
            "feature_drift",
            "no_infinite_values",
            "null_share_within_limit",
            "one_row_per_eligible_member",
            "plausible_ranges",
        ],
        "segmentation_model_candidate": ["champion_agreement", "naming_rules", "segment_size", "silhouette"],
    },
    "jobs": {
        "daily_ingest_job": ["raw_flight_activity", "raw_loyalty_history", "raw_quarantine"],
        "monthly_churn_training_job": [
            "churn_model",
            "churn_model_candidate",
            "churn_training_set",
            "customer_features",
            "redshift_retention_experiment_results",
            "retention_experiment_results",
        ],
        "quarterly_segmentation_job": ["segmentation_model", "segmentation_model_candidate"],
        "weekly_scoring_job": [
            "churn_predictions",
            "marketing_email",
            "monitoring_report",
            "rds_churn_predictions",
            "redshift_churn_predictions",
            "salesforce_churn_sync",
            "scoring_features",
        ],
    },
    "schedules": {
        "daily_ingest_schedule": ("daily_ingest_job", "0 2 * * *"),
        "monthly_churn_training_schedule": ("monthly_churn_training_job", "0 2 1 * *"),
        "quarterly_segmentation_schedule": ("quarterly_segmentation_job", "0 2 1 1,4,7,10 *"),
        "weekly_scoring_schedule": ("weekly_scoring_job", "0 2 * * 1"),
    },
    "sensors": ["failed_check_alert_sensor", "run_failure_alert_sensor", "run_metrics_sensor"],
}


@pytest.fixture(scope="module")
def asset_graph():
    return defs.resolve_asset_graph()


def _cadence(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    return CADENCE_BY_CRON.get(partitions_def.cron_schedule, partitions_def.cron_schedule)


def graph_snapshot(asset_graph) -> dict:
    checks: dict[str, list[str]] = {}
    for key in sorted(asset_graph.asset_check_keys, key=lambda key: key.to_user_string()):
        checks.setdefault(key.asset_key.to_user_string(), []).append(key.name)
    return {
        "assets": {
            key.to_user_string(): _cadence(asset_graph.get(key).partitions_def)
            for key in sorted(asset_graph.get_all_asset_keys(), key=lambda key: key.to_user_string())
        },
        "checks": checks,
        "jobs": {
            job.name: sorted(key.to_user_string() for key in job.selection.resolve(asset_graph))
            for job in sorted(defs.jobs, key=lambda job: job.name)
        },
        "schedules": {
            schedule.name: (schedule.job_name, schedule.cron_schedule)
            for schedule in sorted(defs.schedules, key=lambda schedule: schedule.name)
        },
        "sensors": sorted(sensor.name for sensor in defs.sensors),
    }


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_schedules_and_sensors_follow_the_settings_build_defs_is_given():
    settings = load_settings()
    for running, status in ((True, "RUNNING"), (False, "STOPPED")):
        built = build_defs(replace(settings, schedules_running=running))
        assert {schedule.default_status.value for schedule in built.schedules} == {status}
        assert {sensor.default_status.value for sensor in built.sensors} == {status}
    with pytest.raises(ValueError, match="the partitions start on"):
        build_defs(replace(settings, timezone="Europe/Paris" if settings.timezone != "Europe/Paris" else "UTC"))


def test_graph_matches_the_snapshot(asset_graph):
    assert graph_snapshot(asset_graph) == EXPECTED_GRAPH


def test_every_asset_has_description_group_kinds_and_owners(asset_graph):
    problems = []
    for key in asset_graph.get_all_asset_keys():
        node = asset_graph.get(key)
        name = key.to_user_string()
        if not (node.description or "").strip():
            problems.append(f"{name}: no description")
        if node.group_name not in GROUPS:
            problems.append(f"{name}: group {node.group_name!r} not in {sorted(GROUPS)}")
        if not node.kinds:
            problems.append(f"{name}: no kinds")
        if not node.owners:
            problems.append(f"{name}: no owners")
    assert not problems, "\n".join(problems)


def test_every_check_has_a_description_and_targets_an_asset_of_a_known_group(asset_graph):
    problems = []
    for key in asset_graph.asset_check_keys:
        spec = asset_graph.get_check_spec(key)
        if not (spec.description or "").strip():
            problems.append(f"{key.to_user_string()}: no description")
        if asset_graph.get(key.asset_key).group_name not in GROUPS:
            problems.append(f"{key.to_user_string()}: its asset is not in a known group")
    assert not problems, "\n".join(problems)


def test_freshness_policies_on_the_raw_tables_and_the_predictions(asset_graph):
    windows = {
        key.to_user_string(): (policy.fail_window.to_timedelta(), policy.warn_window.to_timedelta())
        for key in asset_graph.get_all_asset_keys()
        if (policy := asset_graph.get(key).freshness_policy) is not None
    }
    daily = (timedelta(hours=30), timedelta(hours=26))
    assert windows == {
        "raw_loyalty_history": daily,
        "raw_flight_activity": daily,
        "raw_quarantine": daily,
        "churn_predictions": (timedelta(days=8), timedelta(days=7, hours=6)),
    }


def test_quarantine_share_is_emitted_as_a_float(tmp_path):
    small_drop(LocalStore(tmp_path / "landing"), "2024-11-05")
    result = dg.materialize([raw_loyalty_tables], partition_key="2024-11-05", resources=local_test_resources(tmp_path))
    (quarantine,) = [
        materialization
        for materialization in result.asset_materializations_for_node("raw_loyalty_tables")
        if materialization.asset_key == dg.AssetKey("raw_quarantine")
    ]
    assert isinstance(quarantine.metadata["quarantine_share"], dg.FloatMetadataValue)


# The candidate's input read from the lake as an external asset: no feature pipeline needed.
TRAINING_SET_SOURCE = dg.AssetSpec("churn_training_set", partitions_def=monthly_partitions).with_io_manager_key(
    "lake_io_manager"
)


def test_churn_candidate_config_tries_all_settings_or_the_first_ones_of_each_family():
    defaults = ChurnCandidateConfig().to_training_config(horizon_months=3)
    assert (defaults.forest_settings, defaults.boosting_settings) == (FOREST_SETTINGS, BOOSTING_SETTINGS)
    first = ChurnCandidateConfig(settings_per_family=1).to_training_config(horizon_months=3)
    assert (first.forest_settings, first.boosting_settings) == (FOREST_SETTINGS[:1], BOOSTING_SETTINGS[:1])


def test_churn_candidate_metrics_are_emitted_as_floats(tmp_path):
    partition = "2024-03-01"
    LocalStore(tmp_path / "lake").put_bytes(
        f"churn_training_set/{partition}.parquet", dataframe_to_parquet_bytes(synthetic_training_set())
    )
    result = dg.materialize(
        [TRAINING_SET_SOURCE, churn_model_candidate],
        partition_key=partition,
        resources=local_test_resources(tmp_path),
        run_config={"ops": {"churn_model_candidate": {"config": {"n_estimators": 20, "n_jobs": 1, "settings_per_family": 1}}}},
    )
    (candidate,) = result.asset_materializations_for_node("churn_model_candidate")
    for key in ("roc_auc", "pr_auc", "recall", "precision", "brier", "baseline_roc_auc"):
        assert isinstance(candidate.metadata[key], dg.FloatMetadataValue), key
