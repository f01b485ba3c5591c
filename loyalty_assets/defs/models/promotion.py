"""Promotion of a gated candidate (or a registered version) to the unpartitioned champion asset."""

from collections.abc import Iterator
from typing import Optional

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.models.champion_metadata import champion_metadata
from loyalty_assets.defs.resources.storage import LAZY_PARTITIONS, LakeResource
from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import ChurnBundle, SegmentationBundle


class PromotionConfig(dg.Config):
    version: Optional[str] = Field(
        default=None,
        description="Promote this registered version (roll back or forward) instead of the run's candidate.",
    )
    reason: str = Field(default="passed every gate", description="Why, recorded in the promotion history.")
    force: bool = Field(default=False, description="Allow a version that never passed its gates (needs a reason).")


def promote(
    context: dg.AssetExecutionContext,
    kind: str,
    gates: list[str],
    config: PromotionConfig,
    candidates,
    lake: LakeResource,
) -> Iterator[dg.Output | dg.AssetObservation]:
    """The champion for ``kind``: the run's gated candidate, or a registered version by config.

    Automatic promotion only moves forward in training-data time; a version that is already the
    champion is not written again. Either way the asset yields no output (the stored champion stays
    byte-identical) and an observation says why.
    """
    store = lake.store()
    if config.version:
        registry.check_promotable(store, kind, config.version, force=config.force, reason=config.reason)
        version, candidate = config.version, None
        refusal = registry.repromotion_refusal(store, kind, version)
    else:
        if not context.has_partition_key or context.partition_key not in candidates:
            raise dg.Failure(
                f"{kind} promotion needs the candidate of this run's partition: materialize it together with "
                "its candidate, or set config `version` to promote a registered version"
            )
        candidate = candidates[context.partition_key]()
        version = candidate.version
        registry.mark_gates_passed(store, kind, version, gates)
        refusal = registry.automatic_promotion_refusal(store, kind, version)
    if refusal:
        context.log.warning(refusal)
        yield dg.AssetObservation(
            asset_key=context.asset_key,
            metadata={
                "promoted": False,
                "version": version,
                "champion_version": registry.champion_version(store, kind),
                "why": refusal,
            },
        )
        return
    history = registry.log_promotion(
        store, kind, version, reason=config.reason, forced=config.force, run_id=context.run.run_id
    )
    record = registry.record(store, kind, version)
    bundle = candidate if candidate is not None else registry.load_bundle(store, kind, version)
    yield dg.Output(
        bundle,
        metadata={
            "version": version,
            "previous_version": history[-1]["previous"] or "none",
            "source_partition": record["source_partition"],
            "reason": config.reason,
            "forced": config.force,
            "registry_record": dg.MetadataValue.json(record),
            **champion_metadata(store, bundle),
        },
    )


def champion_asset(kind: str, gates: list[str], owners: list[str], description: str) -> dg.AssetsDefinition:
    """The unpartitioned ``<kind>_model`` champion, promoted from ``<kind>_model_candidate`` by ``promote``."""
    candidate_asset = f"{kind}_model_candidate"

    @dg.asset(
        name=f"{kind}_model",
        ins={candidate_asset: dg.AssetIn(metadata=LAZY_PARTITIONS)},
        io_manager_key="model_io_manager",
        kinds={"scikit-learn"},
        owners=owners,
        output_required=False,
        description=description,
    )
    def champion(context: dg.AssetExecutionContext, config: PromotionConfig, lake: LakeResource, **candidates):
        yield from promote(context, kind, gates, config, candidates[candidate_asset], lake)

    return champion


def promotion_gate(asset: dg.AssetsDefinition, partitions_def, name: str, description: str, **kwargs):
    """A blocking, per-partition ``@asset_check`` on a model candidate: one gate, ERROR severity."""
    return dg.asset_check(
        asset=asset, name=name, description=description, blocking=True, partitions_def=partitions_def, **kwargs
    )


def gate_verdict(
    lake: LakeResource, bundle: ChurnBundle | SegmentationBundle, gate: str, passed: bool, message: str, **metadata
) -> dg.AssetCheckResult:
    """The check result, also written to the registry so a promotion can prove every gate passed."""
    registry.record_gate(lake.store(), bundle.kind, bundle.version, gate, passed, message)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=message,
        metadata={"version": bundle.version, **metadata},
    )
