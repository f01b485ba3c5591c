"""Airline loyalty churn prediction and segmentation as Dagster assets."""

from loyalty_assets.definitions import defs

__all__ = ["defs"]
