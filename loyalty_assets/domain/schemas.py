"""Canonical column types of the raw tables (docs/design.md), and a check against them."""

from __future__ import annotations

import pandas as pd

LOYALTY_HISTORY_SCHEMA: dict[str, str] = {
    "loyalty_number": "int64",
    "country": "object",
    "province": "object",
    "city": "object",
    "postal_code": "object",
    "gender": "object",
    "education": "object",
    "salary": "float64",
    "marital_status": "object",
    "loyalty_card": "object",
    "clv": "float64",
    "enrollment_type": "object",
    "enrollment_year": "int64",
    "enrollment_month": "int64",
    "cancellation_year": "Int64",
    "cancellation_month": "Int64",
    "flag_negative_salary": "bool",
    "flag_unknown_category": "bool",
}

FLIGHT_ACTIVITY_SCHEMA: dict[str, str] = {
    "loyalty_number": "int64",
    "year": "int64",
    "month": "int64",
    "flights_booked": "Int64",
    "flights_with_companions": "Int64",
    "total_flights": "int64",
    "distance": "float64",
    "points_accumulated": "float64",
    "points_redeemed": "float64",
    "dollar_cost_points_redeemed": "float64",
    "flag_before_enrollment": "bool",
}

QUARANTINE_SCHEMA: dict[str, str] = {
    "source_file": "object",
    "row_number": "int64",
    "table": "object",
    "column": "object",
    "reason": "object",
    "raw_values": "object",
}

SCHEMAS = {
    "loyalty_history": LOYALTY_HISTORY_SCHEMA,
    "flight_activity": FLIGHT_ACTIVITY_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
}


def schema_violations(frame: pd.DataFrame, table: str) -> list[str]:
    """Columns that are missing or of another type than the contract's, as readable lines."""
    expected = SCHEMAS[table]
    problems = [f"missing column {name}" for name in expected if name not in frame.columns]
    problems += [
        f"column {name} is {frame[name].dtype}, expected {dtype}"
        for name, dtype in expected.items()
        if name in frame.columns and str(frame[name].dtype) not in (dtype, "string" if dtype == "object" else dtype)
    ]
    return problems
