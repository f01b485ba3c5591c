"""What a model version is made of: the pickled bundle and the record the registry stores as JSON.

A bundle holds the fitted model and what scoring and monitoring need beside it; its ``record``
is the version's description (training window, metrics, settings), written by the registry as
``<version>.json`` with ``to_json`` (the UI, the CLI and the online API read that layout).
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, fields
from datetime import date
from importlib import metadata
from typing import Any, ClassVar, Self

import pandas as pd

from loyalty_assets.domain.churn import ChurnCandidate, data_fingerprint, separated_tier_cutoffs
from loyalty_assets.domain.drift import build_reference
from loyalty_assets.domain.features import categorical_among
from loyalty_assets.domain.reasons import UsualValues, usual_values
from loyalty_assets.domain.scoring import assign_tiers, tier_cutoffs
from loyalty_assets.domain.segmentation import SegmentationModel, StabilityReport

LIBRARIES = ("scikit-learn", "pandas", "numpy", "scipy", "dagster")


def library_versions() -> dict[str, str]:
    versions = {name: metadata.version(name) for name in LIBRARIES}
    versions["python"] = platform.python_version()
    return versions


def make_version(partition_key: str, data_fingerprint: str, settings: dict[str, Any]) -> str:
    """Same partition, data and settings -> same version, so a re-run replaces rather than adds."""
    digest = hashlib.sha256(
        json.dumps({"data": data_fingerprint, "settings": settings}, sort_keys=True, default=str).encode()
    ).hexdigest()
    return f"{partition_key[:7]}.{digest[:8]}"


@dataclass(frozen=True)
class ModelRecord:
    """The fields every kind records; the registry adds kind, version, registration time and gates."""

    source_partition: str
    training_window: dict[str, Any]
    metrics: dict[str, Any]
    feature_list: list[str]
    data_fingerprint: str
    library_versions: dict[str, str]
    config: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Self:
        """The record of a registry entry (``registry.record``), without the registry's own keys."""
        return cls(**{field.name: entry[field.name] for field in fields(cls)})


@dataclass(frozen=True)
class ChurnRecord(ModelRecord):
    threshold: float  # the evaluation threshold (validation recall target)
    tier_cutoffs: dict[str, float]
    capacity_tier_cutoffs: dict[str, float]  # before merging tiers whose churn rates do not separate
    merged_tiers: list[dict[str, Any]]
    horizon_months: int


@dataclass(frozen=True)
class SegmentationRecord(ModelRecord):
    source_drop: str
    names: dict[str, str]
    segment_profile: list[dict[str, Any]]  # what the marketing e-mail shows per segment
    churn_basis: str
    champion_version: str | None  # the champion it was matched to


@dataclass(frozen=True)
class ChurnBundle:
    """A churn version: the calibrated model, its drift reference, the usual values the reasons
    compare a member with (the test snapshots'), and its out-of-time test scores."""

    kind: ClassVar[str] = "churn"
    version: str
    model: Any
    drift_reference: dict | None  # None: a version stored before drift monitoring
    usual_values: UsualValues | None  # None: taken from the drift reference
    test_scores: pd.DataFrame
    record: ChurnRecord

    @property
    def feature_columns(self) -> list[str]:
        return self.record.feature_list

    @property
    def tier_cutoffs(self) -> dict[str, float]:
        return self.record.tier_cutoffs

    @property
    def threshold(self) -> float:
        return self.record.threshold


@dataclass(frozen=True)
class SegmentationBundle:
    """A segmentation version, and how it matched the champion it was named after (None for the first)."""

    kind: ClassVar[str] = "segmentation"
    version: str
    model: SegmentationModel
    report: StabilityReport | None
    record: SegmentationRecord


BUNDLE_TYPES = {bundle_type.kind: bundle_type for bundle_type in (ChurnBundle, SegmentationBundle)}


class BundleTypeError(ValueError):
    """A stored bundle that is not this release's bundle type (e.g. a dict pickled by an older release)."""


def checked_bundle(loaded: object, where: str, kind: str | None = None) -> ChurnBundle | SegmentationBundle:
    """``loaded`` if it is a bundle (of ``kind`` when given), else a ``BundleTypeError`` saying what to do."""
    expected = (BUNDLE_TYPES[kind],) if kind else tuple(BUNDLE_TYPES.values())
    if isinstance(loaded, expected):
        return loaded
    version = loaded.get("version") if isinstance(loaded, dict) else getattr(loaded, "version", None)
    raise BundleTypeError(
        f"{where}: model version {version or '(unknown)'} is stored as a {type(loaded).__name__}, not a "
        f"{' or '.join(bundle_type.__name__ for bundle_type in expected)} (stored by an older release or another "
        "kind): re-run training (materialize the model candidate) and promote the new version"
    )


def churn_bundle(
    candidate: ChurnCandidate, training_set: pd.DataFrame, source_partition: str, settings: dict[str, Any]
) -> ChurnBundle:
    """The version of a trained candidate: tiers (merged where churn rates do not separate), the
    drift reference and usual values of its test rows, and the record.

    ``settings`` (the asset config) and the training set's fingerprint name the version.
    """
    columns = candidate.feature_columns
    capacity_cutoffs = tier_cutoffs(candidate.validation_scores)
    cutoffs, merges = separated_tier_cutoffs(capacity_cutoffs, candidate.validation_scores, candidate.validation_labels)
    test_rows = training_set[training_set["snapshot_month"].isin(candidate.test_snapshots)]
    test_scores = candidate.test_scores["score"].to_numpy()
    reference = build_reference(
        test_rows, columns, categorical_among(columns), test_scores, assign_tiers(test_scores, cutoffs)
    )
    fingerprint = data_fingerprint(training_set)
    record = ChurnRecord(
        source_partition=source_partition,
        training_window={
            "train": [str(s.date()) for s in candidate.train_snapshots],
            "validation": [str(s.date()) for s in candidate.validation_snapshots],
            "test": [str(s.date()) for s in candidate.test_snapshots],
        },
        metrics=candidate.metrics,
        feature_list=columns,
        data_fingerprint=fingerprint,
        library_versions=library_versions(),
        config=settings,
        threshold=candidate.threshold,
        tier_cutoffs=cutoffs,
        capacity_tier_cutoffs=capacity_cutoffs,
        merged_tiers=merges,
        horizon_months=candidate.config.horizon_months,
    )
    return ChurnBundle(
        version=make_version(source_partition, fingerprint, settings),
        model=candidate.model,
        drift_reference=reference,
        usual_values=usual_values(test_rows, columns, categorical_among(columns)),
        test_scores=candidate.test_scores,
        record=record,
    )


def segmentation_bundle(
    model: SegmentationModel,
    report: StabilityReport | None,
    features: pd.DataFrame,
    *,
    source_partition: str,
    source_drop: date,
    champion_version: str | None,
    profile: pd.DataFrame,
    churn_basis: str,
    settings: dict[str, Any],
) -> SegmentationBundle:
    """The version of a fitted segmentation (already named after the champion when ``report`` is
    set) on the snapshot ``features``; ``profile`` is ``segmentation.segment_profile_table`` with
    the realised churn ``churn_basis`` describes."""
    fingerprint = data_fingerprint(features)
    record = SegmentationRecord(
        source_partition=source_partition,
        training_window={"snapshot": str(model.snapshot_month.date())},
        metrics={
            "silhouette": model.silhouette,
            "adjusted_rand_vs_champion": report.adjusted_rand if report else None,
            "jaccard_vs_champion": report.jaccard if report else None,
        },
        feature_list=list(model.engagement_columns),
        data_fingerprint=fingerprint,
        library_versions=library_versions(),
        config=settings,
        source_drop=source_drop.isoformat(),
        names={str(index): name for index, name in model.names.items()},
        # to_json: NaN becomes null
        segment_profile=json.loads(profile.reset_index().to_json(orient="records")),
        churn_basis=churn_basis,
        champion_version=champion_version,
    )
    return SegmentationBundle(make_version(source_partition, fingerprint, settings), model, report, record)
