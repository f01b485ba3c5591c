"""Is a daily drop complete? Signals that a truncated or partly delivered extract cannot hide.

A drop is a full extract (data contract, snapshot semantics): every member, and every activity
month up to the drop's own month, which is month-to-date. Three signals, each a list of problems
(empty = passed):

- **Last complete month** (``last_complete_month_problems``): the month before the drop's month
  must be there for (nearly) every member who flew in the month before it. Extracts are written
  month after month (the real file too), so a file cut short loses its last months first. The
  real format has a row per member and month (zeros included) and nobody flies after cancelling,
  so honest drops miss nobody; the tolerance (default 1 %) absorbs corrections.
- **Row counts** (``row_count_problems``): the rows read from each table's files may fall at most
  a small share (default 1 %) below the previous accepted drop: a full extract only grows, apart
  from small corrections. Growth is not bounded: an honest extract grows by a month of activity
  and the month's enrolments per month since the previous accepted drop, whatever the gap.
- **Manifest** (``manifest_problems``): when the drop folder holds ``_manifest.json`` (the format
  is ``manifest_bytes``'s), it must match exactly: the same data files, each file's sha256, and
  the table's data rows (header excluded) summed over its files equal to the rows read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

MANIFEST_FORMAT = "loyalty-drop-manifest/1"


@dataclass(frozen=True)
class DropProfile:
    """What the next drop's completeness gate compares with; stored in the drop's commit."""

    loyalty_rows: int  # data rows read from the loyalty-history files
    activity_rows: int  # data rows read from the flight-activity files
    members: int  # members accepted into raw_loyalty_history

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DropProfile:
        return cls(**{name: int(values[name]) for name in ("loyalty_rows", "activity_rows", "members")})


def _month_label(index: int) -> str:
    return f"{index // 12}-{index % 12 + 1:02d}"


def last_complete_month_problems(
    activity: pd.DataFrame, drop_date: date, max_missing_share: float
) -> tuple[list[str], dict[str, Any]]:
    """Members who flew in the month before the last complete month and have no row in the latter.

    ``activity`` follows the raw_flight_activity schema. Passes when the drop holds no month
    before its last complete one (a programme's first month). Returns the problems and metadata.
    """
    last_complete = drop_date.year * 12 + drop_date.month - 2
    months = activity["year"].to_numpy() * 12 + activity["month"].to_numpy() - 1
    members = activity["loyalty_number"].to_numpy()
    active_before = np.unique(members[(months == last_complete - 1) & (activity["total_flights"].to_numpy() > 0)])
    present = np.isin(active_before, members[months == last_complete])
    missing = int((~present).sum())
    share = missing / len(active_before) if len(active_before) else 0.0
    metadata = {
        "last_complete_month": _month_label(last_complete),
        "members_active_month_before": len(active_before),
        "missing_in_last_complete_month": missing,
        "missing_share": share,
        "max_missing_share": max_missing_share,
    }
    label = _month_label(last_complete)
    if (months < last_complete).any() and not (months == last_complete).any():
        return [f"the last complete month {label} has no activity rows: the extract looks truncated"], metadata
    if share > max_missing_share:
        return [
            f"{missing} of {len(active_before)} members who flew in {_month_label(last_complete - 1)} "
            f"({share:.2%}) have no row in the last complete month {label} (limit {max_missing_share:.2%}): "
            "the extract looks truncated"
        ], metadata
    return [], metadata


def row_count_problems(
    what: str, rows: int, previous_rows: int | None, previous_drop: str | None, max_shrink_share: float
) -> list[str]:
    """``rows`` may fall at most ``max_shrink_share`` below the previous accepted drop's count."""
    if previous_rows is None or rows >= previous_rows * (1 - max_shrink_share):
        return []
    return [
        f"{rows:,} {what} rows, {1 - rows / previous_rows:.2%} fewer than the {previous_rows:,} of the previous "
        f"accepted drop dt={previous_drop} (limit {max_shrink_share:.2%}): a full extract only grows"
    ]


def file_name(path: str) -> str:
    """The last part of a landing path or URL (manifests name files without their folder)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(files: dict[str, tuple[bytes, int]]) -> bytes:
    """The manifest of one drop folder: ``{file name: (file bytes, data rows)}``.

    ``{"format": "loyalty-drop-manifest/1", "files": [{"name", "rows", "sha256"}, ...]}``, where
    ``rows`` counts data rows (header excluded; for gzip, rows of the decompressed CSV) and
    ``sha256`` is the hex digest of the file's bytes as landed.
    """
    entries = [
        {"name": name, "rows": rows, "sha256": sha256_hex(data)} for name, (data, rows) in sorted(files.items())
    ]
    return json.dumps({"format": MANIFEST_FORMAT, "files": entries}, indent=2).encode("utf-8")


def _manifest_entries(manifest_path: str, manifest: bytes) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads(manifest)
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format is {document.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        entries = {
            str(entry["name"]): {"rows": int(entry["rows"]), "sha256": str(entry["sha256"])}
            for entry in document["files"]
        }
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ValueError(f"{manifest_path}: unreadable manifest ({error})") from error
    return entries


def manifest_problems(
    manifest_path: str, manifest: bytes | None, files: dict[str, bytes], rows_read: int
) -> list[str]:
    """Differences between a drop folder and its manifest; none when there is no manifest.

    ``files`` maps each data file's path to its bytes; ``rows_read`` is the data rows the parser
    read from them.
    """
    if manifest is None:
        return []
    try:
        expected = _manifest_entries(manifest_path, manifest)
    except ValueError as error:
        return [str(error)]
    actual = {file_name(path): (path, data) for path, data in files.items()}
    problems = [
        f"{manifest_path}: lists {name}, which is not in the drop" for name in sorted(set(expected) - set(actual))
    ]
    problems += [
        f"{path}: not listed in {manifest_path}" for name, (path, _) in sorted(actual.items()) if name not in expected
    ]
    problems += [
        f"{path}: sha256 differs from {manifest_path} (the file changed or is incomplete)"
        for name, (path, data) in sorted(actual.items())
        if name in expected and sha256_hex(data) != expected[name]["sha256"]
    ]
    listed_rows = sum(entry["rows"] for entry in expected.values())
    if listed_rows != rows_read:
        problems.append(f"{manifest_path}: lists {listed_rows:,} data rows, the files hold {rows_read:,}")
    return problems
