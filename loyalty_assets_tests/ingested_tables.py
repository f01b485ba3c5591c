"""Hand-built rows of the ingested tables (raw_loyalty_history, raw_flight_activity; design.md
schemas), for the domain tests of features and labels."""

from __future__ import annotations

import pandas as pd


def member(loyalty_number, enrolled, card="Star", enrollment_type="Standard", cancelled=None, **attributes) -> dict:
    """A raw_loyalty_history row; ``enrolled`` and ``cancelled`` are (year, month); ``attributes`` override columns."""
    return {
        "loyalty_number": loyalty_number,
        "country": "Canada",
        "province": "Ontario",
        "city": "Toronto",
        "postal_code": "M2Z 4K1",
        "gender": "Female",
        "education": "Bachelor",
        "salary": 83236.0,
        "marital_status": "Married",
        "loyalty_card": card,
        "clv": 3839.14,
        "enrollment_type": enrollment_type,
        "enrollment_year": enrolled[0],
        "enrollment_month": enrolled[1],
        "cancellation_year": None if cancelled is None else cancelled[0],
        "cancellation_month": None if cancelled is None else cancelled[1],
        "flag_negative_salary": False,
        "flag_unknown_category": False,
    } | attributes


def loyalty_frame(members: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(members)
    for column in ("cancellation_year", "cancellation_month"):
        frame[column] = frame[column].astype("Int64")
    return frame


def activity_row(
    loyalty_number, month, flights, companions=0, distance=0.0, points=0.0, redeemed=0.0, cost=0.0
) -> dict:
    """A raw_flight_activity row of ``month``: ``flights`` in total, ``companions`` of them with companions."""
    month = pd.Timestamp(month)
    return {
        "loyalty_number": loyalty_number,
        "year": month.year,
        "month": month.month,
        "flights_booked": flights - companions,
        "flights_with_companions": companions,
        "total_flights": flights,
        "distance": float(distance),
        "points_accumulated": float(points),
        "points_redeemed": float(redeemed),
        "dollar_cost_points_redeemed": float(cost),
        "flag_before_enrollment": False,
    }


def activity_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in ("flights_booked", "flights_with_companions"):
        frame[column] = frame[column].astype("Int64")
    return frame
