"""Small landing drops in the real file format (UTF-8 BOM, CRLF, original headers), for tests."""

from __future__ import annotations

import pandas as pd

from loyalty_assets.domain.drop_commits import commit_drop
from loyalty_assets.domain.lake_keys import table_version_key
from loyalty_assets.domain.storage import ObjectStore, dataframe_to_parquet_bytes

LOYALTY_HEADER = (
    "Loyalty Number,Country,Province,City,Postal Code,Gender,Education,Salary,Marital Status,Loyalty Card,"
    "CLV,Enrollment Type,Enrollment Year,Enrollment Month,Cancellation Year,Cancellation Month"
)
ACTIVITY_HEADER = (
    "Loyalty Number,Year,Month,Flights Booked,Flights with Companions,Total Flights,Distance,"
    "Points Accumulated,Points Redeemed,Dollar Cost Points Redeemed"
)


def member_row(number: int, enrolled=(2016, 3), cancelled=("", ""), card="Star", education="Bachelor") -> str:
    salary = "" if education == "College" else "72000"
    return (
        f"{number},Canada,Ontario,Toronto,M2Z 4K1,Female,{education},{salary},Married,{card},4800.5,Standard,"
        f"{enrolled[0]},{enrolled[1]},{cancelled[0]},{cancelled[1]}"
    )


def activity_row(number: int, year: int, month: int, booked: int = 4, companions: int = 1) -> str:
    total = booked + companions
    distance = total * 240
    return f"{number},{year},{month},{booked},{companions},{total},{distance},{distance / 10:g},0,0"


def csv_bytes(header: str, rows: list[str]) -> bytes:
    return ("\ufeff" + "\r\n".join([header, *rows]) + "\r\n").encode("utf-8")


def write_drop(store: ObjectStore, drop_date: str, members: list[str], activity: list[str]) -> None:
    store.put_bytes(f"loyalty_history/dt={drop_date}/customer_loyalty_history.csv", csv_bytes(LOYALTY_HEADER, members))
    store.put_bytes(
        f"flight_activity/dt={drop_date}/customer_flight_activity.csv", csv_bytes(ACTIVITY_HEADER, activity)
    )


def small_drop(store: ObjectStore, drop_date: str, members: int = 20, months: int = 6) -> None:
    """``members`` members flying every month of the ``months`` months before the drop's year-month."""
    year, month = int(drop_date[:4]), int(drop_date[5:7])
    month_list = [
        ((year * 12 + month - 1 - back) // 12, (year * 12 + month - 1 - back) % 12 + 1) for back in range(months, 0, -1)
    ]
    write_drop(
        store,
        drop_date,
        [member_row(100000 + index) for index in range(members)],
        [activity_row(100000 + index, y, m) for index in range(members) for y, m in month_list],
    )


def put_committed_drop(store: ObjectStore, drop_date: str, loyalty: pd.DataFrame) -> None:
    """A committed drop in the lake holding ``loyalty`` (for readers of a drop's loyalty history only)."""
    empty = pd.DataFrame()
    tables = {"raw_loyalty_history": loyalty, "raw_flight_activity": empty, "raw_quarantine": empty}
    for table, frame in tables.items():
        store.put_bytes(table_version_key(table, drop_date, "test"), dataframe_to_parquet_bytes(frame))
    commit_drop(store, drop_date, "test", {})
