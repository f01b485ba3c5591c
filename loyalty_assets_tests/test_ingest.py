"""Parsing and validation of one landing drop (loyalty_assets.domain.ingest)."""

from __future__ import annotations

import gzip
import io
import json
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loyalty_assets.domain.ingest import (
    PLAUSIBLE_RANGES,
    QUARANTINE_REASONS,
    DropError,
    SourceFile,
    ingest_drop,
    plausible_ranges_markdown,
)

LOYALTY_HEADER = (
    "Loyalty Number,Country,Province,City,Postal Code,Gender,Education,Salary,Marital Status,"
    "Loyalty Card,CLV,Enrollment Type,Enrollment Year,Enrollment Month,Cancellation Year,Cancellation Month"
)
ACTIVITY_HEADER = (
    "Loyalty Number,Year,Month,Flights Booked,Flights with Companions,Total Flights,Distance,"
    "Points Accumulated,Points Redeemed,Dollar Cost Points Redeemed"
)
DROP_DATE = "2018-12-31"  # the dt= the fixture files are named after
ingest_files = partial(ingest_drop, drop_date=DROP_DATE)
ACTIVITY_HEADER_8 = (
    "Loyalty Number,Year,Month,Total Flights,Distance,Points Accumulated,Points Redeemed,Dollar Cost Points Redeemed"
)

# Rows in the originals' style (first rows of the real files, plus a cancelled 2018 enrollee).
LOYALTY_ROWS = [
    "480934,Canada,Ontario,Toronto,M2Z 4K1,Female,Bachelor,83236,Married,Star,3839.14,Standard,2016,2,,",
    "549612,Canada,Alberta,Edmonton,T3G 6Y6,Male,College,,Divorced,Star,3839.61,Standard,2016,3,,",
    "429460,Canada,British Columbia,Vancouver,V6E 3D9,Male,College,,Single,Star,3839.75,Standard,2014,7,2018,1",
    "611765,Canada,Quebec,Quebec City,G1B 3L5,Male,Bachelor,90175,Single,Star,3867.97,2018 Promotion,2018,3,,",
]
ACTIVITY_ROWS = [
    "480934,2017,1,3,0,3,1521,152,0,0",
    "480934,2017,2,10,4,14,2030,203.5,0,0",
    "549612,2017,1,0,0,0,0,0,0,0",
    "429460,2017,1,6,0,6,1200,120,341,28",
    "611765,2017,12,0,0,0,0,0,0,0",
]

LOYALTY_DTYPES = {
    "loyalty_number": "int64", "country": "object", "province": "object", "city": "object",
    "postal_code": "object", "gender": "object", "education": "object", "salary": "float64",
    "marital_status": "object", "loyalty_card": "object", "clv": "float64", "enrollment_type": "object",
    "enrollment_year": "int64", "enrollment_month": "int64", "cancellation_year": "Int64",
    "cancellation_month": "Int64", "flag_negative_salary": "bool", "flag_unknown_category": "bool",
}  # fmt: skip
ACTIVITY_DTYPES = {
    "loyalty_number": "int64", "year": "int64", "month": "int64", "flights_booked": "Int64",
    "flights_with_companions": "Int64", "total_flights": "int64", "distance": "float64",
    "points_accumulated": "float64", "points_redeemed": "float64",
    "dollar_cost_points_redeemed": "float64", "flag_before_enrollment": "bool",
}  # fmt: skip
QUARANTINE_DTYPES = {
    "source_file": "object", "row_number": "int64", "table": "object", "column": "object",
    "reason": "object", "raw_values": "object",
}  # fmt: skip


def csv_bytes(header: str, rows: list[str], *, bom: bool = True, eol: str = "\r\n") -> bytes:
    """A file in the originals' format: UTF-8 BOM and CRLF unless told otherwise."""
    text = eol.join([header, *rows]) + eol
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def loyalty_file(rows: list[str] = LOYALTY_ROWS, name: str = "loyalty_history/dt=2018-12-31/part-1.csv") -> SourceFile:
    return SourceFile(name, csv_bytes(LOYALTY_HEADER, rows))


def activity_file(
    rows: list[str] = ACTIVITY_ROWS, name: str = "flight_activity/dt=2018-12-31/part-1.csv"
) -> SourceFile:
    return SourceFile(name, csv_bytes(ACTIVITY_HEADER, rows))


def ingest(loyalty_rows: list[str] = LOYALTY_ROWS, activity_rows: list[str] = ACTIVITY_ROWS):
    return ingest_files([loyalty_file(loyalty_rows)], [activity_file(activity_rows)])


def quarantined(result, table: str) -> pd.DataFrame:
    return result.quarantine[result.quarantine["table"] == table].reset_index(drop=True)


# ---------------------------------------------------------------- formats and headers


def test_original_format_parses_to_the_design_schemas():
    result = ingest()

    assert {name: str(dtype) for name, dtype in result.loyalty.dtypes.items()} == LOYALTY_DTYPES
    assert {name: str(dtype) for name, dtype in result.activity.dtypes.items()} == ACTIVITY_DTYPES
    assert {name: str(dtype) for name, dtype in result.quarantine.dtypes.items()} == QUARANTINE_DTYPES
    assert result.quarantine.empty
    loyalty = result.loyalty.set_index("loyalty_number")
    assert loyalty.loc[480934, "salary"] == 83236.0
    assert np.isnan(loyalty.loc[549612, "salary"])
    assert loyalty.loc[429460, ["cancellation_year", "cancellation_month"]].tolist() == [2018, 1]
    assert loyalty.loc[480934, "cancellation_year"] is pd.NA
    assert loyalty.loc[611765, "city"] == "Quebec City"
    activity = result.activity.set_index(["loyalty_number", "year", "month"])
    assert activity.loc[(480934, 2017, 2), "points_accumulated"] == 203.5
    assert activity.loc[(480934, 2017, 2), "flights_with_companions"] == 4
    assert result.stats["activity_variant"] == "10-column"
    assert result.stats["rows_read"] == {"loyalty_history": 4, "flight_activity": 5}
    assert result.stats["quarantine_share"] == 0.0


def rename_header(header: str, style: str) -> str:
    names = header.split(",")
    renamed = {
        "original": names,
        "snake_case": [name.lower().replace(" ", "_") for name in names],
        "underscores": [name.replace(" ", "_") for name in names],
        "upper_padded": [f"  {name.upper()} " for name in names],
    }[style]
    return ",".join(renamed)


@pytest.mark.parametrize("style", ["original", "snake_case", "underscores", "upper_padded"])
@pytest.mark.parametrize(("bom", "eol"), [(True, "\r\n"), (False, "\n")])
def test_header_variants_give_the_same_tables(style, bom, eol):
    loyalty = SourceFile("l.csv", csv_bytes(rename_header(LOYALTY_HEADER, style), LOYALTY_ROWS, bom=bom, eol=eol))
    activity = SourceFile("a.csv", csv_bytes(rename_header(ACTIVITY_HEADER, style), ACTIVITY_ROWS, bom=bom, eol=eol))

    result = ingest_files([loyalty], [activity])
    reference = ingest()

    pd.testing.assert_frame_equal(result.loyalty, reference.loyalty)
    pd.testing.assert_frame_equal(result.activity, reference.activity)
    assert result.quarantine.empty


def test_eight_column_activity_variant_leaves_booked_and_companions_empty():
    rows = [",".join(row.split(",")[:3] + row.split(",")[5:]) for row in ACTIVITY_ROWS]
    result = ingest_files([loyalty_file()], [SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER_8, rows))])

    assert result.stats["activity_variant"] == "8-column"
    assert str(result.activity["flights_booked"].dtype) == "Int64"
    assert result.activity["flights_booked"].isna().all()
    assert result.activity["flights_with_companions"].isna().all()
    assert result.activity["total_flights"].tolist() == ingest().activity["total_flights"].tolist()


def test_zero_written_for_missing_cancellation_and_salary():
    rows = [
        "480934,Canada,Ontario,Toronto,M2Z 4K1,Female,Bachelor,83236,Married,Star,3839.14,Standard,2016,2,0,0",
        "549612,Canada,Alberta,Edmonton,T3G 6Y6,Male,College,0,Divorced,Star,3839.61,Standard,2016,3,0,0",
        "429460,Canada,British Columbia,Vancouver,V6E 3D9,Male,College,0,Single,Star,3839.75,Standard,2014,7,2018,1",
    ]
    result = ingest(rows, ACTIVITY_ROWS[:4])
    loyalty = result.loyalty.set_index("loyalty_number")

    assert loyalty.loc[[480934, 549612], "cancellation_year"].isna().all()
    assert loyalty.loc[[480934, 549612], "cancellation_month"].isna().all()
    assert loyalty.loc[429460, "cancellation_year"] == 2018
    assert loyalty.loc[[549612, 429460], "salary"].isna().all()
    assert result.stats["salary_zero_as_missing"] == 2
    assert result.quarantine.empty


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_parquet_and_gzip_inputs_match_csv():
    reference = ingest()
    loyalty_frame = pd.read_csv(io.BytesIO(csv_bytes(LOYALTY_HEADER, LOYALTY_ROWS)), encoding="utf-8-sig")
    activity_frame = pd.read_csv(io.BytesIO(csv_bytes(ACTIVITY_HEADER, ACTIVITY_ROWS)), encoding="utf-8-sig")
    loyalty_frame.columns = [name.lower().replace(" ", "_") for name in loyalty_frame.columns]

    parquet_loyalty = ingest_files(
        [SourceFile("l.parquet", _parquet_bytes(loyalty_frame))],
        [SourceFile("a.csv.gz", gzip.compress(csv_bytes(ACTIVITY_HEADER, ACTIVITY_ROWS)))],
    )
    parquet_activity = ingest_files([loyalty_file()], [SourceFile("a.parquet", _parquet_bytes(activity_frame))])

    pd.testing.assert_frame_equal(parquet_loyalty.loyalty, reference.loyalty)
    pd.testing.assert_frame_equal(parquet_loyalty.activity, reference.activity)
    pd.testing.assert_frame_equal(parquet_activity.activity, reference.activity)
    assert parquet_loyalty.quarantine.empty and parquet_activity.quarantine.empty


def test_split_extracts_are_concatenated_with_row_numbers_per_file():
    loyalty_parts = [loyalty_file(LOYALTY_ROWS[:2], "l/part-1.csv"), loyalty_file(LOYALTY_ROWS[2:], "l/part-2.csv")]
    bad_month = "480934,2017,13,0,0,0,0,0,0,0"
    activity_parts = [
        activity_file(ACTIVITY_ROWS[:2], "a/part-1.csv"),
        SourceFile(
            "a/part-2.csv.gz",
            gzip.compress(csv_bytes(ACTIVITY_HEADER, [ACTIVITY_ROWS[2], bad_month, *ACTIVITY_ROWS[3:]])),
        ),
    ]

    result = ingest_files(loyalty_parts, activity_parts)

    pd.testing.assert_frame_equal(result.loyalty, ingest().loyalty)
    pd.testing.assert_frame_equal(result.activity, ingest().activity)
    assert result.quarantine[["source_file", "row_number", "reason"]].values.tolist() == [
        ["a/part-2.csv.gz", 2, "month_out_of_range"]
    ]
    assert result.stats["source_files"] == {
        "loyalty_history": ["l/part-1.csv", "l/part-2.csv"],
        "flight_activity": ["a/part-1.csv", "a/part-2.csv.gz"],
    }
    assert result.stats["rows_read"] == {"loyalty_history": 4, "flight_activity": 6}


# ---------------------------------------------------------------- file-level errors


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("loyalty", "Enrollment Month"),
        ("loyalty", "Loyalty Number"),
        ("activity", "Total Flights"),
        ("activity", "Distance"),
    ],
)
def test_missing_required_column_names_file_and_column(table, column):
    header, rows = (LOYALTY_HEADER, LOYALTY_ROWS) if table == "loyalty" else (ACTIVITY_HEADER, ACTIVITY_ROWS)
    position = header.split(",").index(column)
    drop = lambda line: ",".join(value for index, value in enumerate(line.split(",")) if index != position)
    broken = SourceFile(f"{table}/dt=2026-11-27/part-1.csv", csv_bytes(drop(header), [drop(row) for row in rows]))
    files = ([broken], [activity_file()]) if table == "loyalty" else ([loyalty_file()], [broken])

    with pytest.raises(DropError) as raised:
        ingest_files(*files)

    assert str(raised.value).startswith(f"{table}/dt=2026-11-27/part-1.csv: missing required column '{column}'")


def test_only_one_optional_flight_column_is_a_missing_column():
    header = ACTIVITY_HEADER.replace(",Flights with Companions", "")
    rows = [",".join(row.split(",")[:4] + row.split(",")[5:]) for row in ACTIVITY_ROWS]
    with pytest.raises(DropError, match="a.csv: missing required column 'Flights with Companions'"):
        ingest_files([loyalty_file()], [SourceFile("a.csv", csv_bytes(header, rows))])


AGAIN = "re-export the file and land it again"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (SourceFile("a.csv", b""), f"a.csv: empty file (no header row): {AGAIN}"),
        (SourceFile("a.csv", b"\xef\xbb\xbf\r\n"), f"a.csv: empty file (no header row): {AGAIN}"),
        (SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER, [])), f"a.csv: empty file (no data rows, only the header): {AGAIN}"),
        (SourceFile("a.csv", bytes(range(256)) * 4), "a.csv: row 1, column #2: invalid UTF-8 byte 0x80; the file is not UTF-8 "
         "(a Latin-1 or Windows-1252 export?): re-export it as UTF-8 and land it again"),
        (SourceFile("a.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "a.csv: row 0 (header): not UTF-8 text ('utf-8' codec can't "
         "decode byte 0x89 in position 0: invalid start byte): re-export the file as UTF-8 and land it again"),
        (SourceFile("a.csv", b"id;when;what\r\n1;2;3\r\n"), "a.csv: the header has no commas but holds ';': the file looks "
         "';'-delimited; re-export it comma-separated and land it again"),
        (SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER, ["1,2,3"])), "a.csv: unreadable file: not a valid CSV file (CSV parse "
         f"error: Expected 10 columns, got 3: 1,2,3): {AGAIN}"),
        (SourceFile("a.csv.gz", b"not gzip at all"), "a.csv.gz: unreadable file: not a valid gzip stream (Not a gzipped file "
         f"(b'no')); the file is damaged or cut short: {AGAIN}"),
        (SourceFile("a.csv.gz", gzip.compress(csv_bytes(ACTIVITY_HEADER, ACTIVITY_ROWS))[:40]), "a.csv.gz: unreadable file: not "
         "a valid gzip stream (Compressed file ended before the end-of-stream marker was reached); the file is damaged or "
         f"cut short: {AGAIN}"),
        (SourceFile("a.parquet", b"PAR1garbagePAR1"), "a.parquet: unreadable file: not a valid Parquet file (Could not open "
         "Parquet input source '<Buffer>': Parquet file size is 15 bytes, smaller than the size reported by footer's "
         f"(1701273954bytes)): {AGAIN}"),
        (SourceFile("a.xlsx", csv_bytes(ACTIVITY_HEADER, ACTIVITY_ROWS)), "a.xlsx: unsupported file type: land .csv, .csv.gz "
         "or .parquet files"),
    ],
    ids=["zero-bytes", "bom-only", "header-only", "garbage-bytes", "binary-header", "foreign-header", "ragged-row", "bad-gzip",
         "truncated-gzip", "bad-parquet", "unknown-suffix"],
)  # fmt: skip
def test_unreadable_or_empty_file_is_a_one_line_drop_error_naming_the_file(source, message):
    with pytest.raises(DropError) as raised:
        ingest_files([loyalty_file()], [source])
    assert str(raised.value) == message


def _corrupt_crc(data: bytes) -> bytes:
    """A gzip stream whose CRC-32 trailer no longer matches its content."""
    return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (SourceFile("a.csv.gz", _corrupt_crc(gzip.compress(csv_bytes(ACTIVITY_HEADER, ACTIVITY_ROWS)))),
         f"a.csv.gz: unreadable file: not a valid gzip stream (CRC check failed); the file is damaged or cut short: {AGAIN}"),
        (SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER, ACTIVITY_ROWS) + "480934,2017,3,1,0,1,1é,10,0,0\r\n".encode("latin-1")),
         "a.csv: row 6, column 'Distance': invalid UTF-8 byte 0xe9; the file is not UTF-8 (a Latin-1 or Windows-1252 "
         "export?): re-export it as UTF-8 and land it again"),
        (SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER, [*ACTIVITY_ROWS[:2], "", f"480934,2017,3,1,0,1,{'9' * 200_000},10,0,0"])),
         "a.csv: row 3, column 'Distance': a field of 200,000 bytes is over the 131,072-byte limit; the file is damaged "
         f"(a lost quote or line break?): {AGAIN}"),
        (SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER, [f"480934,2017,3,1,0,1,1,\"{'x' * 140_000}\",0,0"])),
         "a.csv: row 1, column 'Points Accumulated': a field of 140,000 bytes is over the 131,072-byte limit; the file is "
         f"damaged (a lost quote or line break?): {AGAIN}"),
        (SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER + "," + "x" * 140_000, ACTIVITY_ROWS)),
         f"a.csv: row 0 (header) has 140,155 bytes, over the 131,072-byte field limit; the file is damaged: {AGAIN}"),
    ],
    ids=["gzip-crc", "latin-1-data-row", "long-field-after-blank-line", "long-quoted-field", "long-header"],
)  # fmt: skip
def test_damaged_file_error_names_row_and_column(source, message):
    with pytest.raises(DropError) as raised:
        ingest_files([loyalty_file()], [source])
    assert str(raised.value) == message


def test_drop_error_is_always_one_line():
    assert str(DropError("a.csv: first\r\n  second\tthird")) == "a.csv: first second third"


def test_partition_without_files_names_the_folder():
    with pytest.raises(DropError, match=r"^landing/loyalty_history/dt=2026-11-27: partition has no files$"):
        ingest_files([], [activity_file()], loyalty_folder="landing/loyalty_history/dt=2026-11-27")
    with pytest.raises(DropError, match=r"^flight_activity: partition has no files$"):
        ingest_files([loyalty_file()], [])


def test_duplicate_header_is_a_drop_error():
    header = LOYALTY_HEADER + ",loyalty_number"
    rows = [row + "," + row.split(",")[0] for row in LOYALTY_ROWS]
    with pytest.raises(DropError, match=r"l.csv: column 'Loyalty Number' appears more than once"):
        ingest_files([SourceFile("l.csv", csv_bytes(header, rows))], [activity_file()])


def test_split_files_of_different_activity_variants_are_a_drop_error():
    rows_8 = [",".join(row.split(",")[:3] + row.split(",")[5:]) for row in ACTIVITY_ROWS]
    parts = [activity_file(name="part-1.csv"), SourceFile("part-2.csv", csv_bytes(ACTIVITY_HEADER_8, rows_8))]
    with pytest.raises(DropError, match="part-2.csv: columns .* differ from part-1.csv"):
        ingest_files([loyalty_file()], parts)


# ---------------------------------------------------------------- quarantine rules


@pytest.mark.parametrize(
    ("bad_row", "column", "reason"),
    [
        ("48O934,2017,3,1,0,1,100,10,0,0", "Loyalty Number", "non_numeric_value"),
        (",2017,3,1,0,1,100,10,0,0", "Loyalty Number", "missing_key"),
        ("480934,0,3,1,0,1,100,10,0,0", "Year", "missing_key"),
        ("480934,2017,13,1,0,1,100,10,0,0", "Month", "month_out_of_range"),
        ("480934,2017,3,-2,0,-2,100,10,0,0", "Flights Booked", "negative_value"),
        ("480934,2017,3,1,0,1,-100,10,0,0", "Distance", "negative_value"),
        ("480934,2017,3,1.5,0,1.5,100,10,0,0", "Flights Booked", "non_integer_value"),
        ("480934,2017,3,1,0,1,,10,0,0", "Distance", "missing_value"),
        ("480934,2017,3,2,1,5,100,10,0,0", "Total Flights", "inconsistent_total"),
        ("999999,2017,3,1,0,1,100,10,0,0", "Loyalty Number", "unknown_member"),
        ("480934,2017,abc,1,0,1,-100,10,0,0", "Month", "non_numeric_value"),  # first failing column wins
        ("480934,2017,3,1,0,1,100,1000000000000,0,0", "Points Accumulated", "implausible_value"),
        ("480934,2017,3,1,0,1,1000000000000000,10,0,0", "Distance", "implausible_value"),
        ("480934,2017,3,501,0,501,100,10,0,0", "Flights Booked", "implausible_value"),
        ("480934,2017,3,1,0,1,100,10,0,100001", "Dollar Cost Points Redeemed", "implausible_value"),
        ("480934,1949,3,1,0,1,100,10,0,0", "Year", "implausible_value"),
        ("480934,2019,1,1,0,1,100,10,0,0", "Year", "after_drop_date"),  # the drop is dated 2018-12-31
        ("480934,2099,1,1,0,1,1e15,10,0,0", "Distance", "implausible_value"),  # per-value rules come first
    ],
)
def test_bad_activity_row_is_quarantined_with_its_reason(bad_row, column, reason):
    result = ingest(LOYALTY_ROWS, [*ACTIVITY_ROWS[:2], bad_row, *ACTIVITY_ROWS[2:]])
    quarantine = quarantined(result, "flight_activity")

    assert quarantine[["source_file", "row_number", "column", "reason"]].values.tolist() == [
        ["flight_activity/dt=2018-12-31/part-1.csv", 3, column, reason]
    ]
    assert list(json.loads(quarantine.loc[0, "raw_values"]).values()) == bad_row.split(",")
    pd.testing.assert_frame_equal(result.activity, ingest().activity)
    assert result.stats["quarantined_by_reason"] == {reason: 1}
    assert reason in QUARANTINE_REASONS
    assert result.stats["quarantine_share"] == pytest.approx(1 / (4 + 6))


@pytest.mark.parametrize(
    ("bad_row", "column", "reason"),
    [
        ("x1,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,5,,", "Loyalty Number", "non_numeric_value"),
        ("-5,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,5,,", "Loyalty Number", "negative_value"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,13,,", "Enrollment Month", "month_out_of_range"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,,Standard,2015,5,,", "CLV", "missing_value"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,5,2014,3", "Cancellation Year", "cancellation_before_enrollment"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,5,2016,", "Cancellation Month", "cancellation_incomplete"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,5,0,4", "Cancellation Year", "cancellation_incomplete"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,5,2016,0", "Cancellation Month", "cancellation_incomplete"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,20000000,Single,Nova,5000,Standard,2015,5,,", "Salary", "implausible_value"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,-10000001,Single,Nova,5000,Standard,2015,5,,", "Salary", "implausible_value"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,1e8,Standard,2015,5,,", "CLV", "implausible_value"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,15,5,,", "Enrollment Year", "implausible_value"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2099,5,,", "Enrollment Year", "after_drop_date"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2019,1,,", "Enrollment Year", "after_drop_date"),
        ("700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Master,90000,Single,Nova,5000,Standard,2015,5,2019,1", "Cancellation Year", "after_drop_date"),
    ],
)  # fmt: skip
def test_bad_loyalty_row_is_quarantined_with_its_reason(bad_row, column, reason):
    result = ingest([*LOYALTY_ROWS, bad_row], ACTIVITY_ROWS)
    quarantine = quarantined(result, "loyalty_history")

    assert quarantine[["row_number", "column", "reason"]].values.tolist() == [[5, column, reason]]
    assert reason in QUARANTINE_REASONS
    assert json.loads(quarantine.loc[0, "raw_values"])["Loyalty Number"] == bad_row.split(",")[0]
    pd.testing.assert_frame_equal(result.loyalty, ingest().loyalty)


def test_values_at_the_plausible_bounds_and_in_the_drop_month_are_accepted():
    loyalty_rows = [
        *LOYALTY_ROWS,
        "700001,Canada,Ontario,Toronto,M2Z 4K1,Male,Doctor,-10000000,Single,Nova,10000000,Standard,1950,1,2018,12",
        "700002,Canada,Ontario,Toronto,M2Z 4K1,Male,Doctor,10000000,Single,Nova,0,Standard,2018,12,,",
    ]
    activity_rows = [
        *ACTIVITY_ROWS,
        "700001,1950,1,500,0,500,1000000,1000000,1000000,100000",
        "700002,2018,12,0,500,500,0,0,0,0",  # the drop's own month is month-to-date, not after the drop
    ]
    result = ingest(loyalty_rows, activity_rows)

    assert result.quarantine.empty
    assert len(result.loyalty) == 6 and len(result.activity) == 7


@pytest.mark.parametrize("drop_date", [DROP_DATE, date(2018, 12, 31), pd.Timestamp("2018-12-31 02:00")])
def test_drop_date_is_a_date_or_an_iso_string(drop_date):
    activity = activity_file([*ACTIVITY_ROWS, "480934,2019,1,1,0,1,100,10,0,0"])
    result = ingest_drop([loyalty_file()], [activity], drop_date=drop_date)
    assert result.stats["quarantined_by_reason"] == {"after_drop_date": 1}
    assert result.stats["drop_date"] == "2018-12-31"


def test_readme_shows_the_plausible_ranges_of_the_code():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    table = plausible_ranges_markdown()
    assert table in readme
    assert all(f"| {column} " in table for column in PLAUSIBLE_RANGES)


def test_activity_of_a_quarantined_member_is_quarantined_as_unknown_member():
    rows = [*LOYALTY_ROWS[:3], LOYALTY_ROWS[3].replace(",2018,3,,", ",2018,3,2017,1")]
    result = ingest(rows, ACTIVITY_ROWS)

    assert result.quarantine[["table", "row_number", "reason"]].values.tolist() == [
        ["loyalty_history", 4, "cancellation_before_enrollment"],
        ["flight_activity", 5, "unknown_member"],
    ]
    assert 611765 not in result.activity["loyalty_number"].tolist()


def test_every_copy_of_a_duplicated_member_is_quarantined():
    copy = LOYALTY_ROWS[0].replace("83236", "90000")
    result = ingest([*LOYALTY_ROWS, copy], ACTIVITY_ROWS)

    assert quarantined(result, "loyalty_history")[["row_number", "reason"]].values.tolist() == [
        [1, "duplicate_member"],
        [5, "duplicate_member"],
    ]
    assert 480934 not in result.loyalty["loyalty_number"].tolist()
    assert quarantined(result, "flight_activity")["reason"].tolist() == ["unknown_member", "unknown_member"]
    assert result.stats["quarantined_by_reason"] == {"duplicate_member": 2, "unknown_member": 2}


# ---------------------------------------------------------------- duplicates and flags


def test_exact_activity_duplicates_are_dropped_and_counted():
    rows = [*ACTIVITY_ROWS, ACTIVITY_ROWS[0], ACTIVITY_ROWS[0], "549612,2017,1,0,0,0,0.0,0,0,0"]
    result = ingest(LOYALTY_ROWS, rows)

    pd.testing.assert_frame_equal(result.activity, ingest().activity)
    assert result.stats["exact_duplicates_dropped"] == 3
    assert result.stats["conflicting_keys_resolved"] == 0
    assert result.stats["conflicting_rows_dropped"] == 0
    assert result.quarantine.empty


def test_conflicting_activity_duplicates_keep_most_flights_then_distance_then_points_then_first():
    rows = [
        "480934,2017,5,3,0,3,900,90,0,0",
        "480934,2017,5,4,0,4,100,10,0,0",  # most flights wins
        "549612,2017,5,2,0,2,500,50,0,0",
        "549612,2017,5,2,0,2,700,60,0,0",  # same flights, most distance wins
        "429460,2017,5,2,0,2,700,60,0,0",
        "429460,2017,5,2,0,2,700,70,0,0",  # same flights and distance, most points wins
        "611765,2018,5,1,0,1,100,10,5,1",  # all three tie: first in file order wins
        "611765,2018,5,1,0,1,100,10,0,0",
        "611765,2018,5,1,0,1,100,10,0,0",  # an exact copy of the row above
    ]
    result = ingest(LOYALTY_ROWS, rows)

    kept = result.activity[["loyalty_number", "total_flights", "distance", "points_accumulated", "points_redeemed"]]
    assert kept.values.tolist() == [
        [429460, 2, 700.0, 70.0, 0.0],
        [480934, 4, 100.0, 10.0, 0.0],
        [549612, 2, 700.0, 60.0, 0.0],
        [611765, 1, 100.0, 10.0, 5.0],
    ]
    assert result.stats["exact_duplicates_dropped"] == 1
    assert result.stats["conflicting_keys_resolved"] == 4
    assert result.stats["conflicting_rows_dropped"] == 4


def test_negative_salary_unknown_category_and_flights_before_enrollment_are_kept_and_flagged():
    loyalty_rows = [
        LOYALTY_ROWS[0].replace("83236", "-58486"),
        LOYALTY_ROWS[1].replace(",Male,", ",M,"),
        LOYALTY_ROWS[2],
        LOYALTY_ROWS[3],
    ]
    activity_rows = [
        *ACTIVITY_ROWS,
        "611765,2018,1,2,0,2,400,40,0,0",  # enrolled 2018-03: flights before enrollment
        "611765,2018,2,0,0,0,0,0,0,0",  # no flights before enrollment: not flagged
        "611765,2018,3,1,0,1,100,10,0,0",  # the enrollment month itself
    ]
    result = ingest(loyalty_rows, activity_rows)
    loyalty = result.loyalty.set_index("loyalty_number")
    activity = result.activity.set_index(["loyalty_number", "year", "month"])

    assert loyalty.loc[480934, "salary"] == -58486.0
    assert loyalty["flag_negative_salary"].to_dict() == {429460: False, 480934: True, 549612: False, 611765: False}
    assert loyalty.loc[549612, "gender"] == "M"
    assert loyalty["flag_unknown_category"].to_dict() == {429460: False, 480934: False, 549612: True, 611765: False}
    assert activity["flag_before_enrollment"][activity["flag_before_enrollment"]].index.tolist() == [(611765, 2018, 1)]
    assert result.stats["negative_salary"] == 1
    assert result.stats["unknown_category"] == 1
    assert result.stats["unknown_category_by_column"]["Gender"] == 1
    assert result.stats["flights_before_enrollment"] == 1
    assert result.quarantine.empty


def test_stats_are_json_serialisable():
    result = ingest(LOYALTY_ROWS, [*ACTIVITY_ROWS, ACTIVITY_ROWS[0], "480934,2017,13,0,0,0,0,0,0,0"])

    restored = json.loads(json.dumps(result.stats))

    assert restored["quarantined_rows"] == 1
    assert restored["quarantined_by_reason"] == {"month_out_of_range": 1}
    assert restored["exact_duplicates_dropped"] == 1
    assert restored["quarantine_share"] == pytest.approx(1 / 11)
    assert restored["rows_written"] == {"loyalty_history": 4, "flight_activity": 5}
