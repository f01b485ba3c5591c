"""One commit per daily drop: its raw tables become visible together or not at all.

Each ingest run writes every raw table of the drop under its own version (the run id):
``<table>/<drop date>/<version>.parquet``. Nothing reads a version until the run writes the
drop's commit object ``drop_commits/<drop date>.json`` (one ``put``: a file replace or a single
S3 ``put_object``, so it is atomic on a folder and on S3 alike). The commit names the version of
every table and the drop's profile, which the completeness gate of the next drop compares with.

A drop without a commit (never ingested, rejected by a gate, or failed between two table writes)
is invisible; a re-ingested drop replaces the commit, and readers switch to the new version in one
step. Superseded and rejected versions stay in the lake (a rejected drop's quarantine is read
from its version); removing old versions is left to the lake's retention rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from loyalty_assets.domain.lake_keys import DROP_COMMITS_PREFIX, commit_drop_date, commit_key, table_version_key
from loyalty_assets.domain.storage import ObjectStore

DROP_TABLES = ("raw_loyalty_history", "raw_flight_activity", "raw_quarantine")


class CommitError(Exception):
    """A drop cannot be committed (a table version is missing) or its commit object is unreadable."""


@dataclass(frozen=True)
class DropCommit:
    drop_date: str
    version: str
    tables: dict[str, str]  # table -> object key of the committed version
    profile: dict[str, Any]  # the completeness profile (see domain.completeness.DropProfile)


def commit_drop(store: ObjectStore, drop_date: str, version: str, profile: dict[str, Any]) -> DropCommit:
    """Publish the drop's tables written under ``version``; refuse when one of them is missing."""
    tables = {table: table_version_key(table, drop_date, version) for table in DROP_TABLES}
    missing = [store.url(key) for key in tables.values() if not store.exists(key)]
    if missing:
        raise CommitError(
            f"drop {drop_date} version {version} is incomplete, not committed: {', '.join(missing)} missing"
        )
    commit = DropCommit(drop_date=drop_date, version=version, tables=tables, profile=profile)
    store.put_bytes(commit_key(drop_date), json.dumps(commit.__dict__, indent=2, sort_keys=True).encode("utf-8"))
    return commit


def read_commit(store: ObjectStore, drop_date: str) -> DropCommit | None:
    """The drop's commit, or None when the drop is not committed."""
    key = commit_key(drop_date)
    try:
        data = store.get_bytes(key)
    except FileNotFoundError:
        return None
    try:
        return DropCommit(**json.loads(data))
    except (ValueError, TypeError) as error:
        raise CommitError(f"{store.url(key)}: unreadable drop commit ({error})") from error


def accepted_drop_dates(store: ObjectStore) -> list[date]:
    """Every committed (accepted) drop date, oldest first."""
    drop_dates = (commit_drop_date(key) for key in store.list_keys(DROP_COMMITS_PREFIX))
    return sorted(date.fromisoformat(drop_date) for drop_date in drop_dates if drop_date is not None)


def previous_accepted_commit(store: ObjectStore, drop_date: str) -> DropCommit | None:
    """The commit of the latest accepted drop dated before ``drop_date``."""
    earlier = [day for day in accepted_drop_dates(store) if day < date.fromisoformat(drop_date)]
    return read_commit(store, earlier[-1].isoformat()) if earlier else None


def committed_drops(store: ObjectStore, drop_dates: list[str]) -> dict[str, DropCommit]:
    """``{drop date: commit}`` for the dates among ``drop_dates`` that are committed."""
    committed = {day.isoformat() for day in accepted_drop_dates(store)}
    commits = {drop_date: read_commit(store, drop_date) for drop_date in sorted(set(drop_dates) & committed)}
    return {drop_date: commit for drop_date, commit in commits.items() if commit is not None}
