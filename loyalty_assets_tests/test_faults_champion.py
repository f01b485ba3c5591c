"""Fault suite: a re-run of an older date never demotes the champion.

Before forward-only promotion, ``run --as-of`` for a newer date promoted that month's model and a
later ``run --as-of`` for an older date promoted the older one, which scoring then used. Here the
CLI runs a newer date, then an older one (in-process, recorded in a temporary instance), and the
tests check what the registry, the champion objects and the scoring hold, then move back by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from loyalty_assets import cli
from loyalty_assets.definitions import build_defs
from loyalty_assets.domain import lake_keys, registry
from loyalty_assets.domain.storage import LocalStore, joblib_bytes_to_object, parquet_bytes_to_dataframe
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.dagster_helpers import QUICK_CHURN_TRAINING, project_home

NEWER_AS_OF = "2026-12-02"  # trains month 2026-11-01 and quarter 2026-07-01
OLDER_AS_OF = "2026-11-20"  # trains month 2026-10-01 (same quarter)
OLDER_WEEK = "2026-11-16"
OLDER_PARTITIONS = {"churn": "2026-10-01", "segmentation": "2026-04-01"}
# The June drop feeds the older quarter, materialized directly below.
DROPS = "2026-06-30,2026-09-30,2026-10-31,2026-11-20,2026-11-30,2026-12-02"
CHAMPION_OBJECTS = {"churn": "churn_model.pkl", "segmentation": "segmentation_model.pkl"}


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The home after the newer and then the older run, with the champions seen after the newer one."""
    home = tmp_path_factory.mktemp("champion_home")
    with project_home(home, churn_training=QUICK_CHURN_TRAINING):
        assert cli.main(["sample-data", "--customers", "15000", "--dates", DROPS]) == 0
        assert cli.main(["run", "--as-of", NEWER_AS_OF]) == 0
        lake = LocalStore(home / "lake")
        newer = {kind: registry.champion_version(lake, kind) for kind in registry.KINDS}
        objects = {kind: _snapshot(home / "lake" / name) for kind, name in CHAMPION_OBJECTS.items()}
        assert cli.main(["run", "--as-of", OLDER_AS_OF]) == 0
        yield {"home": home, "lake": lake, "newer": newer, "objects": objects}


@pytest.fixture
def env(runs):
    with project_home(runs["home"], churn_training=QUICK_CHURN_TRAINING):
        yield runs


def _older_version(lake, kind: str) -> str:
    (version,) = [
        entry["version"]
        for entry in registry.versions(lake, kind)
        if entry["source_partition"] == OLDER_PARTITIONS[kind]
    ]
    return version


def _champion_unchanged(env, kind: str) -> None:
    lake = env["lake"]
    assert registry.champion_version(lake, kind) == env["newer"][kind]
    assert [entry["version"] for entry in registry.history(lake, kind)] == [env["newer"][kind]]
    assert _snapshot(env["home"] / "lake" / CHAMPION_OBJECTS[kind]) == env["objects"][kind]


def test_older_run_registers_its_candidate_and_keeps_the_newer_champion(env):
    assert registry.record(env["lake"], "churn", _older_version(env["lake"], "churn"))["gates_passed"] is True
    _champion_unchanged(env, "churn")


def test_older_week_is_scored_by_the_newer_champions(env):
    predictions = parquet_bytes_to_dataframe(env["lake"].get_bytes(f"churn_predictions/{OLDER_WEEK}.parquet"))
    assert set(predictions["churn_model_version"]) == {env["newer"]["churn"]}
    assert set(predictions["segmentation_model_version"]) == {env["newer"]["segmentation"]}


@pytest.mark.parametrize("kind", registry.KINDS)
def test_materializing_an_older_partition_says_why_it_is_not_promoted(env, kind):
    defs = build_defs(load_settings())
    champion_asset = CHAMPION_OBJECTS[kind].removesuffix(".pkl")
    result = dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        selection=dg.AssetSelection.assets(f"{champion_asset}_candidate", champion_asset),
        partition_key=OLDER_PARTITIONS[kind],
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"churn_model_candidate": {"config": QUICK_CHURN_TRAINING}}} if kind == "churn" else None,
    )
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert materialized == {f"{champion_asset}_candidate"}
    (observation,) = [
        event.event_specific_data.asset_observation
        for event in result.all_events
        if event.event_type_value == "ASSET_OBSERVATION"
        and event.event_specific_data.asset_observation.asset_key == dg.AssetKey(champion_asset)
    ]
    metadata = {key: value.value for key, value in observation.metadata.items()}
    older = _older_version(env["lake"], kind)
    assert registry.record(env["lake"], kind, older)["gates_passed"] is True
    assert metadata["promoted"] is False and metadata["version"] == older
    assert metadata["champion_version"] == env["newer"][kind]
    assert "trained on older data than the champion" in metadata["why"]
    assert f"loyalty-assets model promote --kind {kind} --version {older}" in metadata["why"]
    _champion_unchanged(env, kind)


def test_manual_promotion_moves_back_and_repromoting_changes_nothing(env):
    lake, champion_object = env["lake"], env["home"] / "lake" / CHAMPION_OBJECTS["churn"]
    older = _older_version(lake, "churn")
    assert cli.main(["model", "promote", "--version", older, "--reason", "audit of the October model"]) == 0
    assert registry.champion_version(lake, "churn") == older
    assert joblib_bytes_to_object(champion_object.read_bytes()).version == older
    entry = registry.history(lake, "churn")[-1]
    assert (entry["previous"], entry["reason"], entry["forced"]) == (env["newer"]["churn"], "audit of the October model", False)

    history, before = registry.history(lake, "churn"), _snapshot(champion_object)
    assert cli.main(["model", "promote", "--version", older, "--reason", "again"]) == 0
    assert registry.history(lake, "churn") == history
    assert _snapshot(champion_object) == before

    assert cli.main(["model", "promote", "--version", env["newer"]["churn"], "--reason", "audit done"]) == 0
    assert registry.champion_version(lake, "churn") == env["newer"]["churn"]


def test_a_path_as_version_is_refused_in_one_line_before_any_key_is_built(env):
    before = _snapshot(env["home"] / "lake" / CHAMPION_OBJECTS["churn"])
    completed = subprocess.run(
        [sys.executable, "-m", "loyalty_assets.cli", "model", "promote", "--version", "../../churn_model", "--reason", "x"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "loyalty-assets: '../../churn_model' is not a model version: "
        "expected YYYY-MM.<lower-case letters and digits>, as `loyalty-assets model list` shows"
    ]
    assert _snapshot(env["home"] / "lake" / CHAMPION_OBJECTS["churn"]) == before


@pytest.mark.parametrize("version", ["../../churn_model", "2026-11.9A3FDAA9", "2026-11.9a3fdaa9/x", "", "2026-11"])
def test_registry_refuses_anything_but_a_version_id(tmp_path, version):
    store = LocalStore(tmp_path)
    for call in (
        lambda: registry.record(store, "churn", version),
        lambda: registry.register(store, "churn", version, {}, {"source_partition": "2026-11-01"}),
        lambda: registry.log_promotion(store, "churn", version, reason="x", forced=False, run_id=None),
        lambda: registry.gate_verdicts(store, "churn", version),
    ):
        with pytest.raises(registry.RegistryError, match="is not a model version"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_automatic_promotion_moves_only_forward_in_training_data_time(tmp_path):
    store = LocalStore(tmp_path)
    records = {
        "2026-10.00000001": {"source_partition": "2026-10-01", "source_drop": "2026-10-31"},
        "2026-10.00000002": {"source_partition": "2026-10-01", "source_drop": "2026-10-15"},
        "2026-11.00000003": {"source_partition": "2026-11-01", "source_drop": "2026-11-30"},
    }
    for version, entry in records.items():
        registry.register(store, "segmentation", version, {}, entry)
    assert registry.automatic_promotion_refusal(store, "segmentation", "2026-10.00000001") is None
    registry.log_promotion(store, "segmentation", "2026-10.00000001", reason="gated", forced=False, run_id=None)
    assert "already the champion" in registry.automatic_promotion_refusal(store, "segmentation", "2026-10.00000001")
    assert "older data" in registry.automatic_promotion_refusal(store, "segmentation", "2026-10.00000002")
    assert registry.automatic_promotion_refusal(store, "segmentation", "2026-11.00000003") is None
    registry.log_promotion(store, "segmentation", "2026-11.00000003", reason="gated", forced=False, run_id=None)
    registry.log_promotion(store, "segmentation", "2026-11.00000003", reason="again", forced=False, run_id=None)
    assert [entry["version"] for entry in registry.history(store, "segmentation")] == [
        "2026-10.00000001",
        "2026-11.00000003",
    ]


def test_a_drift_reference_beside_the_records_is_not_listed_as_a_version(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    registry.register(store, "churn", "2026-10.abc123", {"model": None}, {"source_partition": "2026-10-01"})
    store.put_bytes(lake_keys.drift_reference_key("2026-10.abc123"), b"{}")
    assert [entry["version"] for entry in registry.versions(store, "churn")] == ["2026-10.abc123"]
