"""Model bundles and records (``domain.bundles``): what the builders put in them, the registry's JSON
layout of the records, and a clear failure for a stored bundle of the wrong type."""

from datetime import date

import pytest
from dagster_aws.s3 import S3Resource

from loyalty_assets.defs.models.churn.assets import ChurnCandidateConfig
from loyalty_assets.defs.resources.storage import LakeResource, read_champion
from loyalty_assets.domain import registry
from loyalty_assets.domain import segmentation as seg
from loyalty_assets.domain.bundles import (
    BundleTypeError,
    ChurnBundle,
    ChurnRecord,
    SegmentationBundle,
    churn_bundle,
    segmentation_bundle,
)
from loyalty_assets.domain.churn import ChurnTrainingConfig, train_churn_candidate
from loyalty_assets.domain.scoring import RISK_TIERS
from loyalty_assets.domain.storage import LocalStore, object_to_joblib_bytes
from loyalty_assets_tests.test_segmentation import planted_population
from loyalty_assets_tests.training_sets import FEATURES, SMALL, make_training_set

# The record keys the UI, the CLI and the online API read (before the registry adds its own).
CHURN_RECORD_KEYS = {
    "source_partition", "training_window", "metrics", "threshold", "tier_cutoffs", "capacity_tier_cutoffs",
    "merged_tiers", "feature_list", "data_fingerprint", "library_versions", "config", "horizon_months",
}
SEGMENTATION_RECORD_KEYS = {
    "source_partition", "source_drop", "training_window", "metrics", "feature_list", "names", "segment_profile",
    "churn_basis", "champion_version", "data_fingerprint", "library_versions", "config",
}
REGISTRY_KEYS = {"kind", "version", "registered_at", "gates_passed"}
SETTINGS = {"seed": 7}


@pytest.fixture(scope="module")
def training_set():
    return make_training_set()


@pytest.fixture(scope="module")
def candidate(training_set):
    return train_churn_candidate(training_set, FEATURES, SMALL)


@pytest.fixture(scope="module")
def churn(candidate, training_set) -> ChurnBundle:
    return churn_bundle(candidate, training_set, "2017-12-01", SETTINGS)


@pytest.fixture(scope="module")
def population():
    return planted_population({seg.ROAD_WARRIORS: 600, seg.LOYAL_REGULARS: 900, seg.DABBLERS: 700}, n_inactive=500)


@pytest.fixture(scope="module")
def segmentation(population) -> SegmentationBundle:
    model = seg.fit_segmentation(population)
    return segmentation_bundle(
        model,
        None,
        population,
        source_partition="2017-10-01",
        source_drop=date(2017, 12, 31),
        champion_version=None,
        profile=seg.segment_profile_table(model.profile),
        churn_basis="not observed",
        settings=SETTINGS,
    )


def test_the_default_candidate_config_trains_as_the_domain_default():
    assert ChurnCandidateConfig().to_training_config(3) == ChurnTrainingConfig(horizon_months=3, embargo_months=3)


def test_churn_bundle_holds_the_candidate_its_tiers_reference_and_record(churn, candidate, training_set):
    record = churn.record
    assert set(record.to_json()) == CHURN_RECORD_KEYS
    assert churn.model is candidate.model and churn.test_scores is candidate.test_scores
    assert churn.feature_columns == FEATURES and churn.threshold == candidate.threshold == record.metrics["threshold"]
    assert list(churn.tier_cutoffs) == list(RISK_TIERS[1:]) and churn.tier_cutoffs == record.tier_cutoffs
    assert record.horizon_months == SMALL.horizon_months and record.config == SETTINGS
    assert record.training_window["test"] == [f"{month}-01" for month in record.metrics["test_snapshots"]]
    assert record.training_window["validation"][-1] < record.training_window["test"][0]
    assert set(churn.usual_values) == set(FEATURES)
    assert churn.drift_reference["n_rows"] == len(churn.test_scores)
    assert churn.version.startswith("2017-12.")
    # Same partition, data and settings: the same version; other settings: another.
    assert churn_bundle(candidate, training_set, "2017-12-01", SETTINGS).version == churn.version
    assert churn_bundle(candidate, training_set, "2017-12-01", {"seed": 8}).version != churn.version


def test_segmentation_bundle_holds_the_model_and_its_record(segmentation, population):
    record = segmentation.record
    assert set(record.to_json()) == SEGMENTATION_RECORD_KEYS
    assert set(record.names.values()) == set(seg.SEGMENT_NAMES)
    assert record.training_window == {"snapshot": str(segmentation.model.snapshot_month.date())}
    assert record.source_drop == "2017-12-31" and record.champion_version is None
    assert record.metrics == {
        "silhouette": segmentation.model.silhouette, "adjusted_rand_vs_champion": None, "jaccard_vs_champion": None
    }
    assert [row["segment"] for row in record.segment_profile] == list(segmentation.model.profile.index)
    assert segmentation.version.startswith("2017-10.")


def test_the_registry_stores_the_record_layout_and_returns_the_bundle(tmp_path, churn, segmentation):
    store = LocalStore(tmp_path)
    for bundle, keys in ((churn, CHURN_RECORD_KEYS), (segmentation, SEGMENTATION_RECORD_KEYS)):
        registry.register_bundle(store, bundle)
        entry = registry.record(store, bundle.kind, bundle.version)
        assert set(entry) == keys | REGISTRY_KEYS
        assert type(bundle.record).from_json(entry).source_partition == bundle.record.source_partition
        assert registry.load_bundle(store, bundle.kind, bundle.version).version == bundle.version
    stored = ChurnRecord.from_json(registry.record(store, "churn", churn.version))
    assert stored.tier_cutoffs == churn.tier_cutoffs and stored.horizon_months == churn.record.horizon_months


def test_a_bundle_of_the_wrong_type_fails_naming_the_version_and_the_fix(tmp_path, churn, segmentation):
    store = LocalStore(tmp_path)
    old_bundle = {"kind": "churn", "version": "2017-11.0ld0ne", "model": churn.model}
    registry.register(store, "churn", "2017-11.0ld0ne", old_bundle, churn.record.to_json())
    stale = r"2017-11\.0ld0ne is stored as a dict, not a ChurnBundle.*re-run training"
    with pytest.raises(BundleTypeError, match=stale):
        registry.load_bundle(store, "churn", "2017-11.0ld0ne")

    registry.register(store, "churn", segmentation.version, segmentation, churn.record.to_json())
    with pytest.raises(BundleTypeError, match="stored as a SegmentationBundle, not a ChurnBundle"):
        registry.load_bundle(store, "churn", segmentation.version)

    store.put_bytes("churn_model.pkl", object_to_joblib_bytes(old_bundle))
    with pytest.raises(BundleTypeError, match=r"churn_model\.pkl: model version 2017-11\.0ld0ne is stored as a dict"):
        read_champion(LakeResource(uri=str(tmp_path), s3=S3Resource()), "churn_model")
