"""The Dagster layer: one folder per asset group, in the order the data flows (ingestion, features, models,
predictions, distribution, monitoring, experiments), beside automation/ and resources/."""

import warnings

import dagster as dg

# Per-partition asset checks (``@asset_check(partitions_def=...)``, preview) and partition mappings
# that allow windows reaching past today (beta) are used on purpose; see defs/ingestion/drops.py.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)
