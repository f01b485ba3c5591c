"""Data-quality gates on a feature table, evaluated in the asset before anything is written."""

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from loyalty_assets.defs.gates import check_result
from loyalty_assets.domain.features import MODEL_FEATURE_SPECS, MODEL_FEATURES
from loyalty_assets.domain.labels import eligible_member_counts

NULLABLE_BY_DESIGN = [feature.name for feature in MODEL_FEATURE_SPECS if "NaN" in feature.formula]
"""Ratios undefined without flights, redemptions or companion data, empty salaries and unknown
category values of the member attributes (see the README)."""

NON_NEGATIVE = [
    name for name in MODEL_FEATURES if not any(word in name for word in ("change", "minus", "slope", "salary_amount"))
]
"""Salaries may be negative: the loader keeps and flags them."""


class FeatureCheckConfig(dg.Config):
    max_null_share: float = Field(
        default=0.0, description="Largest null share for features that are always defined (ratios are exempt)."
    )


def feature_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec("no_infinite_values", asset=asset, blocking=True, description="No feature is ±inf."),
        dg.AssetCheckSpec(
            "null_share_within_limit",
            asset=asset,
            blocking=True,
            description="Features that are always defined have a null share at or below the limit.",
        ),
        dg.AssetCheckSpec(
            "one_row_per_eligible_member",
            asset=asset,
            blocking=True,
            description="Each snapshot has exactly one row per member eligible at that month-end.",
        ),
        dg.AssetCheckSpec(
            "plausible_ranges",
            asset=asset,
            blocking=True,
            description="Counts, sums and tenure are never negative.",
        ),
    ]


def feature_table_checks(
    asset: str, features: pd.DataFrame, loyalty: pd.DataFrame, config: FeatureCheckConfig
) -> list[dg.AssetCheckResult]:
    values = features[MODEL_FEATURES].to_numpy(dtype="float64")
    infinite = [name for name, count in zip(MODEL_FEATURES, np.isinf(values).sum(axis=0)) if count]
    null_share = features[MODEL_FEATURES].isna().mean()
    too_null = [
        f"{name} {share:.1%}"
        for name, share in null_share.items()
        if name not in NULLABLE_BY_DESIGN and share > config.max_null_share
    ]
    expected = eligible_member_counts(loyalty, sorted(features["snapshot_month"].unique()))
    actual = features.groupby("snapshot_month")["loyalty_number"].nunique()
    rows = features.groupby("snapshot_month").size()
    wrong_counts = [
        f"{pd.Timestamp(month).date()}: {rows.get(month, 0)} rows for {count} eligible members"
        for month, count in expected.items()
        if rows.get(month, 0) != count or actual.get(month, 0) != count
    ]
    negative = [name for name in NON_NEGATIVE if (features[name] < 0).any()]
    return [
        check_result(asset, "no_infinite_values", [f"infinite values in {', '.join(infinite)}"] if infinite else []),
        check_result(
            asset,
            "null_share_within_limit",
            [f"null share above {config.max_null_share:.1%}: {', '.join(too_null)}"] if too_null else [],
            {"max_null_share": float(null_share.max()) if len(null_share) else 0.0},
        ),
        check_result(asset, "one_row_per_eligible_member", wrong_counts),
        check_result(asset, "plausible_ranges", [f"negative values in {', '.join(negative)}"] if negative else []),
    ]
