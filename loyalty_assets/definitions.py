"""Assembles the domains into one code location."""

from __future__ import annotations

import dagster as dg

from loyalty_assets.defs.ingestion.assets import raw_loyalty_tables
from loyalty_assets.environment import resources_for
from loyalty_assets.settings import load_settings

settings = load_settings()

defs = dg.Definitions(
    assets=[raw_loyalty_tables],
    resources=resources_for(settings),
)
