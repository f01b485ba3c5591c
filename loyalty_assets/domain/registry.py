"""A model registry in the lake: every version kept, promotions logged with their reason.

Layout below the lake root, per kind (``churn`` or ``segmentation``):
``registry/<kind>/<version>.pkl`` the model bundle (joblib), ``registry/<kind>/<version>.json``
its record, and ``registry/<kind>/history.json`` the promotion log, newest last. The champion is
the last version in the log.

Automatic promotion only moves forward in training-data time: a candidate trained on older data
than the champion's is registered but not promoted; moving back is a manual, recorded promotion.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from loyalty_assets.domain import lake_keys
from loyalty_assets.domain.bundles import ChurnBundle, SegmentationBundle, checked_bundle
from loyalty_assets.domain.storage import (
    ObjectStore,
    joblib_bytes_to_object,
    object_to_joblib_bytes,
)

KINDS = ("churn", "segmentation")
# The shape of what bundles.make_version produces (year-month, then 8 hex digits of the digest), loose
# enough for hand-made ids: no separator or dot that could reach outside the registry folder.
VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}\.[0-9a-z]{1,32}$")


class RegistryError(ValueError):
    """A registry request that cannot be honoured (unknown version, ungated promotion...)."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")


def _check_version(version: str) -> None:
    """Refuse anything but a version id before a registry key is built from it."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise RegistryError(
            f"{version!r} is not a model version: expected YYYY-MM.<lower-case letters and digits>, as `loyalty-assets model list` shows"
        )


def _version_key(kind: str, version: str, suffix: str) -> str:
    _check_kind(kind)
    _check_version(version)
    return lake_keys.registry_key(kind, version, suffix)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def register(store: ObjectStore, kind: str, version: str, bundle: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Store a candidate version and its record (gates not yet passed)."""
    full_record = {**record, "kind": kind, "version": version, "registered_at": _now(), "gates_passed": False}
    for stale in store.list_keys(_version_key(kind, version, lake_keys.GATES_SUFFIX)):
        store.delete(stale)
    store.put_bytes(_version_key(kind, version, lake_keys.MODEL_SUFFIX), object_to_joblib_bytes(bundle))
    _put_record(store, kind, version, full_record)
    return full_record


def register_bundle(store: ObjectStore, bundle: ChurnBundle | SegmentationBundle) -> dict[str, Any]:
    return register(store, bundle.kind, bundle.version, bundle, bundle.record.to_json())


def _put_record(store: ObjectStore, kind: str, version: str, full_record: dict[str, Any]) -> None:
    key = _version_key(kind, version, lake_keys.RECORD_SUFFIX)
    store.put_bytes(key, json.dumps(full_record, indent=2, default=str).encode())


def record(store: ObjectStore, kind: str, version: str) -> dict[str, Any]:
    key = _version_key(kind, version, lake_keys.RECORD_SUFFIX)
    try:
        return json.loads(store.get_bytes(key))
    except FileNotFoundError as error:
        raise RegistryError(f"no {kind} model version {version!r} in the registry") from error


def load_bundle(store: ObjectStore, kind: str, version: str) -> ChurnBundle | SegmentationBundle:
    record(store, kind, version)
    key = _version_key(kind, version, lake_keys.MODEL_SUFFIX)
    return checked_bundle(joblib_bytes_to_object(store.get_bytes(key)), store.url(key), kind)


def versions(store: ObjectStore, kind: str) -> list[dict[str, Any]]:
    _check_kind(kind)
    # A drift reference computed later (``<version>.reference.json``) sits beside the records.
    keys = [
        key
        for key in store.list_keys(lake_keys.registry_folder(kind))
        if lake_keys.is_registry_record(key) and VERSION_PATTERN.fullmatch(key.rsplit("/", 1)[1].removesuffix(".json"))
    ]
    return sorted((json.loads(store.get_bytes(key)) for key in keys), key=lambda item: item["registered_at"])


def history(store: ObjectStore, kind: str) -> list[dict[str, Any]]:
    _check_kind(kind)
    key = lake_keys.promotion_history_key(kind)
    return json.loads(store.get_bytes(key)) if store.exists(key) else []


def record_gate(store: ObjectStore, kind: str, version: str, gate: str, passed: bool, message: str) -> None:
    """One object per gate, so gates evaluated in parallel steps never overwrite each other."""
    record(store, kind, version)
    verdict = {"gate": gate, "passed": bool(passed), "message": message, "at": _now()}
    gate_key = lake_keys.gate_verdict_key(_version_key(kind, version, lake_keys.GATES_SUFFIX), gate)
    store.put_bytes(gate_key, json.dumps(verdict).encode())


def gate_verdicts(store: ObjectStore, kind: str, version: str) -> dict[str, dict[str, Any]]:
    keys = store.list_keys(_version_key(kind, version, lake_keys.GATES_SUFFIX))
    return {lake_keys.gate_of_verdict(key): json.loads(store.get_bytes(key)) for key in keys}


def mark_gates_passed(store: ObjectStore, kind: str, version: str, required_gates: list[str]) -> dict[str, Any]:
    """Record that the version passed every required gate; refuse if one is missing or failed."""
    verdicts = gate_verdicts(store, kind, version)
    missing = [gate for gate in required_gates if gate not in verdicts]
    failed = [gate for gate in required_gates if gate in verdicts and not verdicts[gate]["passed"]]
    if missing or failed:
        raise RegistryError(
            f"{kind} version {version} cannot be promoted: gates failed {failed or 'none'}, "
            f"not evaluated {missing or 'none'}"
        )
    updated = {**record(store, kind, version), "gates_passed": True, "gates": verdicts}
    _put_record(store, kind, version, updated)
    return updated


def champion_version(store: ObjectStore, kind: str) -> str | None:
    entries = history(store, kind)
    return entries[-1]["version"] if entries else None


def training_data_time(entry: dict[str, Any]) -> tuple[str, str]:
    """How recent a version's training data is: its source partition, then its source drop where recorded.

    Each partition reads the latest drop in its window, so partitions order the data; the drop
    breaks ties within one partition (segmentation records it).
    """
    return entry["source_partition"], entry.get("source_drop") or ""


def trained_on_older_data(candidate: dict[str, Any], champion: dict[str, Any]) -> bool:
    return training_data_time(candidate) < training_data_time(champion)


def repromotion_refusal(store: ObjectStore, kind: str, version: str) -> str | None:
    """Set when ``version`` already is the champion: promoting it again would change nothing."""
    if champion_version(store, kind) == version:
        return f"{kind} version {version} is already the champion: nothing changed"
    return None


def automatic_promotion_refusal(store: ObjectStore, kind: str, version: str) -> str | None:
    """Why the gated ``version`` does not replace the champion automatically, or None when it does."""
    champion = champion_version(store, kind)
    if champion is None:
        return None
    if champion == version:
        return repromotion_refusal(store, kind, version)
    candidate, current = record(store, kind, version), record(store, kind, champion)
    if not trained_on_older_data(candidate, current):
        return None
    return (
        f"{kind} version {version} (partition {candidate['source_partition']}) was trained on older data than "
        f"the champion {champion} (partition {current['source_partition']}): registered, not promoted; "
        f"to move back run `loyalty-assets model promote --kind {kind} --version {version} --reason ...`"
    )


def check_promotable(store: ObjectStore, kind: str, version: str, *, force: bool, reason: str | None) -> dict[str, Any]:
    """The version's record, if it may become champion: gated, or forced with a reason."""
    entry = record(store, kind, version)
    if not entry.get("gates_passed"):
        if not force:
            raise RegistryError(
                f"{kind} version {version} never passed its gates; use --force with --reason to promote it anyway"
            )
        if not reason:
            raise RegistryError("a forced promotion needs a reason")
    return entry


def log_promotion(
    store: ObjectStore, kind: str, version: str, *, reason: str, forced: bool, run_id: str | None
) -> list[dict[str, Any]]:
    """Append the promotion to the log; the champion's own version adds no entry."""
    _check_version(version)
    entries = history(store, kind)
    previous = entries[-1]["version"] if entries else None
    if previous == version:
        return entries
    entries.append(
        {"version": version, "previous": previous, "reason": reason, "forced": forced, "run_id": run_id, "at": _now()}
    )
    store.put_bytes(lake_keys.promotion_history_key(kind), json.dumps(entries, indent=2).encode())
    return entries
