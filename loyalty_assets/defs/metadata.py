"""Materialization metadata shared by the assets."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def table_metadata(frame: pd.DataFrame) -> dict[str, dg.MetadataValue]:
    """Row count and column schema in the keys the Dagster UI understands."""
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            dg.TableSchema(
                columns=[dg.TableColumn(name=str(name), type=str(dtype)) for name, dtype in frame.dtypes.items()]
            )
        ),
    }


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return frame.to_markdown(index=False, floatfmt=floatfmt)
