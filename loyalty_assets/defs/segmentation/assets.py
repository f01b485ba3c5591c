"""Quarterly segmentation: a gated K-Means candidate and the promoted champion scoring reads."""

import json

import dagster as dg
import pandas as pd
from pydantic import Field

from loyalty_assets.defs.drops import RAW_DROP_INS, latest_drop
from loyalty_assets.defs.metadata import significant
from loyalty_assets.defs.partitions import quarterly_partitions
from loyalty_assets.defs.promotion import PromotionConfig, promote
from loyalty_assets.defs.storage import LAZY_PARTITIONS, LakeResource, read_champion
from loyalty_assets.domain import registry
from loyalty_assets.domain.churn import data_fingerprint
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
    group_name="models",
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
    report = match_to_champion(model, champion["model"], features) if champion else None
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

    fingerprint = data_fingerprint(features)
    version = registry.make_version(context.partition_key, fingerprint, config.model_dump())
    record = {
        "source_partition": context.partition_key,
        "source_drop": drop_date.isoformat(),
        "training_window": {"snapshot": str(snapshot.date())},
        "metrics": {
            "silhouette": model.silhouette,
            "adjusted_rand_vs_champion": report.adjusted_rand if report else None,
            "jaccard_vs_champion": report.jaccard if report else None,
        },
        "feature_list": list(model.engagement_columns),
        "names": {str(index): name for index, name in model.names.items()},
        # What the marketing e-mail shows per segment (to_json: NaN becomes null).
        "segment_profile": json.loads(profile_table.reset_index().to_json(orient="records")),
        "churn_basis": churn_basis,
        "champion_version": champion["version"] if champion else None,
        "data_fingerprint": fingerprint,
        "library_versions": registry.library_versions(),
        "config": config.model_dump(),
    }
    bundle = {"kind": "segmentation", "version": version, "model": model, "report": report, "record": record}
    registry.register(lake.store(), "segmentation", version, bundle, record)
    segments = assign_segments(model, features)
    return dg.Output(
        bundle,
        metadata={
            "version": version,
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


@dg.asset(
    ins={"segmentation_model_candidate": dg.AssetIn(metadata=LAZY_PARTITIONS)},
    io_manager_key="model_io_manager",
    group_name="models",
    kinds={"scikit-learn"},
    owners=OWNERS,
    output_required=False,
)
def segmentation_model(
    context: dg.AssetExecutionContext, config: PromotionConfig, segmentation_model_candidate, lake: LakeResource
):
    """The promoted segmentation (scaler, K-Means and name map): the only one scoring reads. It
    materializes only after every blocking gate on its candidate passed, and never moves back in
    training-data time by itself."""
    yield from promote(context, "segmentation", SEGMENTATION_GATES, config, segmentation_model_candidate, lake)
