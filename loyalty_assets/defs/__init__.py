"""The Dagster layer: one folder per domain (ingestion, features, churn, segmentation, scoring, ...)."""

import warnings

import dagster as dg

# Per-partition asset checks (``@asset_check(partitions_def=...)``) are a preview API in Dagster 1.13;
# we use them on purpose so a gate loads only its own partition.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
