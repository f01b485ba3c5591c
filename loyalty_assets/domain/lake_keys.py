"""Every object key the project reads or writes: the lake, the landing zone, the AppFlow source, the outbox.

Keys are relative to the root of their store (a folder or an ``s3://`` prefix). They are the stored
layout: a changed key hides what earlier runs wrote, so each is spelled out here and nowhere else.

Lake:

- ``<asset>/<partition><suffix>`` (``<asset><suffix>`` unpartitioned): one object per asset
  partition, ``.parquet`` tables and ``.pkl`` models;
- ``<table>/<drop date>/<version>.parquet``: one version of a raw drop table, visible once
  ``drop_commits/<drop date>.json`` names it;
- ``registry/<kind>/<version>.pkl`` / ``.json`` / ``.gates/<gate>.json`` / ``.reference.json``:
  a model version, its record, its gate verdicts and (churn) its drift reference;
  ``registry/<kind>/history.json`` the promotion log;
- ``exports/churn_predictions/week=<week>/churn_predictions.<csv|parquet>`` and
  ``exports/monitoring/week=<week>/monitoring_report.html``: the weekly files people pick up;
- ``sent_messages/<name>.json``: the record that a message went out.

Landing: ``<table>/dt=<drop date>/<files>`` with an optional ``_manifest.json``. AppFlow source:
``churn_scores/week=<week>/churn_scores.csv``. Outbox: ``marketing_<week>.eml``.
"""

from __future__ import annotations

PARQUET_SUFFIX = ".parquet"
MODEL_SUFFIX = ".pkl"
DROP_COMMITS_PREFIX = "drop_commits"
MANIFEST_NAME = "_manifest.json"
RECORD_SUFFIX = ".json"
GATES_SUFFIX = ".gates"
_JSON = ".json"


# --- lake: assets and drops ------------------------------------------------------------------------


def asset_folder(asset: str) -> str:
    """The prefix of every partition object of ``asset``."""
    return asset


def asset_object_key(asset: str, partition: str | None, suffix: str) -> str:
    return f"{asset}/{partition}{suffix}" if partition else f"{asset}{suffix}"


def asset_partition(key: str, asset: str, suffix: str) -> str | None:
    """The partition of ``asset`` whose object is ``key``, or None for any other key."""
    partition = key.removeprefix(f"{asset}/")
    if partition == key or not partition.endswith(suffix) or "/" in partition:
        return None
    return partition.removesuffix(suffix) or None


def table_version_key(table: str, drop_date: str, version: str) -> str:
    return f"{table}/{drop_date}/{version}{PARQUET_SUFFIX}"


def commit_key(drop_date: str) -> str:
    return f"{DROP_COMMITS_PREFIX}/{drop_date}{_JSON}"


def commit_drop_date(key: str) -> str | None:
    """The drop date of a commit key listed under ``DROP_COMMITS_PREFIX``, or None for another key."""
    name = key.removeprefix(f"{DROP_COMMITS_PREFIX}/")
    return name.removesuffix(_JSON) if name.endswith(_JSON) else None


# --- lake: the model registry ------------------------------------------------------------------------


def registry_folder(kind: str) -> str:
    return f"registry/{kind}"


def registry_key(kind: str, version: str, suffix: str) -> str:
    """``registry/<kind>/<version><suffix>`` (``MODEL_SUFFIX``, ``RECORD_SUFFIX``, ``GATES_SUFFIX``);
    the caller validates ``kind`` and ``version``."""
    return f"{registry_folder(kind)}/{version}{suffix}"


def is_registry_record(key: str) -> bool:
    """Whether a key listed under ``registry_folder`` is a version's record."""
    return key.count("/") == 2 and key.endswith(_JSON) and not key.endswith(f"/history{_JSON}")


def promotion_history_key(kind: str) -> str:
    return f"{registry_folder(kind)}/history{_JSON}"


def gate_verdict_key(gates_folder: str, gate: str) -> str:
    """One gate's verdict below a version's ``registry_key(kind, version, GATES_SUFFIX)``."""
    return f"{gates_folder}/{gate}{_JSON}"


def gate_of_verdict(key: str) -> str:
    return key.rsplit("/", 1)[1].removesuffix(_JSON)


def drift_reference_key(version: str) -> str:
    """Where a reference computed after promotion is stored: beside the churn registry version."""
    return registry_key("churn", version, ".reference.json")


# --- lake: exports and records -----------------------------------------------------------------------


def predictions_export_key(week: str, suffix: str) -> str:
    """``exports/churn_predictions/week=YYYY-MM-DD/churn_predictions.<suffix>`` (csv or parquet)."""
    return f"exports/churn_predictions/week={week}/churn_predictions.{suffix}"


def monitoring_report_key(week: str) -> str:
    """``exports/monitoring/week=YYYY-MM-DD/monitoring_report.html``, beside the week's predictions export."""
    return f"exports/monitoring/week={week}/monitoring_report.html"


def sent_marker_key(name: str) -> str:
    """``sent_messages/<name>.json``: the record that message ``name`` (e.g. ``marketing_2024-01-08``) went out."""
    return f"sent_messages/{name}{_JSON}"


# --- landing, AppFlow source, outbox -----------------------------------------------------------------


def drop_folder(table: str, drop_date: str) -> str:
    """``<table>/dt=YYYY-MM-DD``: one table's files of one drop."""
    return f"{table}/dt={drop_date}"


def drop_file_key(table: str, drop_date: str, file_name: str) -> str:
    return f"{drop_folder(table, drop_date)}/{file_name}"


def manifest_key(folder: str) -> str:
    return f"{folder}/{MANIFEST_NAME}"


def drop_date_of(key: str) -> str | None:
    """The ``dt=`` date of a landing key ``<table>/dt=<date>/<file>``, or None for another key."""
    parts = key.split("/")
    if len(parts) < 3 or not parts[1].startswith("dt="):
        return None
    return parts[1].removeprefix("dt=")


def appflow_source_key(week: str) -> str:
    """``churn_scores/week=YYYY-MM-DD/churn_scores.csv`` below the AppFlow source location."""
    return f"churn_scores/week={week}/churn_scores.csv"


def marketing_message_name(week: str) -> str:
    """The name of the week's marketing e-mail (its sent marker and its outbox file)."""
    return f"marketing_{week}"


def outbox_key(name: str) -> str:
    return f"{name}.eml"
