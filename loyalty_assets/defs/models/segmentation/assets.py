"""Quarterly segmentation: a gated K-Means candidate and the promoted champion scoring reads."""

import dagster as dg
import pandas as pd
from pydantic import Field

from loyalty_assets.defs.ingestion.drops import RAW_DROP_INS, latest_drop
from loyalty_assets.defs.metadata import significant
from loyalty_assets.defs.models.promotion import champion_asset
from loyalty_assets.defs.partitions import quarterly_partitions
from loyalty_assets.defs.resources.storage import LakeResource, read_champion
from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import segmentation_bundle
from loyalty_assets.domain.figures import png_markdown
from loyalty_assets.domain.features import build_features, last_complete_month
from loyalty_assets.domain.labels import add_churn_labels
from loyalty_assets.domain.segmentation import (
    SegmentationConfig,
    assign_segments,
    fit_segmentation,
    match_to_champion,
    segment_plot_png,
    segment_profile_markdown,
    segment_profile_table,
)

OWNERS = ["team:ml-engineering"]
SEGMENTATION_GATES = ["silhouette", "segment_size", "naming_rules", "champion_agreement"]
CHURN_OBSERVATION_MONTHS = 3


class SegmentationCandidateConfig(dg.Config):
    seed: int = 42
    n_init: int = 10
    silhouette_sample_size: int = 5000
    max_road_warriors_share: float = Field(
        default=SegmentationConfig.max_road_warriors_share,
        description="Naming rule: Road Warriors are a top band, at most this share of the members.",
    )


@dg.asset(
    partitions_def=quarterly_partitions,
    ins=RAW_DROP_INS,
    io_manager_key="model_io_manager",
    kinds={"scikit-learn"},
    owners=OWNERS,
)
def segmentation_model_candidate(
    context: dg.AssetExecutionContext,
    config: SegmentationCandidateConfig,
    raw_loyalty_history,
    raw_flight_activity,
    lake: LakeResource,
) -> dg.Output:
    """StandardScaler + K-Means (k=3) on engagement as of the last complete month of the quarter's
    latest drop; members without a flight in 12 months are Dabblers by rule. Names come from rules
    on the centroids and, once a champion exists, from Hungarian matching to its centroids."""
    drop_date, loyalty, activity = latest_drop(context, raw_loyalty_history, raw_flight_activity)
    snapshot = last_complete_month(drop_date)
    features = build_features(loyalty, activity, [snapshot])
    model = fit_segmentation(
        features,
        SegmentationConfig(
            seed=config.seed,
            n_init=config.n_init,
            silhouette_sample_size=config.silhouette_sample_size,
            max_road_warriors_share=config.max_road_warriors_share,
        ),
    )
    champion = read_champion(lake, "segmentation_model")
    report = match_to_champion(model, champion.model, features) if champion else None
    if report is not None:
        model = report.candidate

    # Observed churn per segment: segments assigned at an earlier snapshot whose labels have matured.
    observed_at = snapshot - pd.DateOffset(months=CHURN_OBSERVATION_MONTHS)
    past = build_features(loyalty, activity, [observed_at])
    past_labels = add_churn_labels(past, loyalty, CHURN_OBSERVATION_MONTHS, snapshot)
    past_segments, churned = assign_segments(model, past_labels), past_labels["churned"]
    churn_basis = (
        f"realised: the share of each segment's members on {observed_at.date()} who cancelled within "
        f"{CHURN_OBSERVATION_MONTHS} months"
    )
    profile_md = segment_profile_markdown(model.profile, past_segments, churned, churn_basis)
    profile_table = segment_profile_table(model.profile, past_segments, churned)

    bundle = segmentation_bundle(
        model,
        report,
        features,
        source_partition=context.partition_key,
        source_drop=drop_date,
        champion_version=champion.version if champion else None,
        profile=profile_table,
        churn_basis=churn_basis,
        settings=config.model_dump(),
    )
    registry.register_bundle(lake.store(), bundle)
    segments = assign_segments(model, features)
    return dg.Output(
        bundle,
        metadata={
            "version": bundle.version,
            "snapshot": str(snapshot.date()),
            "members": len(features),
            "silhouette": significant(float(model.silhouette)),
            "adjusted_rand_vs_champion": significant(float(report.adjusted_rand)) if report else float("nan"),
            "stability": report.message if report else "first segmentation: no champion to match",
            "segment_profile": dg.MetadataValue.md(profile_md),
            "segments_plot": dg.MetadataValue.md(
                png_markdown(segment_plot_png(features, segments), "flights vs distance per flight by segment")
            ),
        },
    )


segmentation_model = champion_asset(
    "segmentation",
    SEGMENTATION_GATES,
    OWNERS,
    """The promoted segmentation (scaler, K-Means and name map): the only one scoring reads. It
materializes only after every blocking gate on its candidate passed, and never moves back in
training-data time by itself.""",
)
