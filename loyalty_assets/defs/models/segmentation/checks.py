"""Blocking promotion gates on ``segmentation_model_candidate``: one check per gate, ERROR severity."""

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.models.promotion import gate_verdict, promotion_gate
from loyalty_assets.defs.models.segmentation.assets import segmentation_model_candidate
from loyalty_assets.defs.partitions import quarterly_partitions
from loyalty_assets.defs.resources.storage import LakeResource, read_champion
from loyalty_assets.domain.bundles import SegmentationBundle
from loyalty_assets.domain.segmentation import (
    SegmentationGateConfig,
    agreement_gate,
    naming_gate,
    silhouette_gate,
    size_gate,
)

DEFAULTS = SegmentationGateConfig()


class SilhouetteConfig(dg.Config):
    min_silhouette: float = Field(default=DEFAULTS.min_silhouette, description="Lowest silhouette (sampled).")
    max_silhouette_drop: float = Field(
        default=DEFAULTS.max_silhouette_drop, description="How much below the champion's silhouette is tolerated."
    )


class SegmentSizeConfig(dg.Config):
    min_segment_share: float = Field(default=DEFAULTS.min_segment_share, description="Smallest segment share.")


class AgreementConfig(dg.Config):
    min_champion_ari: float = Field(
        default=DEFAULTS.min_champion_ari, description="Lowest adjusted Rand index against the champion's labels."
    )


def _verdict(lake: LakeResource, bundle: SegmentationBundle, gate: str, result, **metadata) -> dg.AssetCheckResult:
    return gate_verdict(lake, bundle, gate, result.passed, result.message, **metadata)


def _gate(name: str, description: str):
    return promotion_gate(segmentation_model_candidate, quarterly_partitions, name, description)


@_gate("silhouette", "Silhouette at or above a floor and not much below the champion's.")
def silhouette(config: SilhouetteConfig, segmentation_model_candidate, lake: LakeResource) -> dg.AssetCheckResult:
    model = segmentation_model_candidate.model
    champion = read_champion(lake, "segmentation_model")
    gate = SegmentationGateConfig(min_silhouette=config.min_silhouette, max_silhouette_drop=config.max_silhouette_drop)
    result = silhouette_gate(model.silhouette, champion.model.silhouette if champion else None, gate)
    return _verdict(lake, segmentation_model_candidate, "silhouette", result, silhouette=float(model.silhouette))


@_gate("segment_size", "Every segment holds at least the minimum share of members.")
def segment_size(config: SegmentSizeConfig, segmentation_model_candidate, lake: LakeResource) -> dg.AssetCheckResult:
    model = segmentation_model_candidate.model
    result = size_gate(model.profile, SegmentationGateConfig(min_segment_share=config.min_segment_share))
    return _verdict(
        lake, segmentation_model_candidate, "segment_size", result, smallest_share=float(model.profile["share"].min())
    )


@_gate("naming_rules", "Road Warriors, Loyal Regulars and Dabblers satisfy their naming rules on the centroids.")
def naming_rules(segmentation_model_candidate, lake: LakeResource) -> dg.AssetCheckResult:
    result = naming_gate(segmentation_model_candidate.model.naming_checks)
    return _verdict(lake, segmentation_model_candidate, "naming_rules", result)


@_gate("champion_agreement", "Agreement with the champion's segments (adjusted Rand index) when a champion exists.")
def champion_agreement(
    config: AgreementConfig, segmentation_model_candidate, lake: LakeResource
) -> dg.AssetCheckResult:
    report = segmentation_model_candidate.report
    result = agreement_gate(report, SegmentationGateConfig(min_champion_ari=config.min_champion_ari))
    return _verdict(
        lake,
        segmentation_model_candidate,
        "champion_agreement",
        result,
        adjusted_rand=float(report.adjusted_rand) if report else float("nan"),
    )
