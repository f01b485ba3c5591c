"""What a champion's page in the UI shows: the promoted version's metrics, gate verdicts and plots."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd

from loyalty_assets.defs.metadata import CHURN_INTERFACE_METRICS, markdown_table, significant
from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import ChurnBundle, SegmentationBundle
from loyalty_assets.domain.churn import evaluation_plot_png
from loyalty_assets.domain.figures import png_markdown
from loyalty_assets.domain.segmentation import profile_table_markdown
from loyalty_assets.domain.storage import ObjectStore

SEGMENTATION_METRICS = ["silhouette", "adjusted_rand_vs_champion", "jaccard_vs_champion"]


def gates_markdown(verdicts: dict[str, dict[str, Any]]) -> str:
    """One row per recorded gate: its name, pass or fail, and its message."""
    rows = [(gate, "pass" if verdict["passed"] else "FAIL", verdict["message"]) for gate, verdict in verdicts.items()]
    if not rows:
        return "No gate verdict recorded for this version."
    return markdown_table(pd.DataFrame(rows, columns=["gate", "verdict", "message"]))


def champion_metadata(store: ObjectStore, bundle: ChurnBundle | SegmentationBundle) -> dict[str, Any]:
    """Metadata of a promoted bundle: out-of-time metrics (rounded), gate verdicts and plots."""
    entry = registry.record(store, bundle.kind, bundle.version)
    verdicts = registry.gate_verdicts(store, bundle.kind, bundle.version)
    metadata: dict[str, Any] = {
        "gates_passed": bool(entry["gates_passed"]),
        "gates": dg.MetadataValue.md(gates_markdown(verdicts)),
    }
    metrics = bundle.record.metrics
    if isinstance(bundle, ChurnBundle):
        metadata.update({key: significant(metrics[key]) for key in CHURN_INTERFACE_METRICS})
        metadata["test_snapshots"] = dg.MetadataValue.json(metrics["test_snapshots"])
        metadata["evaluation_plot"] = dg.MetadataValue.md(
            png_markdown(evaluation_plot_png(bundle.test_scores), "ROC and precision-recall on the test")
        )
    else:
        metadata.update({key: significant(metrics[key]) for key in SEGMENTATION_METRICS if metrics[key] is not None})
        # The record holds the profile with the realised churn rate.
        table = pd.DataFrame(bundle.record.segment_profile).set_index("segment")
        metadata["segment_profile"] = dg.MetadataValue.md(profile_table_markdown(table, bundle.record.churn_basis))
    return metadata
