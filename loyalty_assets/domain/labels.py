"""Churn labels on point-in-time features, and the choice of training snapshots.

Label at snapshot ``s`` with horizon ``h`` months: 1 when the member cancels in a month in
``(s, s + h]``. The label is mature only when month ``s + h`` is complete in the drop
(``s + h <= last_complete``); immature snapshots are dropped here, never labelled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loyalty_assets.domain.features import (
    ID_COLUMNS,
    LONGEST_WINDOW_MONTHS,
    cancellation_month_numbers,
    month_number,
    require_columns,
    require_month_start,
    timestamp_month_number,
)

LABEL_COLUMN = "churned"
# Every mature snapshot with a 3-month window (the shortest) trains; longer windows may be truncated.
MIN_HISTORY_MONTHS = 3


def _month_offset(timestamp: pd.Timestamp, months: int) -> pd.Timestamp:
    return timestamp + pd.DateOffset(months=months)


def _snapshot_month_numbers(features: pd.DataFrame) -> np.ndarray:
    snapshot = features["snapshot_month"].dt
    return month_number(snapshot.year.to_numpy(dtype="int64"), snapshot.month.to_numpy(dtype="int64"))


def _cancellation_month_numbers(loyalty: pd.DataFrame, loyalty_numbers: np.ndarray) -> np.ndarray:
    """Cancellation month number per requested member; int64 max when not cancelled."""
    require_columns(loyalty, ("loyalty_number", "cancellation_year", "cancellation_month"), "loyalty")
    members = pd.Index(loyalty["loyalty_number"].to_numpy(dtype="int64"))
    if not members.is_unique:
        raise ValueError("loyalty holds repeated loyalty_number values")
    position = members.get_indexer(loyalty_numbers)
    if (position < 0).any():
        raise ValueError(
            f"{int((position < 0).sum())} feature rows belong to members absent from loyalty, "
            f"e.g. loyalty_number {loyalty_numbers[position < 0][0]}"
        )
    return cancellation_month_numbers(loyalty)[position]


def add_churn_labels(
    features: pd.DataFrame, loyalty: pd.DataFrame, horizon_months: int, last_complete: pd.Timestamp
) -> pd.DataFrame:
    """Keep mature snapshots (``s + horizon <= last_complete``) and add ``churned`` (int64 0/1).

    Raises if a feature row belongs to a member already cancelled at its snapshot: features
    must come from ``build_features``, which keeps eligible members only.
    """
    if horizon_months < 1:
        raise ValueError(f"horizon_months must be at least 1, got {horizon_months}")
    require_columns(features, ID_COLUMNS, "features")
    last_complete_number = timestamp_month_number(require_month_start(last_complete, "last_complete"))
    snapshot = _snapshot_month_numbers(features)
    mature = snapshot + horizon_months <= last_complete_number
    labelled = features.loc[mature].reset_index(drop=True)
    snapshot = snapshot[mature]
    cancellation = _cancellation_month_numbers(loyalty, labelled["loyalty_number"].to_numpy(dtype="int64"))
    already_cancelled = cancellation <= snapshot
    if already_cancelled.any():
        raise ValueError(
            f"{int(already_cancelled.sum())} feature rows belong to members cancelled on or before their "
            f"snapshot, e.g. loyalty_number {labelled['loyalty_number'].to_numpy()[already_cancelled][0]}"
        )
    labelled[LABEL_COLUMN] = (cancellation <= snapshot + horizon_months).astype(np.int64)
    return labelled


def training_snapshots(
    last_complete: pd.Timestamp,
    horizon_months: int,
    lookback_months: int,
    min_history_months: int,
    first_activity_month: pd.Timestamp,
) -> list[pd.Timestamp]:
    """Mature snapshots in the look-back window with at least ``min_history_months`` of history.

    The window is the ``lookback_months`` months ending at the latest mature snapshot
    ``last_complete - horizon_months``; a snapshot also needs ``min_history_months`` complete
    months from ``first_activity_month``. Below ``LONGEST_WINDOW_MONTHS`` the 12-month windows of
    the early snapshots are truncated; the ``window_coverage_24m`` feature says by how much, so
    the model can train on them. Empty when nothing qualifies.
    """
    if horizon_months < 1 or lookback_months < 1:
        raise ValueError(
            f"horizon_months and lookback_months must be at least 1, got {horizon_months} and {lookback_months}"
        )
    if min_history_months < 1:
        raise ValueError(f"min_history_months must be at least 1, got {min_history_months}")
    last_complete = require_month_start(last_complete, "last_complete")
    first_activity_month = require_month_start(first_activity_month, "first_activity_month")
    latest_mature = _month_offset(last_complete, -horizon_months)
    earliest = max(
        _month_offset(latest_mature, -(lookback_months - 1)),
        _month_offset(first_activity_month, min_history_months - 1),
    )
    return list(pd.date_range(earliest, latest_mature, freq="MS"))


def history_start_of(features: pd.DataFrame) -> pd.Timestamp:
    """The first activity month the features were built from (snapshot minus history_months - 1)."""
    require_columns(features, ID_COLUMNS, "features")
    if features.empty:
        raise ValueError("features are empty: no history start to read")
    snapshot = _snapshot_month_numbers(features)
    starts = np.unique(snapshot - features["history_months"].to_numpy(dtype="int64") + 1)
    if starts.size != 1:
        raise ValueError(f"features mix {starts.size} history starts; build them from one drop")
    start = int(starts[0])
    return pd.Timestamp(year=start // 12, month=start % 12 + 1, day=1)


def build_training_set(
    features: pd.DataFrame,
    loyalty: pd.DataFrame,
    *,
    horizon_months: int,
    last_complete: pd.Timestamp,
    lookback_months: int,
    min_history_months: int = MIN_HISTORY_MONTHS,
) -> pd.DataFrame:
    """``features`` rows at ``training_snapshots(...)`` with mature ``churned`` labels.

    Raises when no snapshot qualifies or when ``features`` lacks one of the chosen snapshots.
    """
    snapshots = training_snapshots(
        last_complete, horizon_months, lookback_months, min_history_months, history_start_of(features)
    )
    if not snapshots:
        raise ValueError(
            f"no mature snapshot with {min_history_months} months of history: last complete month "
            f"{pd.Timestamp(last_complete).date()}, horizon {horizon_months} months, first activity month "
            f"{history_start_of(features).date()}"
        )
    absent = pd.DatetimeIndex(snapshots).difference(pd.DatetimeIndex(features["snapshot_month"].unique()))
    if not absent.empty:
        raise ValueError(f"features lack training snapshots {[s.date().isoformat() for s in absent]}")
    chosen = features.loc[features["snapshot_month"].isin(snapshots)]
    return add_churn_labels(chosen, loyalty, horizon_months, last_complete)


def label_counts_by_snapshot(training_set: pd.DataFrame) -> pd.DataFrame:
    """Per snapshot_month: members, churned and positive_rate (churned / members)."""
    require_columns(training_set, ("snapshot_month", LABEL_COLUMN), "training set")
    counts = training_set.groupby("snapshot_month")[LABEL_COLUMN].agg(members="size", churned="sum")
    counts["positive_rate"] = counts["churned"] / counts["members"]
    return counts.reset_index()


def positive_rate(training_set: pd.DataFrame) -> float:
    """Share of labelled rows with ``churned == 1``."""
    require_columns(training_set, (LABEL_COLUMN,), "training set")
    if training_set.empty:
        raise ValueError("training set is empty: positive rate undefined")
    return float(training_set[LABEL_COLUMN].mean())


def _enrollment_and_cancellation(loyalty: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Month numbers of enrollment and cancellation per loyalty row (int64 max when not cancelled)."""
    enrollment = month_number(
        loyalty["enrollment_year"].to_numpy(dtype="int64"), loyalty["enrollment_month"].to_numpy(dtype="int64")
    )
    return enrollment, _cancellation_month_numbers(loyalty, loyalty["loyalty_number"].to_numpy(dtype="int64"))


def eligible_member_counts(loyalty: pd.DataFrame, snapshots) -> pd.Series:
    """Members eligible at each snapshot (enrolled by it, not cancelled by it), indexed by snapshot."""
    enrollment, cancellation = _enrollment_and_cancellation(loyalty)
    months = [pd.Timestamp(snapshot) for snapshot in snapshots]
    return pd.Series(
        [
            int(((enrollment <= timestamp_month_number(s)) & (cancellation > timestamp_month_number(s))).sum())
            for s in months
        ],
        index=pd.DatetimeIndex(months, name="snapshot_month"),
        dtype="int64",
    )


def members_enrolled_on(loyalty: pd.DataFrame, day) -> pd.Series:
    """Loyalty numbers of members enrolled and not cancelled in or before ``day``'s month."""
    enrollment, cancellation = _enrollment_and_cancellation(loyalty)
    month = timestamp_month_number(pd.Timestamp(day))
    return loyalty["loyalty_number"][(enrollment <= month) & (cancellation > month)]
