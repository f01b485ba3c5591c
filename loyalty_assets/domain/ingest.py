"""Parse and validate one daily landing drop: Customer Loyalty History + Customer Flight Activity.

``ingest_drop`` takes the files of one ``dt=`` folder per table (as bytes, so the caller decides
whether they come from a folder or S3) and returns the validated tables, the quarantine and a
JSON-serialisable stats dict. It never writes anything; a file-level problem raises ``DropError``
before any output exists, so the caller writes nothing for that partition.

Decisions the data contract leaves open, fixed here:

- **Zero means missing** only in columns where 0 is not a real value: Loyalty Number, Year,
  Month, Enrollment Year/Month, Cancellation Year/Month and Salary. A 0 there is read as empty.
  Flight counts, distance, points and CLV keep their zeros.
- **Salary 0 becomes NaN** (counted as ``salary_zero_as_missing``): the contract says some copies
  write missing values as ``0``, and the real file's salaries are positive, empty (every College
  member) or one of 20 negatives; a zero is therefore a College member's missing salary in a
  "0 for missing" copy, not a real income.
- **Total Flights** must equal Flights Booked + Flights with Companions when both are present;
  otherwise the row is quarantined as ``inconsistent_total`` (we cannot tell which number is
  wrong, and every downstream feature counts flights).
- **Unknown member** means "not in the accepted loyalty history": activity of a member whose
  loyalty row was quarantined is quarantined too, so ``raw_flight_activity`` always joins.
- **Flights before enrollment** flags activity rows with ``total_flights > 0`` in a month before
  the member's enrollment month (zero rows before enrollment are just the extract's padding).
- **One quarantine row per bad input row.** Per-value rules run column by column in contract
  order (within a column: missing, non-numeric, non-integer, month range, negative, implausible);
  then the cross-field rules (after drop date, cancellation incomplete, cancellation before
  enrollment, inconsistent total), then the cross-row rules (duplicate member, unknown member).
  The first rule that fails names the row's reason and column.
- **Duplicate members**: every copy of a loyalty number that appears more than once (among rows
  with a valid number) is quarantined as ``duplicate_member``: we cannot tell which copy is right.
- **Activity duplicates**: rows with the same (member, year, month) and equal parsed values are
  exact duplicates (first kept). Remaining conflicting rows are resolved per docs/design.md: most
  ``total_flights``, then most ``distance``, then most ``points_accumulated``, then file order.
- **Categories** are compared exactly after trimming whitespace; values outside the contract's
  lists (including empty) are kept and flagged.
- **Split extracts** must agree on the activity variant (all 8-column or all 10-column);
  columns outside the contract are ignored and listed in ``stats["ignored_columns"]``.
- **Flights Booked / with Companions** may be empty per row in a 10-column file (kept as NA).
- **Plausible ranges** (``PLAUSIBLE_RANGES``): a number outside its column's range is
  quarantined as ``implausible_value``. The bounds sit an order of magnitude or more beyond the
  real data set's values (data contract: at most 32 flights a month, a flight's distance p90
  714 km, CLV p90 15,342, salary medians up to 182,144), so every honest row passes while 1e12
  points or 1e15 km do not. Years start at 1950; their upper end is the drop date (next rule).
- **After the drop date**: activity in a month after the drop's month, and an enrollment or
  cancellation month after it, are quarantined as ``after_drop_date`` (the drop's own month is
  month-to-date and allowed).
- **Reason codes** (``QUARANTINE_REASONS``): the eight of docs/design.md plus ``missing_value``
  (a required non-key number is empty), ``non_integer_value`` (a count, year or month with a
  fraction), ``inconsistent_total``, ``implausible_value`` and ``after_drop_date``.
- **File-level errors** are one line naming the file (row and column where known) and what to do.
  A field may hold at most ``MAX_FIELD_BYTES`` (128 KB, the csv module's own limit): a longer one
  means a damaged file, not a value to quarantine.
- ``row_number`` counts data rows per file (header = 0; blank lines are not rows);
  ``raw_values`` holds the row's contract columns as read (keys are the contract's names).
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

LOYALTY_TABLE = "loyalty_history"
ACTIVITY_TABLE = "flight_activity"

LOYALTY_COLUMNS = (
    "Loyalty Number", "Country", "Province", "City", "Postal Code", "Gender", "Education",
    "Salary", "Marital Status", "Loyalty Card", "CLV", "Enrollment Type", "Enrollment Year",
    "Enrollment Month", "Cancellation Year", "Cancellation Month",
)  # fmt: skip
ACTIVITY_COLUMNS = (
    "Loyalty Number", "Year", "Month", "Flights Booked", "Flights with Companions",
    "Total Flights", "Distance", "Points Accumulated", "Points Redeemed",
    "Dollar Cost Points Redeemed",
)  # fmt: skip
OPTIONAL_ACTIVITY_COLUMNS = ("Flights Booked", "Flights with Companions")
ACTIVITY_AMOUNT_COLUMNS = ("Distance", "Points Accumulated", "Points Redeemed", "Dollar Cost Points Redeemed")
LOYALTY_TEXT_COLUMNS = (
    "Country", "Province", "City", "Postal Code", "Gender", "Education", "Marital Status",
    "Loyalty Card", "Enrollment Type",
)  # fmt: skip
CATEGORY_VALUES = {
    "Gender": ("Female", "Male"),
    "Education": ("High School or Below", "College", "Bachelor", "Master", "Doctor"),
    "Marital Status": ("Single", "Married", "Divorced"),
    "Loyalty Card": ("Star", "Nova", "Aurora"),
    "Enrollment Type": ("Standard", "2018 Promotion"),
}
QUARANTINE_REASONS = (
    "missing_key", "missing_value", "non_numeric_value", "non_integer_value",
    "month_out_of_range", "negative_value", "cancellation_incomplete",
    "cancellation_before_enrollment", "inconsistent_total", "duplicate_member", "unknown_member",
    "implausible_value", "after_drop_date",
)  # fmt: skip
FIRST_PLAUSIBLE_YEAR = 1950
MAX_FIELD_BYTES = 128 * 1024
REEXPORT = "re-export the file and land it again"


@dataclass(frozen=True)
class PlausibleRange:
    """Inclusive bounds of one numeric column (None: no bound on that side) and the real data behind them."""

    low: float | None
    high: float | None
    real_data: str


# Years end at the drop date (``after_drop_date``), not at a fixed bound.
PLAUSIBLE_RANGES: dict[str, PlausibleRange] = {
    "Salary": PlausibleRange(-10_000_000, 10_000_000, "medians 61,915 .. 182,144; 20 negatives, kept and flagged"),
    "CLV": PlausibleRange(None, 10_000_000, "p90 15,342"),
    "Enrollment Year": PlausibleRange(FIRST_PLAUSIBLE_YEAR, None, "2012 .. 2018"),
    "Cancellation Year": PlausibleRange(FIRST_PLAUSIBLE_YEAR, None, "2013 .. 2018"),
    "Year": PlausibleRange(FIRST_PLAUSIBLE_YEAR, None, "2017 .. 2018"),
    "Flights Booked": PlausibleRange(None, 500, "about 80% of the flights"),
    "Flights with Companions": PlausibleRange(None, 500, "about 20% of the flights"),
    "Total Flights": PlausibleRange(None, 500, "at most 32 a month"),
    "Distance": PlausibleRange(None, 1_000_000, "km a month: a flight's p90 714; 32 x the longest non-stop < 500,000"),
    "Points Accumulated": PlausibleRange(None, 1_000_000, "about 0.1 x distance"),
    "Points Redeemed": PlausibleRange(None, 1_000_000, "about 500 in a redeeming month"),
    "Dollar Cost Points Redeemed": PlausibleRange(None, 100_000, "CAD, about 0.081 a point"),
}


ACTIVITY_KEY = ["loyalty_number", "year", "month"]
VARIANT_10_COLUMN = "10-column"
VARIANT_8_COLUMN = "8-column"


def snake_case(contract_column: str) -> str:
    """``"Flights with Companions"`` -> ``"flights_with_companions"`` (the output column names)."""
    return contract_column.lower().replace(" ", "_")


def normalise_header(name: str) -> str:
    """Header matching key: trimmed, case-insensitive, underscores and spaces equivalent."""
    return " ".join(name.replace("_", " ").lower().split())


class DropError(ValueError):
    """A file-level problem: the whole partition fails and nothing is written.

    The message is always one line (whitespace and line breaks inside it are collapsed).
    """

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


def _quoted(text: object, limit: int = 200) -> str:
    """An embedded library message or value, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[:limit]}..."


@dataclass(frozen=True)
class SourceFile:
    """One landing file. ``name`` is the path shown to users; its suffix selects the format."""

    name: str
    data: bytes


@dataclass
class IngestResult:
    """The three raw tables of docs/design.md and the drop's stats (JSON-serialisable)."""

    loyalty: pd.DataFrame
    activity: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict


@dataclass(frozen=True)
class _NumberRule:
    """How one numeric contract column is validated."""

    column: str
    integer: bool
    zero_means_missing: bool = False
    when_missing: str | None = None  # quarantine reason, or None when an empty value is allowed
    non_negative: bool = False
    month: bool = False


_LOYALTY_NUMBER_RULES = (
    _NumberRule("Loyalty Number", True, True, "missing_key", non_negative=True),
    _NumberRule("Salary", False, True),
    _NumberRule("CLV", False, when_missing="missing_value"),
    _NumberRule("Enrollment Year", True, True, "missing_value", non_negative=True),
    _NumberRule("Enrollment Month", True, True, "missing_value", month=True),
    _NumberRule("Cancellation Year", True, True, non_negative=True),
    _NumberRule("Cancellation Month", True, True, month=True),
)
_ACTIVITY_NUMBER_RULES = (
    _NumberRule("Loyalty Number", True, True, "missing_key", non_negative=True),
    _NumberRule("Year", True, True, "missing_key", non_negative=True),
    _NumberRule("Month", True, True, "missing_key", month=True),
    _NumberRule("Flights Booked", True, non_negative=True),
    _NumberRule("Flights with Companions", True, non_negative=True),
    _NumberRule("Total Flights", True, when_missing="missing_value", non_negative=True),
    _NumberRule("Distance", False, when_missing="missing_value", non_negative=True),
    _NumberRule("Points Accumulated", False, when_missing="missing_value", non_negative=True),
    _NumberRule("Points Redeemed", False, when_missing="missing_value", non_negative=True),
    _NumberRule("Dollar Cost Points Redeemed", False, when_missing="missing_value", non_negative=True),
)


def plausible_ranges_markdown() -> str:
    """The plausible ranges as a Markdown table (table | column | lowest | highest | real data), for the README."""

    def shown(value: float | None, column: str, none: str) -> str:
        if value is None:
            return none
        return str(value) if column.endswith("Year") else f"{value:,}"

    non_negative = {rule.column for rule in _LOYALTY_NUMBER_RULES + _ACTIVITY_NUMBER_RULES if rule.non_negative}
    rows = [
        (
            LOYALTY_TABLE if column in LOYALTY_COLUMNS else ACTIVITY_TABLE,
            column,
            shown(bounds.low, column, "0 (negative_value)" if column in non_negative else "none"),
            shown(bounds.high, column, "the drop's month" if column.endswith("Year") else "none"),
            bounds.real_data,
        )
        for column, bounds in PLAUSIBLE_RANGES.items()
    ]
    return pd.DataFrame(rows, columns=["table", "column", "lowest", "highest", "real data"]).to_markdown(index=False)


# ---------------------------------------------------------------- reading files


def _gunzip(source: SourceFile) -> bytes:
    try:
        return gzip.decompress(source.data)
    except (OSError, EOFError, zlib.error) as error:
        raise DropError(
            f"{source.name}: unreadable file: not a valid gzip stream ({_quoted(error)}); "
            f"the file is damaged or cut short: {REEXPORT}"
        ) from error


def _data_row(data: bytes, offset: int) -> tuple[int, bytes]:
    """The data row number (header = 0, blank lines skipped) and the text before ``offset`` on its line."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    if line_start == 0:
        return 0, data[:offset]
    earlier_rows = sum(1 for line in data[:line_start].split(b"\n")[1:-1] if line.strip())
    return earlier_rows + 1, data[line_start:offset]


def _column_at(header: list[str], line_before: bytes) -> str:
    """The header name of the field that holds the end of ``line_before`` (commas counted, quotes ignored)."""
    position = line_before.count(b",")
    return f"'{header[position]}'" if 0 <= position < len(header) else f"#{position + 1}"


def _csv_problem(name: str, data: bytes, header: list[str]) -> DropError | None:
    """Locate the first invalid UTF-8 byte or over-long field (Arrow reports neither's row)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        row, before = _data_row(data, error.start)
        return DropError(
            f"{name}: row {row}, column {_column_at(header, before)}: invalid UTF-8 byte "
            f"0x{data[error.start]:02x}; the file is not UTF-8 (a Latin-1 or Windows-1252 export?): "
            "re-export it as UTF-8 and land it again"
        )
    offset = 0
    for line in data.split(b"\n"):
        if len(line) > MAX_FIELD_BYTES:
            start = offset
            for field in line.split(b","):
                if len(field) > MAX_FIELD_BYTES:
                    row, before = _data_row(data, start)
                    return _long_field_error(name, row, _column_at(header, before), len(field))
                start += len(field) + 1
        offset += len(line) + 1
    return None


def _long_field_error(name: str, row: int, column: str, size: int) -> DropError:
    return DropError(
        f"{name}: row {row}, column {column}: a field of {size:,} bytes is over the "
        f"{MAX_FIELD_BYTES:,}-byte limit; the file is damaged (a lost quote or line break?): {REEXPORT}"
    )


def _read_csv(name: str, data: bytes) -> pa.Table:
    """All columns as strings, named as in the file's header."""
    newline = data.find(b"\n")
    header_bytes = data if newline < 0 else data[:newline]
    try:
        header_line = header_bytes.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as error:
        raise DropError(
            f"{name}: row 0 (header): not UTF-8 text ({_quoted(error)}): re-export the file as UTF-8 and land it again"
        ) from error
    if not header_line.strip():
        raise DropError(f"{name}: empty file (no header row): {REEXPORT}")
    if len(header_bytes) > MAX_FIELD_BYTES:
        raise DropError(
            f"{name}: row 0 (header) has {len(header_bytes):,} bytes, over the {MAX_FIELD_BYTES:,}-byte field limit; "
            f"the file is damaged: {REEXPORT}"
        )
    header = next(csv.reader([header_line]))
    positions = [str(index) for index in range(len(header))]
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(column_names=positions, skip_rows=1),
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(positions, pa.string())),
        )
    except pa.ArrowInvalid as error:
        located = _csv_problem(name, data, header)
        if located is not None:
            raise located from error
        raise DropError(f"{name}: unreadable file: not a valid CSV file ({_quoted(error)}): {REEXPORT}") from error
    return table.rename_columns(header)


def _read_parquet(name: str, data: bytes) -> pa.Table:
    """All columns cast to strings, so CSV and Parquet files share one validation path."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as error:
        raise DropError(f"{name}: unreadable file: not a valid Parquet file ({_quoted(error)}): {REEXPORT}") from error
    columns = []
    for column_name, column in zip(table.column_names, table.columns):
        try:
            columns.append(pc.cast(column, pa.string()))
        except pa.ArrowNotImplementedError as error:
            raise DropError(f"{name}: column '{column_name}' has unsupported type {column.type}") from error
    return pa.table(columns, names=table.column_names)


def _read_source(source: SourceFile) -> pa.Table:
    lower_name = source.name.lower()
    if lower_name.endswith(".csv.gz"):
        table = _read_csv(source.name, _gunzip(source))
    elif lower_name.endswith(".csv"):
        table = _read_csv(source.name, source.data)
    elif lower_name.endswith(".parquet"):
        table = _read_parquet(source.name, source.data)
    else:
        raise DropError(f"{source.name}: unsupported file type: land .csv, .csv.gz or .parquet files")
    if table.num_rows == 0:
        raise DropError(f"{source.name}: empty file (no data rows, only the header): {REEXPORT}")
    _check_field_sizes(source.name, table)
    return table


def _check_field_sizes(name: str, table: pa.Table) -> None:
    """A field over ``MAX_FIELD_BYTES`` (e.g. a lost quote swallowing many rows) fails the file."""
    for column_name, column in zip(table.column_names, table.columns):
        lengths = pc.binary_length(column)
        longest = pc.max(lengths).as_py()
        if longest is not None and longest > MAX_FIELD_BYTES:
            raise _long_field_error(name, pc.index(lengths, longest).as_py() + 1, f"'{column_name}'", longest)


def _select_contract_columns(
    name: str, table: pa.Table, contract: tuple[str, ...], optional: tuple[str, ...]
) -> tuple[pa.Table, list[str]]:
    """The contract columns present, renamed to the contract's names and in its order."""
    by_key = {normalise_header(column): column for column in contract}
    found: dict[str, str] = {}
    ignored = []
    for header in table.column_names:
        column = by_key.get(normalise_header(header))
        if column is None:
            ignored.append(header)
        elif column in found:
            raise DropError(f"{name}: column '{column}' appears more than once (as '{found[column]}' and '{header}')")
        else:
            found[column] = header
    # The optional columns come as a group: all of them (10-column variant) or none (8-column).
    required = [column for column in contract if column not in optional or any(o in found for o in optional)]
    for column in required:
        if column not in found:
            if len(table.column_names) == 1 and ";" in table.column_names[0]:
                raise DropError(
                    f"{name}: the header has no commas but holds ';': the file looks ';'-delimited; "
                    "re-export it comma-separated and land it again"
                )
            raise DropError(
                f"{name}: missing required column '{column}' (columns found: "
                f"{_quoted(', '.join(table.column_names))}): export the data contract's columns and land it again"
            )
    present = [column for column in contract if column in found]
    selected = table.select([table.column_names.index(found[column]) for column in present])
    return selected.rename_columns(present), ignored


@dataclass
class _Extract:
    """The concatenated files of one table, with each row's file and 1-based row number."""

    table: pa.Table
    file_names: list[str]
    file_index: np.ndarray
    row_number: np.ndarray
    ignored_columns: list[str]


def _read_extract(files: list[SourceFile], contract: tuple[str, ...], optional: tuple[str, ...] = ()) -> _Extract:
    tables, file_index, row_number, ignored = [], [], [], []
    for position, source in enumerate(files):
        table, ignored_here = _select_contract_columns(source.name, _read_source(source), contract, optional)
        if tables and table.column_names != tables[0].column_names:
            raise DropError(
                f"{source.name}: columns {table.column_names} differ from {files[0].name}'s "
                f"{tables[0].column_names}; split extracts of one drop must share one layout"
            )
        tables.append(table)
        file_index.append(np.full(table.num_rows, position, dtype=np.int64))
        row_number.append(np.arange(1, table.num_rows + 1, dtype=np.int64))
        ignored += [column for column in ignored_here if column not in ignored]
    return _Extract(
        table=pa.concat_tables(tables),
        file_names=[source.name for source in files],
        file_index=np.concatenate(file_index),
        row_number=np.concatenate(row_number),
        ignored_columns=ignored,
    )


# ---------------------------------------------------------------- row rules


class _Rejections:
    """The first failing rule of each row: its reason and column."""

    def __init__(self, n_rows: int):
        self.rejected = np.zeros(n_rows, dtype=bool)
        self.reason = np.empty(n_rows, dtype=object)
        self.column = np.empty(n_rows, dtype=object)

    def add(self, mask: np.ndarray, column: str, reason: str) -> None:
        new = mask & ~self.rejected
        self.reason[new] = reason
        self.column[new] = column
        self.rejected |= new


def _nullable_int(values: np.ndarray) -> pd.arrays.IntegerArray:
    """float64 with NaN -> pandas ``Int64`` with NA."""
    missing = np.isnan(values)
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int64), missing)


def _text(column: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(pc.utf8_trim_whitespace(column), "").to_numpy(zero_copy_only=False)


def _parse_numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, missing, non_numeric)``; values are NaN where missing or non-numeric."""
    try:  # fast path: a clean column casts as it is
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        missing = column.is_null().to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        trimmed = pc.utf8_trim_whitespace(column)
        blank = pc.fill_null(pc.equal(trimmed, ""), True)
        with_nulls = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
        # Arrow's cast has no "coerce" mode; pandas' to_numeric has.
        values = pd.to_numeric(with_nulls.to_pandas(), errors="coerce").to_numpy(dtype=np.float64)
        missing = blank.to_numpy(zero_copy_only=False)
    non_numeric = ~missing & ~np.isfinite(values)
    return np.where(non_numeric, np.nan, values), missing, non_numeric


def _check_numbers(table: pa.Table, rules: tuple[_NumberRule, ...], rejections: _Rejections) -> dict[str, np.ndarray]:
    """Apply the per-value rules in column order; return each column's values (NaN = missing)."""
    parsed = {}
    for rule in rules:
        if rule.column not in table.column_names:
            continue
        values, missing, non_numeric = _parse_numbers(table.column(rule.column))
        if rule.zero_means_missing:
            missing = missing | (values == 0)
        if rule.when_missing is not None:
            rejections.add(missing, rule.column, rule.when_missing)
        rejections.add(non_numeric, rule.column, "non_numeric_value")
        if rule.integer:
            # Beyond 2**53 a float64 no longer holds every integer, so such values cannot be trusted.
            fractional_or_huge = (values != np.trunc(values)) | (np.abs(values) > 2**53)
            rejections.add(np.isfinite(values) & fractional_or_huge, rule.column, "non_integer_value")
        if rule.month:
            rejections.add(~missing & ((values < 1) | (values > 12)), rule.column, "month_out_of_range")
        if rule.non_negative:
            rejections.add(values < 0, rule.column, "negative_value")
        bounds = PLAUSIBLE_RANGES.get(rule.column)
        if bounds is not None and bounds.low is not None:
            rejections.add(~missing & (values < bounds.low), rule.column, "implausible_value")
        if bounds is not None and bounds.high is not None:
            rejections.add(values > bounds.high, rule.column, "implausible_value")
        parsed[rule.column] = np.where(missing, np.nan, values)
    return parsed


def _quarantine_rows(extract: _Extract, table_name: str, rejections: _Rejections) -> pd.DataFrame:
    rows = np.flatnonzero(rejections.rejected)
    raw = extract.table.take(pa.array(rows, type=pa.int64())).to_pandas()
    # pandas writes "\n" for an empty frame, hence the guard.
    raw_values = raw.to_json(orient="records", lines=True, force_ascii=False).splitlines() if len(rows) else []
    return pd.DataFrame(
        {
            "source_file": np.asarray(extract.file_names, dtype=object)[extract.file_index[rows]],
            "row_number": extract.row_number[rows],
            "table": np.full(len(rows), table_name, dtype=object),
            "column": rejections.column[rows],
            "reason": rejections.reason[rows],
            "raw_values": np.asarray(raw_values, dtype=object),
        }
    )


def _month_number(year, month):
    return year * 12 + month


def _validate_loyalty(extract: _Extract, drop_month: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    table = extract.table
    rejections = _Rejections(table.num_rows)
    numbers = _check_numbers(table, _LOYALTY_NUMBER_RULES, rejections)

    cancel_year, cancel_month = numbers["Cancellation Year"], numbers["Cancellation Month"]
    enrolled = _month_number(numbers["Enrollment Year"], numbers["Enrollment Month"])
    cancelled = _month_number(cancel_year, cancel_month)
    rejections.add(enrolled > drop_month, "Enrollment Year", "after_drop_date")
    rejections.add(cancelled > drop_month, "Cancellation Year", "after_drop_date")
    has_year, has_month = ~np.isnan(cancel_year), ~np.isnan(cancel_month)
    rejections.add(has_month & ~has_year, "Cancellation Year", "cancellation_incomplete")
    rejections.add(has_year & ~has_month, "Cancellation Month", "cancellation_incomplete")
    rejections.add(cancelled < enrolled, "Cancellation Year", "cancellation_before_enrollment")

    loyalty_number = numbers["Loyalty Number"]
    valid_number = np.isfinite(loyalty_number) & (loyalty_number > 0) & (loyalty_number == np.trunc(loyalty_number))
    repeated = np.zeros(table.num_rows, dtype=bool)
    repeated[valid_number] = pd.Series(loyalty_number[valid_number]).duplicated(keep=False).to_numpy()
    rejections.add(repeated, "Loyalty Number", "duplicate_member")

    keep = ~rejections.rejected
    salary_zero = keep & (_parse_numbers(table.column("Salary"))[0] == 0)
    columns: dict[str, object] = {"loyalty_number": loyalty_number[keep].astype(np.int64)}
    for column in LOYALTY_COLUMNS[1:]:
        name = snake_case(column)
        if column in LOYALTY_TEXT_COLUMNS:
            columns[name] = _text(table.column(column))[keep]
        elif column in ("Salary", "CLV"):
            columns[name] = numbers[column][keep]
        elif column in ("Enrollment Year", "Enrollment Month"):
            columns[name] = numbers[column][keep].astype(np.int64)
        else:  # Cancellation Year / Month: NA = not cancelled
            columns[name] = _nullable_int(numbers[column][keep])
    loyalty = pd.DataFrame(columns)
    loyalty["flag_negative_salary"] = (loyalty["salary"] < 0).to_numpy()
    unknown_by_column = {
        column: ~loyalty[snake_case(column)].isin(allowed).to_numpy() for column, allowed in CATEGORY_VALUES.items()
    }
    loyalty["flag_unknown_category"] = np.logical_or.reduce(list(unknown_by_column.values()))
    loyalty = loyalty.sort_values("loyalty_number", kind="stable", ignore_index=True)
    stats = {
        "negative_salary": int(loyalty["flag_negative_salary"].sum()),
        "salary_zero_as_missing": int(salary_zero.sum()),
        "unknown_category": int(loyalty["flag_unknown_category"].sum()),
        "unknown_category_by_column": {column: int(mask.sum()) for column, mask in unknown_by_column.items()},
    }
    return loyalty, _quarantine_rows(extract, LOYALTY_TABLE, rejections), stats


def _deduplicated_order(columns: dict[str, np.ndarray | pd.api.extensions.ExtensionArray]) -> tuple[np.ndarray, dict]:
    """Row positions to keep, sorted by (member, year, month), and the duplicate counts.

    Exact duplicates (equal parsed values) keep their first row; the remaining rows of a
    conflicting key are resolved by the design.md rule: most ``total_flights``, then most
    ``distance``, then most ``points_accumulated``, then the first in file order.
    """
    # lexsort is stable, so rows of one key stay in file order.
    order = np.lexsort((columns["month"], columns["year"], columns["loyalty_number"]))
    same_key = np.ones(len(order) - 1, dtype=bool) if len(order) else np.zeros(0, dtype=bool)
    for name in ACTIVITY_KEY:
        sorted_values = columns[name][order]
        same_key &= sorted_values[1:] == sorted_values[:-1]
    in_group = np.zeros(len(order), dtype=bool)
    in_group[1:] |= same_key
    in_group[:-1] |= same_key
    positions = np.sort(order[in_group])
    candidates = pd.DataFrame({name: values[positions] for name, values in columns.items()}, index=positions)

    exact = candidates.duplicated(keep="first").to_numpy()
    distinct = candidates[~exact]
    conflicting = distinct[distinct.duplicated(ACTIVITY_KEY, keep=False).to_numpy()]
    winners = (
        distinct.assign(file_order=distinct.index)
        .sort_values(
            ["total_flights", "distance", "points_accumulated", "file_order"],
            ascending=[False, False, False, True],
            kind="stable",
        )
        .drop_duplicates(ACTIVITY_KEY, keep="first")
    )
    losers = distinct.index.difference(winners.index)
    dropped = np.concatenate([positions[exact], losers.to_numpy()])
    stats = {
        "exact_duplicates_dropped": int(exact.sum()),
        "conflicting_keys_resolved": len(conflicting.drop_duplicates(ACTIVITY_KEY)),
        "conflicting_rows_dropped": len(losers),
    }
    return order[~np.isin(order, dropped)], stats


def _validate_activity(
    extract: _Extract, loyalty: pd.DataFrame, drop_month: int
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    table = extract.table
    rejections = _Rejections(table.num_rows)
    numbers = _check_numbers(table, _ACTIVITY_NUMBER_RULES, rejections)
    rejections.add(_month_number(numbers["Year"], numbers["Month"]) > drop_month, "Year", "after_drop_date")
    variant = VARIANT_10_COLUMN if "Flights Booked" in numbers else VARIANT_8_COLUMN
    if variant == VARIANT_10_COLUMN:
        booked_plus_companions = numbers["Flights Booked"] + numbers["Flights with Companions"]
        inconsistent = ~np.isnan(booked_plus_companions) & (numbers["Total Flights"] != booked_plus_companions)
        rejections.add(inconsistent, "Total Flights", "inconsistent_total")
    known = loyalty["loyalty_number"].to_numpy()
    rejections.add(~np.isin(numbers["Loyalty Number"], known), "Loyalty Number", "unknown_member")

    keep = ~rejections.rejected
    n_kept = int(keep.sum())
    columns: dict[str, np.ndarray | pd.api.extensions.ExtensionArray] = {
        snake_case(column): numbers[column][keep].astype(np.int64) for column in ("Loyalty Number", "Year", "Month")
    }
    for column in OPTIONAL_ACTIVITY_COLUMNS:
        values = numbers[column][keep] if variant == VARIANT_10_COLUMN else np.full(n_kept, np.nan)
        columns[snake_case(column)] = _nullable_int(values)
    columns["total_flights"] = numbers["Total Flights"][keep].astype(np.int64)
    for column in ACTIVITY_AMOUNT_COLUMNS:
        columns[snake_case(column)] = numbers[column][keep]
    order, duplicate_stats = _deduplicated_order(columns)
    activity = pd.DataFrame({name: values[order] for name, values in columns.items()}, copy=False)

    enrollment = loyalty.set_index("loyalty_number")
    enrolled = _month_number(enrollment["enrollment_year"], enrollment["enrollment_month"]).reindex(
        activity["loyalty_number"]
    )
    flown_before = _month_number(activity["year"], activity["month"]).to_numpy() < enrolled.to_numpy()
    activity["flag_before_enrollment"] = flown_before & (activity["total_flights"] > 0).to_numpy()
    stats = {
        **duplicate_stats,
        "flights_before_enrollment": int(activity["flag_before_enrollment"].sum()),
        "flights_before_enrollment_members": int(
            activity.loc[activity["flag_before_enrollment"], "loyalty_number"].nunique()
        ),
        "activity_variant": variant,
    }
    return activity, _quarantine_rows(extract, ACTIVITY_TABLE, rejections), stats


# ---------------------------------------------------------------- entry point


def ingest_drop(
    loyalty_files: list[SourceFile],
    activity_files: list[SourceFile],
    *,
    drop_date: str | date,
    loyalty_folder: str = LOYALTY_TABLE,
    activity_folder: str = ACTIVITY_TABLE,
) -> IngestResult:
    """Parse, validate and de-duplicate one daily drop; raise ``DropError`` on a file-level problem.

    ``loyalty_files``/``activity_files`` are the files of the ``dt=`` folders (several files per
    table are concatenated in the given order); the folder names appear in "no files" errors.
    ``drop_date`` (a date or ``YYYY-MM-DD``) is the drop's ``dt=``: rows dated after it are quarantined.
    Returns the ``raw_loyalty_history``, ``raw_flight_activity`` and ``raw_quarantine`` frames of
    docs/design.md and the stats dict (see the module docstring for the rules).
    """
    if not loyalty_files:
        raise DropError(f"{loyalty_folder}: partition has no files")
    if not activity_files:
        raise DropError(f"{activity_folder}: partition has no files")
    loyalty_extract = _read_extract(loyalty_files, LOYALTY_COLUMNS)
    activity_extract = _read_extract(activity_files, ACTIVITY_COLUMNS, OPTIONAL_ACTIVITY_COLUMNS)

    drop_day = pd.Timestamp(drop_date)
    drop_month = _month_number(drop_day.year, drop_day.month)
    loyalty, loyalty_quarantine, loyalty_stats = _validate_loyalty(loyalty_extract, drop_month)
    activity, activity_quarantine, activity_stats = _validate_activity(activity_extract, loyalty, drop_month)
    quarantine = pd.concat([loyalty_quarantine, activity_quarantine], ignore_index=True)

    rows_read = {LOYALTY_TABLE: loyalty_extract.table.num_rows, ACTIVITY_TABLE: activity_extract.table.num_rows}
    by_reason = quarantine["reason"].value_counts().sort_index()
    stats = {
        "drop_date": drop_day.date().isoformat(),
        "rows_read": rows_read,
        "rows_written": {LOYALTY_TABLE: len(loyalty), ACTIVITY_TABLE: len(activity)},
        "exact_duplicates_dropped": activity_stats["exact_duplicates_dropped"],
        "conflicting_keys_resolved": activity_stats["conflicting_keys_resolved"],
        "conflicting_rows_dropped": activity_stats["conflicting_rows_dropped"],
        "quarantined_rows": len(quarantine),
        "quarantined_by_table": {
            LOYALTY_TABLE: len(loyalty_quarantine),
            ACTIVITY_TABLE: len(activity_quarantine),
        },
        "quarantined_by_reason": {str(reason): int(count) for reason, count in by_reason.items()},
        "quarantine_share": len(quarantine) / sum(rows_read.values()),
        "negative_salary": loyalty_stats["negative_salary"],
        "salary_zero_as_missing": loyalty_stats["salary_zero_as_missing"],
        "unknown_category": loyalty_stats["unknown_category"],
        "unknown_category_by_column": loyalty_stats["unknown_category_by_column"],
        "flights_before_enrollment": activity_stats["flights_before_enrollment"],
        "flights_before_enrollment_members": activity_stats["flights_before_enrollment_members"],
        "activity_variant": activity_stats["activity_variant"],
        "source_files": {LOYALTY_TABLE: loyalty_extract.file_names, ACTIVITY_TABLE: activity_extract.file_names},
        "ignored_columns": {
            LOYALTY_TABLE: loyalty_extract.ignored_columns,
            ACTIVITY_TABLE: activity_extract.ignored_columns,
        },
    }
    return IngestResult(loyalty=loyalty, activity=activity, quarantine=quarantine, stats=stats)
