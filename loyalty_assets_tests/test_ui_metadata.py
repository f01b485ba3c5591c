"""What the UI shows: champion pages with metrics, gates and plots; rounded metrics; described
prediction columns; a readable score histogram; the port of ``make dev``."""

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from loyalty_assets.defs.metadata import CHURN_INTERFACE_METRICS, significant, table_metadata
from loyalty_assets.defs.models.churn.assets import CHURN_GATES, churn_model
from loyalty_assets.defs.models.segmentation.assets import SEGMENTATION_GATES, segmentation_model
from loyalty_assets.defs.partitions import monthly_partitions, quarterly_partitions
from loyalty_assets.defs.predictions.columns import PREDICTION_COLUMN_DESCRIPTIONS
from loyalty_assets.defs.resources.storage import LakeModelIOManager, LakeResource
from loyalty_assets.domain import registry
from loyalty_assets.domain import segmentation as seg
from loyalty_assets.domain.bundles import ChurnBundle
from loyalty_assets.domain.churn import run_churn_gates
from loyalty_assets.domain.drift import reference_score_edges, score_distribution
from loyalty_assets.domain.monitoring_report import score_histogram_figure
from loyalty_assets.domain.experiments import EXPERIMENT_COLUMNS
from loyalty_assets.domain.scoring import PREDICTION_COLUMNS, RELATIVE_RISK_COLUMNS
from loyalty_assets.domain.storage import LocalStore
# Fixtures: a trained churn candidate and its bundle, a planted segmentation's bundle.
from loyalty_assets_tests.test_bundles import candidate, churn, population, segmentation, training_set  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
PNG_MARKDOWN = "](data:image/png;base64,"


def lake_resources(root: Path) -> dict:
    lake = LakeResource(uri=str(root), s3=S3Resource())
    return {"lake": lake, "model_io_manager": LakeModelIOManager(lake=lake)}


def register_churn(store: LocalStore, bundle: ChurnBundle, version: str, verdicts: dict[str, tuple[bool, str]]) -> None:
    registry.register_bundle(store, replace(bundle, version=version))
    for gate, (passed, message) in verdicts.items():
        registry.record_gate(store, "churn", version, gate, passed, message)


def promote_version(root: Path, champion: dg.AssetsDefinition, candidate_asset: str, partitions, config: dict) -> dict:
    """Materialize a champion asset from a registered version; its materialization metadata values."""
    upstream = dg.AssetSpec(candidate_asset, partitions_def=partitions).with_io_manager_key("model_io_manager")
    result = dg.materialize(
        [upstream, champion],
        selection=[champion.key.to_user_string()],
        resources=lake_resources(root),
        run_config={"ops": {champion.key.to_user_string(): {"config": config}}},
    )
    (event,) = result.get_asset_materialization_events()
    return {key: value.value for key, value in event.materialization.metadata.items()}


def churn_verdicts(candidate) -> dict[str, tuple[bool, str]]:
    verdicts = run_churn_gates(candidate.metrics, champion_difference=None)
    verdicts["recall_at_threshold"] = verdicts.pop("recall")
    verdicts["no_leakage"] = (True, "no leakage found")
    return verdicts


def test_significant_keeps_four_figures_and_leaves_other_values():
    assert significant(0.812345678) == 0.8123
    assert significant(np.float64(0.000123456)) == 0.0001235
    assert significant(1234.5678) == 1235.0
    assert significant(12) == 12 and significant(True) is True and significant("0.123456") == "0.123456"
    assert np.isnan(significant(float("nan")))


def test_churn_champion_page_shows_rounded_out_of_time_metrics_gates_and_plot(tmp_path, candidate, churn):
    store = LocalStore(tmp_path)
    verdicts = churn_verdicts(candidate)
    assert set(verdicts) == set(CHURN_GATES) and all(passed for passed, _ in verdicts.values())
    register_churn(store, churn, "2024-01.aaaa0001", verdicts)
    registry.mark_gates_passed(store, "churn", "2024-01.aaaa0001", CHURN_GATES)

    metadata = promote_version(
        tmp_path, churn_model, "churn_model_candidate", monthly_partitions, {"version": "2024-01.aaaa0001"}
    )

    metrics = candidate.metrics
    for key in CHURN_INTERFACE_METRICS:
        assert metadata[key] == pytest.approx(metrics[key], rel=5e-4), key
        assert metadata[key] == float(f"{metrics[key]:.4g}"), key
    assert metadata["roc_auc"] != metrics["roc_auc"]  # the raw value has more figures than the page shows
    assert metadata["test_snapshots"] == metrics["test_snapshots"]
    assert metadata["gates_passed"] is True
    gate_rows = [line for line in metadata["gates"].splitlines() if line.startswith("| ") and "verdict" not in line]
    assert sorted(row.split("|")[1].strip() for row in gate_rows) == sorted(CHURN_GATES)
    assert all(row.split("|")[2].strip() == "pass" for row in gate_rows)
    assert verdicts["roc_auc_floor"][1] in metadata["gates"]
    assert metadata["evaluation_plot"].startswith("![ROC and precision-recall")
    assert PNG_MARKDOWN in metadata["evaluation_plot"]


def test_a_forced_champion_shows_its_failed_gate(tmp_path, candidate, churn):
    store = LocalStore(tmp_path)
    verdicts = {**churn_verdicts(candidate), "beats_baseline": (False, "test ROC-AUC below the baseline")}
    register_churn(store, churn, "2024-01.bbbb0002", verdicts)

    metadata = promote_version(
        tmp_path,
        churn_model,
        "churn_model_candidate",
        monthly_partitions,
        {"version": "2024-01.bbbb0002", "force": True, "reason": "incident 42"},
    )

    assert metadata["gates_passed"] is False
    assert "| beats_baseline" in metadata["gates"] and "| FAIL " in metadata["gates"]
    assert "test ROC-AUC below the baseline" in metadata["gates"]


def test_segmentation_champion_page_shows_profile_and_gates(tmp_path, segmentation):
    store = LocalStore(tmp_path)
    version = "2024-01.cccc0003"
    registry.register_bundle(store, replace(segmentation, version=version))
    for gate, result in seg.evaluate_gates(segmentation.model, None, None).items():
        registry.record_gate(store, "segmentation", version, gate, result.passed, result.message)
    registry.mark_gates_passed(store, "segmentation", version, SEGMENTATION_GATES)

    metadata = promote_version(
        tmp_path, segmentation_model, "segmentation_model_candidate", quarterly_partitions, {"version": version}
    )

    assert metadata["silhouette"] == float(f"{segmentation.model.silhouette:.4g}")
    assert "adjusted_rand_vs_champion" not in metadata  # first segmentation: nothing to agree with
    for name in seg.SEGMENT_NAMES:
        assert f"| {name}" in metadata["segment_profile"]
    assert metadata["gates_passed"] is True
    assert all(f"| {gate}" in metadata["gates"] for gate in SEGMENTATION_GATES)


def test_every_prediction_column_has_a_description_in_the_column_schema():
    columns = [*PREDICTION_COLUMNS, *EXPERIMENT_COLUMNS, *RELATIVE_RISK_COLUMNS]
    assert list(PREDICTION_COLUMN_DESCRIPTIONS) == columns
    frame = pd.DataFrame({column: pd.Series(dtype="object") for column in columns})

    schema = table_metadata(frame, PREDICTION_COLUMN_DESCRIPTIONS)["dagster/column_schema"].value

    assert [column.name for column in schema.columns] == columns
    assert all(len(column.description) > 20 for column in schema.columns)


def test_score_histogram_gives_every_reference_quantile_bin_the_same_width():
    # A churn base rate of a few percent: the reference's quantile edges crowd below 0.2.
    scores = np.random.default_rng(0).beta(0.6, 12, 15000)
    edges = reference_score_edges(scores)
    shares = score_distribution(scores, ["Low"] * scores.size, edges)["score_shares"]

    figure = score_histogram_figure(edges, shares, shares)
    figure.canvas.draw()

    (axes,) = figure.axes
    widths = [bar.get_window_extent().width for bar in axes.patches]
    assert len(widths) == len(edges) - 1 and edges[-2] < 0.2
    assert max(widths) == pytest.approx(min(widths), rel=1e-6)  # the first bin is as wide as the last
    assert [label.get_text() for label in axes.get_xticklabels()] == [f"{edge:.2g}" for edge in edges]


@pytest.mark.parametrize(("arguments", "port"), [([], "3000"), (["DAGSTER_PORT=3456"], "3456")])
def test_make_dev_takes_its_port_from_dagster_port(arguments, port):
    environment = {name: value for name, value in os.environ.items() if name != "DAGSTER_PORT"}
    plan = subprocess.run(
        ["make", "-n", "dev", *arguments], cwd=REPO, env=environment, capture_output=True, text=True, check=True
    ).stdout

    (command,) = [line for line in plan.splitlines() if "dagster dev" in line]
    assert command.endswith(f"-h 127.0.0.1 -p {port}")
