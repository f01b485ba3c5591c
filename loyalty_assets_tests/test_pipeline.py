"""The whole graph on a small simulated population, through Dagster and the CLI.

Each test gets its own copy of the session's scored home (``run --as-of`` in-process, recorded in
its Dagster instance: see scored_home.py). The tests check what it holds, plant a bad candidate,
roll back and forward with the CLI, and check what scoring and distribution read.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from loyalty_assets import cli
from loyalty_assets.definitions import build_defs
from loyalty_assets.domain import registry
from loyalty_assets.domain.features import MODEL_FEATURES
from loyalty_assets.domain.storage import (
    LocalStore,
    dataframe_to_parquet_bytes,
    joblib_bytes_to_object,
    parquet_bytes_to_dataframe,
)
from loyalty_assets.runner import execute_job, failure_summary
from loyalty_assets.settings import load_settings
from loyalty_assets_tests.dagster_helpers import QUICK_CHURN_TRAINING
from loyalty_assets_tests.scored_home import AS_OF, MONTH, WEEK


def _lake(home) -> LocalStore:
    return LocalStore(home / "lake")


def _champion_version(home, kind: str = "churn") -> str:
    return registry.history(_lake(home), kind)[-1]["version"]


def test_as_of_run_promotes_both_champions_with_complete_records(scored_home):
    lake = _lake(scored_home)
    churn = registry.record(lake, "churn", _champion_version(scored_home))
    assert churn["source_partition"] == MONTH
    assert churn["gates_passed"] is True
    assert set(churn["gates"]) == {
        "roc_auc_floor",
        "beats_baseline",
        "not_worse_than_champion",
        "recall_at_threshold",
        "no_leakage",
    }
    for key in ("training_window", "metrics", "feature_list", "data_fingerprint", "library_versions"):
        assert churn[key], key
    assert churn["feature_list"] == MODEL_FEATURES
    assert churn["training_window"]["test"][0] > churn["training_window"]["train"][-1]
    assert lake.exists(f"registry/churn/{churn['version']}.pkl")
    assert registry.record(lake, "segmentation", _champion_version(scored_home, "segmentation"))["gates_passed"] is True


def test_week_is_scored_by_the_champions_and_distributed(scored_home):
    lake = _lake(scored_home)
    predictions = parquet_bytes_to_dataframe(lake.get_bytes(f"churn_predictions/{WEEK}.parquet"))
    assert set(predictions["churn_model_version"]) == {_champion_version(scored_home)}
    assert set(predictions["segmentation_model_version"]) == {_champion_version(scored_home, "segmentation")}
    assert predictions["loyalty_number"].is_unique
    assert predictions["churn_risk_pct"].between(0, 100).all()
    assert set(predictions["risk_tier"]) == {"Low", "Medium", "High", "Critical"}
    assert set(predictions["segment"]) == {"Road Warriors", "Loyal Regulars", "Dabblers"}
    explained = predictions["risk_tier"].isin(["High", "Critical"])
    assert (predictions.loc[explained, "top_reasons"] != "").all()
    assert (predictions.loc[~explained, "top_reasons"] == "").all()
    export = scored_home / "lake" / "exports" / "churn_predictions" / f"week={WEEK}" / "churn_predictions.csv"
    exported = pd.read_csv(export)
    assert len(exported) == len(predictions)
    assert (scored_home / "outbox" / f"marketing_{WEEK}.eml").is_file()


def test_the_ui_shows_rounded_metrics_gates_plots_and_described_columns(scored_home):
    instance = dg.DagsterInstance.from_config(str(load_settings().dagster_home))

    def latest(asset: str) -> dict:
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return {key: value.value for key, value in event.asset_materialization.metadata.items()}

    raw = registry.record(_lake(scored_home), "churn", _champion_version(scored_home))["metrics"]
    candidate, champion = latest("churn_model_candidate"), latest("churn_model")
    for metadata in (candidate, champion):
        assert metadata["roc_auc"] == float(f"{raw['roc_auc']:.4g}") and metadata["n_test"] == raw["n_test"]
    assert champion["gates_passed"] is True and "| no_leakage" in champion["gates"]
    assert "data:image/png;base64," in champion["evaluation_plot"]
    assert "| Road Warriors" in latest("segmentation_model")["segment_profile"]
    schema = latest("churn_predictions")["dagster/column_schema"]
    assert all(column.description for column in schema.columns)


def test_scoring_metadata_counts_every_member_left_out_with_a_reason(scored_home):
    defs = build_defs(load_settings())
    result = dg.materialize(
        list(defs.assets) + list(defs.asset_checks),
        selection=["churn_predictions"],
        partition_key=WEEK,
        resources=defs.resources,
        instance=dg.DagsterInstance.ephemeral(),
    )
    materialization = result.asset_materializations_for_node("churn_predictions")[0]
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    predictions = parquet_bytes_to_dataframe(_lake(scored_home).get_bytes(f"churn_predictions/{WEEK}.parquet"))

    assert metadata["scoring_drop"] == AS_OF.isoformat()
    assert metadata["members_scored"] == len(predictions)
    left_out = metadata["members_left_out_by_reason"]
    assert left_out["loyalty_row_quarantined"] == 0 and left_out["no_scoring_features"] == 0
    assert left_out["enrolled_after_snapshot"] > 0  # the sample data enrols members in the drop's own month
    assert metadata["members_left_out"] == sum(left_out.values())
    assert metadata["members_in_drop"] == (
        metadata["members_scored"] + metadata["members_cancelled"] + metadata["members_left_out"]
    )


def _run_candidate_on_shuffled_labels(home) -> dg.ExecuteInProcessResult:
    """The month's candidate (the quick recipe, a smaller forest: it fails either way) and champion
    assets, run on the training set with shuffled labels."""
    lake = _lake(home)
    key = f"churn_training_set/{MONTH}.parquet"
    original = lake.get_bytes(key)
    training_set = parquet_bytes_to_dataframe(original)
    shuffled = training_set.assign(churned=training_set["churned"].sample(frac=1.0, random_state=3).to_numpy())
    lake.put_bytes(key, dataframe_to_parquet_bytes(shuffled))
    defs = build_defs(load_settings())
    try:
        return dg.materialize(
            list(defs.assets) + list(defs.asset_checks),
            selection=dg.AssetSelection.assets("churn_model_candidate", "churn_model"),
            partition_key=MONTH,
            resources=defs.resources,
            instance=dg.DagsterInstance.ephemeral(),
            run_config={"ops": {"churn_model_candidate": {"config": {**QUICK_CHURN_TRAINING, "n_estimators": 30}}}},
            raise_on_error=False,
        )
    finally:
        lake.put_bytes(key, original)


def _candidate_version(result: dg.ExecuteInProcessResult) -> str:
    (version,) = [
        event.materialization.metadata["version"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == "churn_model_candidate"
    ]
    return version


@pytest.fixture
def ungated_version(scored_home) -> str:
    """A churn candidate that failed its gates, registered next to the champion."""
    return _candidate_version(_run_candidate_on_shuffled_labels(scored_home))


def test_candidate_on_shuffled_labels_fails_its_gate_and_the_champion_stays(scored_home):
    champion_before = _champion_version(scored_home)
    result = _run_candidate_on_shuffled_labels(scored_home)
    assert not result.success
    verdicts = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
    assert verdicts["beats_baseline"] is False
    assert "churn_model" not in {
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    }
    assert _champion_version(scored_home) == champion_before
    assert registry.record(_lake(scored_home), "churn", _candidate_version(result))["gates_passed"] is False
    assert "beats_baseline" in failure_summary(result)


def test_cli_refuses_an_ungated_version_and_rolls_back_and_forward(scored_home, ungated_version, capsys):
    lake = _lake(scored_home)
    champion = _champion_version(scored_home)
    ungated = [entry["version"] for entry in registry.versions(lake, "churn") if not entry["gates_passed"]]
    assert ungated == [ungated_version]
    assert cli.main(["model", "promote", "--version", ungated[0]]) == 2
    assert "never passed its gates" in capsys.readouterr().err
    assert _champion_version(scored_home) == champion

    assert cli.main(["model", "promote", "--version", ungated[0], "--force", "--reason", "incident drill"]) == 0
    assert _champion_version(scored_home) == ungated[0]
    assert joblib_bytes_to_object(lake.get_bytes("churn_model.pkl")).version == ungated[0]
    assert cli.main(["model", "promote", "--version", champion, "--reason", "roll back after drill"]) == 0
    history = registry.history(lake, "churn")
    assert [entry["version"] for entry in history[-2:]] == [ungated[0], champion]
    assert history[-1]["reason"] == "roll back after drill" and history[-2]["forced"] is True
    assert cli.main(["model", "list"]) == 0
    assert f"* {champion}" in capsys.readouterr().out


def test_segmentation_is_promoted_and_rolled_back_like_the_churn_model(scored_home, capsys):
    lake = _lake(scored_home)
    first = _champion_version(scored_home, "segmentation")
    settings = load_settings()
    execute_job(build_defs(settings), dg.DagsterInstance.ephemeral(), "quarterly_segmentation_job", "2026-04-01")
    (second,) = [entry["version"] for entry in registry.versions(lake, "segmentation") if entry["version"] != first]
    assert second.startswith("2026-04")
    record = registry.record(lake, "segmentation", second)
    assert record["gates_passed"] is True and record["champion_version"] == first
    assert set(record["names"].values()) == {"Road Warriors", "Loyal Regulars", "Dabblers"}
    assert _champion_version(scored_home, "segmentation") == first  # an older quarter is registered, not promoted

    assert cli.main(["model", "promote", "--kind", "segmentation", "--version", second, "--reason", "Q2 drill"]) == 0
    assert _champion_version(scored_home, "segmentation") == second
    assert cli.main(["model", "promote", "--kind", "segmentation", "--version", first, "--reason", "keep Q3"]) == 0
    assert _champion_version(scored_home, "segmentation") == first
    assert joblib_bytes_to_object(lake.get_bytes("segmentation_model.pkl")).version == first
