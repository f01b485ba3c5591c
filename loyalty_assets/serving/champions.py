"""What the online API serves, loaded from the lake and swapped whole when the registry changes.

- ``Champions``: the promoted churn and segmentation versions (the last entries of the registry's
  promotion histories), the churn model compiled and checked (``compiled``), the ``ChurnScorer``
  the weekly batch also scores with, and the one-member fast path (``one_member``) when it
  reproduced the batch rows on the validation rows.
- ``ScoredWeek``: the latest ``churn_predictions`` week, for member look-ups.
- ``ServingState`` holds one reference to each. ``refresh`` builds a new object completely, then
  replaces the reference in one assignment; a request reads the reference once, so it never sees a
  half-loaded model and always names the versions that served it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import ChurnRecord, SegmentationBundle
from loyalty_assets.domain.lake_keys import PARQUET_SUFFIX, asset_folder, asset_object_key, asset_partition
from loyalty_assets.domain.scoring import ChurnScorer, load_action_table
from loyalty_assets.domain.segmentation import SegmentationModel
from loyalty_assets.domain.storage import ObjectStore, parquet_bytes_to_dataframe
from loyalty_assets.serving.compiled import ServingModel, UnsupportedModel, compile_churn_model
from loyalty_assets.serving.one_member import CHECK_ROWS, MemberScorer, current_week

logger = logging.getLogger("loyalty_assets.serving")
PREDICTIONS_ASSET = "churn_predictions"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def champion_versions(store: ObjectStore) -> tuple[str, str]:
    """(churn, segmentation) versions last promoted, from the registry's promotion histories."""
    versions = []
    for kind in ("churn", "segmentation"):
        history = registry.history(store, kind)
        if not history:
            raise registry.RegistryError(f"no {kind} champion has been promoted yet")
        versions.append(history[-1]["version"])
    return versions[0], versions[1]


def validation_rows(store: ObjectStore, record: ChurnRecord) -> pd.DataFrame | None:
    """The churn version's validation rows from its training set in the lake, if it is still there."""
    key = asset_object_key("churn_training_set", record.source_partition, PARQUET_SUFFIX)
    if not store.exists(key):
        return None
    training_set = parquet_bytes_to_dataframe(store.get_bytes(key))
    snapshots = pd.to_datetime(record.training_window["validation"])
    return training_set[training_set["snapshot_month"].isin(snapshots)].reset_index(drop=True)


@dataclass(frozen=True)
class Champions:
    churn_version: str
    segmentation_version: str
    scorer: ChurnScorer
    segmentation: SegmentationModel
    compiled: ServingModel
    member_scorer: MemberScorer | None  # None: the batch code scores each request
    member_scorer_note: str
    churn_record: dict
    segmentation_record: dict
    loaded_at: str
    load_seconds: float

    def describe(self) -> dict[str, Any]:
        churn_metrics = {
            key: value for key, value in self.churn_record.get("metrics", {}).items() if not isinstance(value, list)
        }
        return {
            "churn_model_version": self.churn_version,
            "segmentation_model_version": self.segmentation_version,
            "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
            "churn": {
                "source_partition": self.churn_record.get("source_partition"),
                "gates_passed": self.churn_record.get("gates_passed"),
                "metrics": churn_metrics,
                "tier_cutoffs": self.scorer.cutoffs,
                "inference": self.compiled.describe(),
                "one_member_path": {"enabled": self.member_scorer is not None, "note": self.member_scorer_note},
            },
            "segmentation": {
                "source_partition": self.segmentation_record.get("source_partition"),
                "gates_passed": self.segmentation_record.get("gates_passed"),
                "silhouette": float(self.segmentation.silhouette),
            },
        }


def load_champions(store: ObjectStore, churn_version: str, segmentation_version: str) -> Champions:
    """Both champions ready to serve: compiled and checked against scikit-learn."""
    started = time.perf_counter()
    churn = registry.load_bundle(store, "churn", churn_version)
    segmentation = registry.load_bundle(store, "segmentation", segmentation_version)
    check_rows = validation_rows(store, churn.record)
    compiled = compile_churn_model(churn.model, churn.feature_columns, check_rows)
    action_table = load_action_table()
    scorer = ChurnScorer.from_bundle(churn, action_table, probability=compiled.probability, n_jobs=1)
    member_scorer, note = _member_scorer(scorer, segmentation, segmentation_version, compiled, action_table, check_rows)
    return Champions(
        churn_version=churn_version,
        segmentation_version=segmentation_version,
        scorer=scorer,
        segmentation=segmentation.model,
        compiled=compiled,
        member_scorer=member_scorer,
        member_scorer_note=note,
        churn_record=registry.record(store, "churn", churn_version),
        segmentation_record=registry.record(store, "segmentation", segmentation_version),
        loaded_at=_now(),
        load_seconds=time.perf_counter() - started,
    )


def _member_scorer(
    scorer: ChurnScorer,
    segmentation: SegmentationBundle,
    segmentation_version: str,
    compiled: ServingModel,
    action_table: pd.DataFrame,
    check_rows: pd.DataFrame | None,
) -> tuple[MemberScorer | None, str]:
    """The fast path when it gives the batch's rows on the last validation snapshot, else None and why."""
    if check_rows is None or check_rows.empty:
        return None, "no validation rows to check the one-member path against; the batch code scores"
    try:
        member_scorer = MemberScorer(scorer, segmentation.model, segmentation_version, compiled, action_table)
    except (UnsupportedModel, TypeError, ValueError) as error:  # a champion the fast path does not know
        return None, f"{type(error).__name__}: {error}; the batch code scores"
    last_snapshot = check_rows[check_rows["snapshot_month"] == check_rows["snapshot_month"].max()]
    differences = member_scorer.check_against_batch(last_snapshot, current_week())
    if differences:
        logger.error("one-member path differs from the batch: %s", "; ".join(differences))
        return None, f"differs from the batch ({'; '.join(differences[:3])}); the batch code scores"
    return member_scorer, f"equal to the batch rows on {min(len(last_snapshot), CHECK_ROWS)} validation rows"


@dataclass(frozen=True)
class ScoredWeek:
    """One ``churn_predictions`` week as sorted column arrays, for look-ups by binary search."""

    week: str
    loyalty_numbers: np.ndarray
    columns: dict[str, np.ndarray]
    loaded_at: str

    @classmethod
    def from_predictions(cls, week: str, predictions: pd.DataFrame) -> ScoredWeek:
        ordered = predictions.sort_values("loyalty_number", kind="stable").reset_index(drop=True)
        columns = {name: ordered[name].to_numpy(dtype=object) for name in ordered.columns}
        return cls(week, ordered["loyalty_number"].to_numpy(dtype=np.int64), columns, _now())

    def row(self, loyalty_number: int) -> dict[str, Any] | None:
        position = int(np.searchsorted(self.loyalty_numbers, loyalty_number))
        if position == len(self.loyalty_numbers) or self.loyalty_numbers[position] != loyalty_number:
            return None
        return {name: values[position] for name, values in self.columns.items()}


def latest_week(store: ObjectStore) -> str | None:
    keys = store.list_keys(asset_folder(PREDICTIONS_ASSET))
    weeks = [week for key in keys if (week := asset_partition(key, PREDICTIONS_ASSET, PARQUET_SUFFIX))]
    return max(weeks, default=None)


class ServingState:
    """The references requests read, and the refresh that replaces them."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.champions: Champions | None = None
        self.week: ScoredWeek | None = None
        self.last_refresh: str | None = None
        self.last_error: str | None = None
        self._refresh_lock = threading.Lock()

    def refresh(self) -> None:
        """Load what changed in the registry or the lake; keep serving the old objects if that fails."""
        with self._refresh_lock:
            try:
                versions = champion_versions(self.store)
                current = self.champions
                if current is None or (current.churn_version, current.segmentation_version) != versions:
                    loaded = load_champions(self.store, *versions)
                    self.champions = loaded
                    logger.info(
                        "serving churn %s (%s) and segmentation %s, loaded in %.2f s",
                        loaded.churn_version,
                        loaded.compiled.engine,
                        loaded.segmentation_version,
                        loaded.load_seconds,
                    )
                week = latest_week(self.store)
                if week is not None and (self.week is None or self.week.week != week):
                    key = asset_object_key(PREDICTIONS_ASSET, week, PARQUET_SUFFIX)
                    predictions = parquet_bytes_to_dataframe(self.store.get_bytes(key))
                    self.week = ScoredWeek.from_predictions(week, predictions)
                    logger.info("serving member look-ups from week %s (%d members)", week, len(predictions))
                self.last_error = None
            except Exception as error:  # any failure keeps the previous champions serving; reported in /v1/model
                self.last_error = f"{type(error).__name__}: {error}"
                logger.error("refresh failed, previous champions keep serving: %s", self.last_error)
            self.last_refresh = _now()

    def run_refresh_loop(self, interval_seconds: float, stop: threading.Event) -> None:
        while not stop.wait(interval_seconds):
            self.refresh()
