"""Materialization metadata shared by the assets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

DISPLAY_DIGITS = 4
"""Significant figures of the floats shown in the UI."""

CHURN_INTERFACE_METRICS = [
    "roc_auc",
    "pr_auc",
    "recall",
    "precision",
    "flagged_share",
    "threshold",
    "brier",
    "baseline_roc_auc",
    "n_train",
    "n_test",
]
"""Out-of-time metric keys of churn model materializations (docs: the public interface)."""


def table_metadata(frame: pd.DataFrame, descriptions: Mapping[str, str] | None = None) -> dict[str, dg.MetadataValue]:
    """Row count and column schema (with the given column descriptions) in the keys the Dagster UI understands."""
    descriptions = descriptions or {}
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            dg.TableSchema(
                columns=[
                    dg.TableColumn(name=str(name), type=str(dtype), description=descriptions.get(str(name)))
                    for name, dtype in frame.dtypes.items()
                ]
            )
        ),
    }


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return frame.to_markdown(index=False, floatfmt=floatfmt)


def significant(value: Any, digits: int = DISPLAY_DIGITS) -> Any:
    """A finite float rounded to ``digits`` significant figures for display; any other value unchanged."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return float(f"{value:.{digits}g}")
    return value
