"""Tests of loyalty_assets.domain.segmentation on small synthetic feature snapshots."""

from __future__ import annotations

import copy
import struct
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
import pytest

from loyalty_assets.domain import segmentation as seg
from loyalty_assets.domain.segmentation import DABBLERS, LOYAL_REGULARS, ROAD_WARRIORS
from loyalty_assets.domain.storage import joblib_bytes_to_object, object_to_joblib_bytes

SNAPSHOT = pd.Timestamp("2018-06-01")

# Planted groups: flights (range), km per flight (range), active months (range), tenure months (range).
PLANTED = {
    ROAD_WARRIORS: ((110, 170), (1200, 2200), (9, 12), (12, 80)),
    LOYAL_REGULARS: ((25, 45), (150, 350), (10, 12), (48, 84)),
    DABBLERS: ((1, 6), (150, 600), (1, 3), (1, 40)),
}


def planted_population(
    sizes: dict[str, int], n_inactive: int = 0, seed: int = 0, ranges: dict | None = None
) -> pd.DataFrame:
    """A feature snapshot with the given group sizes; column ``planted`` holds the true group."""
    rng = np.random.default_rng(seed)
    groups = []
    for name, size in sizes.items():
        (f_low, f_high), (d_low, d_high), (a_low, a_high), (t_low, t_high) = (ranges or PLANTED)[name]
        flights = rng.integers(f_low, f_high + 1, size).astype(float)
        per_flight = rng.uniform(d_low, d_high, size)
        groups.append(
            pd.DataFrame(
                {
                    "flights_12m": flights,
                    "distance_12m": np.round(flights * per_flight),
                    "active_months_12m": np.minimum(rng.integers(a_low, a_high + 1, size), flights).astype(float),
                    "tenure_months": rng.integers(t_low, t_high + 1, size).astype(float),
                    "planted": name,
                }
            )
        )
    groups.append(
        pd.DataFrame(
            {
                "flights_12m": np.zeros(n_inactive),
                "distance_12m": np.zeros(n_inactive),
                "active_months_12m": np.zeros(n_inactive),
                "tenure_months": rng.integers(1, 84, n_inactive).astype(float),
                "planted": "inactive",
            }
        )
    )
    frame = pd.concat(groups, ignore_index=True)
    frame["distance_per_flight_12m"] = frame["distance_12m"] / frame["flights_12m"].where(frame["flights_12m"] > 0)
    frame["points_accumulated_12m"] = frame["distance_12m"] * 0.1
    frame["points_redeemed_12m"] = 0.0
    frame["flights_cv_12m"] = np.where(frame["flights_12m"] > 0, 1.0, np.nan)
    frame.insert(0, "loyalty_number", np.arange(100000, 100000 + len(frame), dtype="int64"))
    frame.insert(1, "snapshot_month", SNAPSHOT)
    frame.insert(2, "history_months", np.int64(12))
    return frame


def overlapping_population(n: int = 2000, seed: int = 3) -> pd.DataFrame:
    """One lognormal cloud without planted groups, where K-Means results depend on its start."""
    rng = np.random.default_rng(seed)
    flights = np.ceil(np.exp(rng.normal(3.0, 0.8, n)))
    per_flight = np.exp(rng.normal(5.5, 0.6, n))
    return pd.DataFrame(
        {
            "loyalty_number": np.arange(200000, 200000 + n, dtype="int64"),
            "snapshot_month": SNAPSHOT,
            "flights_12m": flights,
            "distance_12m": np.round(flights * per_flight),
            "distance_per_flight_12m": np.round(flights * per_flight) / flights,
            "active_months_12m": np.minimum(rng.integers(1, 13, n), flights).astype(float),
            "tenure_months": rng.integers(1, 84, n).astype(float),
        }
    )


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    return planted_population({ROAD_WARRIORS: 600, LOYAL_REGULARS: 900, DABBLERS: 700}, n_inactive=500, seed=1)


@pytest.fixture(scope="module")
def model(population: pd.DataFrame) -> seg.SegmentationModel:
    return seg.fit_segmentation(population)


def test_planted_groups_get_their_names(population, model):
    segments = seg.assign_segments(model, population)
    active = population["planted"] != "inactive"
    assert segments.index.equals(population.index)
    assert (segments[active] == population.loc[active, "planted"]).all()
    assert all(check.passed for check in model.naming_checks)
    assert sorted(model.names.values()) == sorted(seg.SEGMENT_NAMES)
    assert set(model.centroids["segment"]) == set(seg.SEGMENT_NAMES)


def test_model_survives_a_joblib_round_trip(population, model):
    restored = joblib_bytes_to_object(object_to_joblib_bytes(model))
    assert restored.names == model.names
    assert seg.assign_segments(restored, population).equals(seg.assign_segments(model, population))


def test_centroids_are_in_original_units(model):
    road = model.centroids.set_index("segment").loc[ROAD_WARRIORS]
    (f_low, f_high), (d_low, d_high), _, _ = PLANTED[ROAD_WARRIORS]
    assert f_low < road["flights_12m"] < f_high
    assert d_low < road["distance_per_flight_12m"] < d_high
    assert f_low * d_low < road["distance_12m"] < f_high * d_high
    # tenure is not clustered: its centroid value is the cluster's mean tenure
    regulars = model.centroids.set_index("segment").loc[LOYAL_REGULARS]
    assert 48 <= regulars["tenure_months"] <= 84


def test_inactive_members_are_dabblers_and_take_no_cluster(population, model):
    inactive = population["planted"] == "inactive"
    segments = seg.assign_segments(model, population)
    assert (segments[inactive] == DABBLERS).all()
    assert model.profile.loc[DABBLERS, "inactive_members"] == inactive.sum() == 500
    assert model.profile["inactive_members"].drop(DABBLERS).eq(0).all()
    assert model.profile["clustered_members"].sum() == model.n_active == (~inactive).sum()
    assert model.profile["members"].sum() == model.n_members == len(population)
    assert model.profile.loc[DABBLERS, "share"] == pytest.approx((700 + 500) / 2700)


def test_many_inactive_members_do_not_swallow_a_slot():
    population = planted_population({ROAD_WARRIORS: 300, LOYAL_REGULARS: 300, DABBLERS: 300}, n_inactive=2000, seed=2)
    model = seg.fit_segmentation(population)
    segments = seg.assign_segments(model, population)
    active = population["planted"] != "inactive"
    assert (segments[active] == population.loc[active, "planted"]).all()
    assert model.profile.loc[ROAD_WARRIORS, "members"] == 300
    assert model.profile.loc[LOYAL_REGULARS, "members"] == 300


def test_row_order_never_changes_the_road_warriors():
    population = overlapping_population()
    reference = seg.assign_segments(seg.fit_segmentation(population), population)
    for seed in (11, 14):  # without the sort by loyalty_number these fits differ (ARI 0.97, 0.60)
        shuffled = population.sample(frac=1.0, random_state=seed)
        segments = seg.assign_segments(seg.fit_segmentation(shuffled), population)
        assert (segments == ROAD_WARRIORS).equals(reference == ROAD_WARRIORS)
        assert segments.equals(reference)


def test_permuted_cluster_labels_keep_the_names(population, model):
    reference = seg.assign_segments(model, population)
    for permutation in ([1, 2, 0], [2, 1, 0], [0, 2, 1]):
        pipeline = copy.deepcopy(model.pipeline)
        kmeans = pipeline.named_steps["kmeans"]
        kmeans.cluster_centers_ = kmeans.cluster_centers_[permutation]
        permuted = seg.build_model(pipeline, population, model.config, model.silhouette, names=None)
        assert permuted.names != model.names
        assert seg.assign_segments(permuted, population).equals(reference)


def test_one_percent_segment_fails_the_size_gate():
    tight_groups = {
        ROAD_WARRIORS: ((300, 320), (4000, 4500), (11, 12), (40, 60)),
        LOYAL_REGULARS: ((30, 34), (200, 220), (11, 12), (60, 84)),
        DABBLERS: ((2, 3), (200, 220), (1, 2), (1, 30)),
    }
    population = planted_population(
        {ROAD_WARRIORS: 30, LOYAL_REGULARS: 1500, DABBLERS: 1470}, seed=4, ranges=tight_groups
    )
    model = seg.fit_segmentation(population)
    assert model.profile.loc[ROAD_WARRIORS, "members"] == 30
    passed, message = seg.size_gate(model.profile)
    assert not passed
    assert "Road Warriors" in message and "1.0%" in message
    assert seg.size_gate(model.profile, seg.SegmentationGateConfig(min_segment_share=0.005)).passed


def perturbed(population: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The population a quarter later: 5 % of members gone, 5 % noise on every amount."""
    rng = np.random.default_rng(seed)
    kept = population.sample(frac=0.95, random_state=seed).copy()
    for column in ("flights_12m", "distance_12m", "tenure_months"):
        kept[column] = np.round(kept[column] * rng.lognormal(0.0, 0.05, len(kept)))
    kept["distance_per_flight_12m"] = kept["distance_12m"] / kept["flights_12m"].where(kept["flights_12m"] > 0)
    return kept


def test_champion_matching_keeps_names_on_a_perturbed_refit(population, model):
    current = perturbed(population, seed=7)
    candidate = seg.fit_segmentation(current, seg.SegmentationConfig(seed=7))
    report = seg.match_to_champion(candidate, model, current)
    assert report.names_agree
    assert report.candidate.names == report.matched_names == candidate.names
    assert report.adjusted_rand > 0.99
    assert all(value > 0.99 for value in report.jaccard.values())
    assert report.n_compared == (current["flights_12m"] > 0).sum()
    segments = seg.assign_segments(report.candidate, current)
    active = current["planted"] != "inactive"
    assert (segments[active] == current.loc[active, "planted"]).all()
    gates = seg.evaluate_gates(report.candidate, model, report)
    assert all(result.passed for result in gates.values()), gates


def test_matching_wins_over_rules_and_broken_names_fail_the_gate(population, model):
    swapped = {
        index: {ROAD_WARRIORS: DABBLERS, DABBLERS: ROAD_WARRIORS}.get(name, name) for index, name in model.names.items()
    }
    mislabelled_champion = seg.build_model(model.pipeline, population, model.config, model.silhouette, names=swapped)
    current = perturbed(population, seed=8)
    candidate = seg.fit_segmentation(current)
    report = seg.match_to_champion(candidate, mislabelled_champion, current)
    assert not report.names_agree
    assert report.rule_names == candidate.names
    road_cluster = next(index for index, name in report.matched_names.items() if name == ROAD_WARRIORS)
    assert report.rule_names[road_cluster] == DABBLERS
    assert "overrides" in report.message
    gate = seg.naming_gate(report.candidate.naming_checks)
    assert not gate.passed and "road_warriors_travel_most" in gate.message


def test_agreement_on_a_hand_example():
    champion = pd.Series([ROAD_WARRIORS] * 3 + [LOYAL_REGULARS] * 2 + [DABBLERS])
    candidate = pd.Series([ROAD_WARRIORS] * 2 + [LOYAL_REGULARS] * 3 + [DABBLERS])
    ari, jaccard = seg.segment_agreement(champion, candidate)
    # contingency [[2,1,0],[0,2,0],[0,0,1]]: pairs 2, row pairs 4, column pairs 4 of 15
    expected_index = 16 / comb(6, 2)
    assert ari == pytest.approx((2 - expected_index) / ((4 + 4) / 2 - expected_index))
    assert ari == pytest.approx(7 / 22)
    assert jaccard == pytest.approx({ROAD_WARRIORS: 2 / 3, LOYAL_REGULARS: 2 / 3, DABBLERS: 1.0})
    # same partition under other names: ARI is 1, Jaccard sees the renaming
    renamed = champion.map({ROAD_WARRIORS: DABBLERS, LOYAL_REGULARS: LOYAL_REGULARS, DABBLERS: ROAD_WARRIORS})
    ari_renamed, jaccard_renamed = seg.segment_agreement(champion, renamed)
    assert ari_renamed == pytest.approx(1.0)
    assert jaccard_renamed[ROAD_WARRIORS] == 0.0


def test_pair_counting_matches_the_definition_on_random_labels():
    rng = np.random.default_rng(5)
    names = np.array(seg.SEGMENT_NAMES)
    first, second = pd.Series(names[rng.integers(0, 3, 12)]), pd.Series(names[rng.integers(0, 3, 12)])
    pairs = list(combinations(range(12), 2))
    both = sum(first[i] == first[j] and second[i] == second[j] for i, j in pairs)
    same_first = sum(first[i] == first[j] for i, j in pairs)
    same_second = sum(second[i] == second[j] for i, j in pairs)
    expected = same_first * same_second / len(pairs)
    ari, _ = seg.segment_agreement(first, second)
    assert ari == pytest.approx((both - expected) / ((same_first + same_second) / 2 - expected))


def test_silhouette_gate():
    gate = seg.SegmentationGateConfig(min_silhouette=0.2, max_silhouette_drop=0.05)
    assert seg.silhouette_gate(0.30, None, gate).passed
    assert not seg.silhouette_gate(0.19, None, gate).passed
    assert seg.silhouette_gate(0.26, 0.30, gate).passed
    result = seg.silhouette_gate(0.24, 0.30, gate)
    assert not result.passed and "champion" in result.message


def test_agreement_gate_and_no_champion(population, model):
    assert seg.agreement_gate(None).passed
    report = seg.match_to_champion(model, model, population)
    assert report.adjusted_rand == pytest.approx(1.0)
    assert seg.agreement_gate(report).passed
    assert not seg.agreement_gate(report, seg.SegmentationGateConfig(min_champion_ari=1.01)).passed
    gates = seg.evaluate_gates(model, None, None)
    assert all(result.passed for result in gates.values()), gates
    assert model.silhouette > seg.SegmentationGateConfig().min_silhouette


def test_profile_markdown_with_churn(population, model):
    segments = seg.assign_segments(model, population)
    churned = (population["planted"] == DABBLERS).astype("int64")
    markdown = seg.segment_profile_markdown(model.profile, segments, churned)
    lines = markdown.splitlines()
    assert "churn rate" in lines[0] and "flights_12m" in lines[0]
    dabbler_line = next(line for line in lines if line.startswith(f"| {DABBLERS}"))
    assert "58.3%" in dabbler_line  # 700 churners of 1,200 Dabblers
    assert "1,200" in dabbler_line
    road_line = next(line for line in lines if line.startswith(f"| {ROAD_WARRIORS}"))
    assert "| 0.0%" in road_line
    assert "churn rate" not in seg.segment_profile_markdown(model.profile)
    with pytest.raises(ValueError, match="both"):
        seg.segment_profile_markdown(model.profile, segments=segments)


def test_segment_plot_is_a_small_png(population, model):
    png = seg.segment_plot_png(population, seg.assign_segments(model, population))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (480, 320)
    assert len(png) < 200_000


def test_invalid_snapshots_are_rejected(population):
    with pytest.raises(ValueError, match="not unique"):
        seg.fit_segmentation(pd.concat([population, population.head(1)]))
    two_snapshots = population.assign(snapshot_month=[SNAPSHOT, pd.Timestamp("2018-07-01")] * (len(population) // 2))
    with pytest.raises(ValueError, match="snapshots"):
        seg.fit_segmentation(two_snapshots)
    gap = population.copy()
    gap.loc[0, "distance_per_flight_12m"] = np.nan
    with pytest.raises(ValueError, match="missing engagement"):
        seg.fit_segmentation(gap)
    with pytest.raises(ValueError, match="lack columns"):
        seg.fit_segmentation(population.drop(columns="tenure_months"))
    with pytest.raises(ValueError, match="log1p_columns"):
        seg.SegmentationConfig(log1p_columns=("points_redeemed_12m",))


def test_a_majority_top_cluster_is_named_with_the_advisory_minority_rule_in_the_gate_message():
    crowded = planted_population({ROAD_WARRIORS: 1500, LOYAL_REGULARS: 400, DABBLERS: 400}, seed=4)
    model = seg.fit_segmentation(crowded)
    checks = {check.rule: check for check in model.naming_checks}
    assert model.profile.loc[ROAD_WARRIORS, "share"] == pytest.approx(1500 / 2300)
    assert not checks["road_warriors_minority"].passed and not checks["road_warriors_minority"].blocking
    assert "65% of the members (at most 50%" in checks["road_warriors_minority"].message
    assert all(check.passed for rule, check in checks.items() if rule != "road_warriors_minority")
    gate = seg.naming_gate(model.naming_checks)
    assert gate.passed
    assert gate.message.startswith("the 4 blocking naming rules hold; advisory: road_warriors_minority: ")
    assert "bulk of the flyers rather than a top band" in gate.message
    # Where the business accepts a larger top band, every rule holds.
    accepted = seg.fit_segmentation(crowded, seg.SegmentationConfig(max_road_warriors_share=0.7))
    assert seg.naming_gate(accepted.naming_checks).message == "all 5 naming rules hold"
    assert seg.SegmentationConfig().max_road_warriors_share == 0.5


def test_loyal_regulars_must_fly_steadily_at_moderate_volume(population, model):
    swapped = {
        index: {LOYAL_REGULARS: ROAD_WARRIORS, ROAD_WARRIORS: LOYAL_REGULARS}.get(name, name)
        for index, name in model.names.items()
    }
    renamed = seg.build_model(model.pipeline, population, model.config, model.silhouette, names=swapped)
    failed = {check.rule for check in renamed.naming_checks if not check.passed}
    assert {"road_warriors_travel_most", "loyal_regulars_steady_moderate_volume"} <= failed


def test_profile_table_shows_the_median_member_and_says_when_churn_is_unknown(population, model):
    table = seg.segment_profile_table(model.profile)
    segments = seg.assign_segments(model, population)
    for name in seg.SEGMENT_NAMES:
        members = population[segments == name]
        assert table.loc[name, "members"] == len(members)
        assert table.loc[name, "median_flights_12m"] == members["flights_12m"].median()
        assert table.loc[name, "median_distance_per_flight_12m"] == members["distance_per_flight_12m"].median()
        assert table.loc[name, "median_active_months_12m"] == members["active_months_12m"].median()
    assert table["churn_rate"].isna().all()
    assert seg.segment_profile_markdown(model.profile).endswith(seg.NO_CHURN_NOTE)
    churned = (population["planted"] == DABBLERS).astype("int64")
    markdown = seg.segment_profile_markdown(model.profile, segments, churned, "cancelled within 3 months of 2018-03")
    assert "km per flight (median)" in markdown.splitlines()[0]
    assert markdown.endswith("Churn rate: cancelled within 3 months of 2018-03")
