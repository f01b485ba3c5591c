"""Which drop feeds a coarse partition: the latest accepted drop dated inside its window.

Every drop is a full extract, so one drop is all a monthly, quarterly or weekly partition
needs. The raw inputs are declared with a time-window partition mapping (lineage and
backfills stay right) and loaded lazily, so only the chosen drop is read. Only committed
drops are offered (``defs.resources.storage``): a day whose drop was rejected is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import dagster as dg
import pandas as pd

from loyalty_assets.defs.resources.storage import LAZY_PARTITIONS, PartitionLoader

# A window that reaches past today (the current week or month) maps to drops that do not exist yet.
_WINDOW = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
RAW_DROP_INS = {
    "raw_loyalty_history": dg.AssetIn(metadata=LAZY_PARTITIONS, partition_mapping=_WINDOW),
    "raw_flight_activity": dg.AssetIn(metadata=LAZY_PARTITIONS, partition_mapping=_WINDOW),
}


def latest_drop(
    context: dg.AssetExecutionContext,
    raw_loyalty_history: Mapping[str, PartitionLoader],
    raw_flight_activity: Mapping[str, PartitionLoader],
) -> tuple[date, pd.DataFrame, pd.DataFrame]:
    """The newest accepted drop in the partition's window, both tables at its committed version."""
    common = sorted(set(raw_loyalty_history) & set(raw_flight_activity))
    if not common:
        window = context.partition_time_window
        raise dg.Failure(
            f"no ingested drop dated {window.start.date()} .. {window.end.date()} (exclusive) for partition "
            f"{context.partition_key}: run daily_ingest_job for a day in that window first"
        )
    key = common[-1]
    if raw_loyalty_history[key].version != raw_flight_activity[key].version:
        raise dg.Failure(
            f"drop dt={key} was re-committed while partition {context.partition_key} read it: run it again"
        )
    context.log.info(f"partition {context.partition_key} reads the drop dt={key}")
    return date.fromisoformat(key), raw_loyalty_history[key](), raw_flight_activity[key]()
