"""Customer segmentation: three named behaviour segments from one feature snapshot.

Input is one snapshot of ``customer_features`` (docs/design.md): one row per eligible member.

Method
------
1. **Inactive rule (before clustering).** A member with no flight in the 12-month window
   (``flights_12m == 0``) is a *Dabbler* by rule and is not clustered. Left in, the identical
   all-zero rows of these members form a tight cluster of their own and take one of the three
   slots, so the active members would be split only two ways. The rule keeps all three slots
   for the active members and makes "no flights" mean the same thing in every quarter.
2. **Clustering of the active members.** ``log1p`` on the skewed columns (``log1p_columns``:
   flights, distance, distance per flight; list any clustered points column there too), then
   ``StandardScaler`` and ``KMeans(n_clusters=3, n_init>=10, random_state=seed)`` in one
   sklearn ``Pipeline``. Rows are sorted by ``loyalty_number`` before fitting, so the fit does
   not depend on row order.
3. **Naming from rules on the centroids in original units, never from the cluster index.** Each
   name states what it means to the business, and the naming checks (``naming_checks``, required
   by the quality gate) hold the clusters to it:

   - *Road Warriors*: the top band by flights *and* distance (highest ``flights_12m x
     distance_12m``, and the most flights and the most km of the three), above the active
     medians of both, and a minority: at most ``max_road_warriors_share`` (50 %) of the members.
     K-Means slices one activity ladder; when its top slice holds more, it is the bulk of the
     flyers rather than a top band. That check is advisory: the naming gate names it with the
     share but does not stop the promotion, because the project's own sample population already
     puts about half of its members in the top slice and k=3 leaves no other name for it.
   - *Loyal Regulars*: steady monthly activity at moderate volume: of the other two, the most
     active months (a flight in at least half of the 12 months), with flights between the
     Dabblers' and the Road Warriors'.
   - *Dabblers*: low or irregular activity: the fewest active months, below the active median
     (and every member without a flight in 12 months, by rule 1).
4. **Stability across quarters** (``match_to_champion``): the candidate's clusters are matched
   to the champion's centroids with the Hungarian algorithm, and the matched names win over the
   rule names, so a name keeps its meaning from one quarter to the next. The naming checks are
   evaluated again on the matched names: if the matched names break the rules, the segments
   really changed meaning and the naming gate stops the promotion for a person to look at.

Default clustering columns: flights, distance, distance per flight and active months: how much,
how far per trip and how steadily a member flies. Left out:

- ``tenure_months``: a member attribute, not behaviour. Clustered, it can split the frequent
  flyers into "older" and "newer" halves instead of by how they fly (seen on simulated data).
  It stays a naming column: the centroids carry each cluster's mean tenure for the rules.
- ``points_accumulated_12m``: about 0.1 x distance, so it would count distance twice.
- ``points_redeemed_12m``: redemptions are rare (6 % of member-months); a yearly
  redeemed/not-redeemed split is noise that makes clusters unstable.
- ``flights_cv_12m``: mostly restates active months.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, jaccard_score, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from loyalty_assets.domain.figures import figure_png, new_figure

# Column names of domain.features (re-map here if they change).
LOYALTY_NUMBER = "loyalty_number"
SNAPSHOT_MONTH = "snapshot_month"
FLIGHTS = "flights_12m"
DISTANCE = "distance_12m"
ACTIVE_MONTHS = "active_months_12m"
POINTS_ACCUMULATED = "points_accumulated_12m"
POINTS_REDEEMED = "points_redeemed_12m"
DISTANCE_PER_FLIGHT = "distance_per_flight_12m"
TENURE = "tenure_months"
FLIGHTS_CV = "flights_cv_12m"

ROAD_WARRIORS = "Road Warriors"
LOYAL_REGULARS = "Loyal Regulars"
DABBLERS = "Dabblers"
SEGMENT_NAMES = (ROAD_WARRIORS, LOYAL_REGULARS, DABBLERS)
# What each name means to the business; the naming checks hold the clusters to it.
SEGMENT_MEANINGS = {
    ROAD_WARRIORS: "the top band by flights and distance (meant to be a minority: check its share)",
    LOYAL_REGULARS: "steady monthly flyers (most active months) at moderate volume",
    DABBLERS: "low or irregular activity, including members without a flight in 12 months",
}
N_CLUSTERS = len(SEGMENT_NAMES)
# Up to this many rows K-Means predicts without a thread limit (too few rows to start threads).
UNLIMITED_THREADS_ROWS = 64

# Steady monthly activity: a flight in at least half of the 12 months.
STEADY_ACTIVE_MONTHS = 6
# What a manager reads per segment, besides its size: the median member's volume, trip length and regularity.
PROFILE_MEDIAN_COLUMNS = (FLIGHTS, DISTANCE_PER_FLIGHT, ACTIVE_MONTHS)
PROFILE_HEADINGS = {
    "median_" + FLIGHTS: "flights_12m (median)",
    "median_" + DISTANCE_PER_FLIGHT: "km per flight (median)",
    "median_" + ACTIVE_MONTHS: "active months of 12 (median)",
}
NO_CHURN_NOTE = "Churn rate: not available (no matured churn labels when the segmentation was fitted)."
# Columns the naming rules read from the centroids (clustered or not).
NAMING_COLUMNS = (FLIGHTS, DISTANCE, ACTIVE_MONTHS, TENURE)
SEGMENT_COLORS = {ROAD_WARRIORS: "#d62728", LOYAL_REGULARS: "#1f77b4", DABBLERS: "#7f7f7f"}


@dataclass(frozen=True)
class SegmentationConfig:
    """Clustering settings. ``log1p_columns`` must be a subset of ``engagement_columns``."""

    seed: int = 42
    n_init: int = 10
    silhouette_sample_size: int = 5000
    # Tens of thousands of rows take well under a second on one thread; on a busy 2-core machine
    # two OpenMP threads spin-waiting on each other made K-Means 25x slower (measured).
    max_threads: int = 1
    engagement_columns: tuple[str, ...] = (FLIGHTS, DISTANCE, DISTANCE_PER_FLIGHT, ACTIVE_MONTHS)
    log1p_columns: tuple[str, ...] = (FLIGHTS, DISTANCE, DISTANCE_PER_FLIGHT)
    # The Road Warriors naming rule: the top band is a minority (at most half) of the members.
    max_road_warriors_share: float = 0.50

    @property
    def summary_columns(self) -> tuple[str, ...]:
        """Engagement columns, then the naming columns that are not clustered."""
        return self.engagement_columns + tuple(name for name in NAMING_COLUMNS if name not in self.engagement_columns)

    def __post_init__(self) -> None:
        stray_log = [name for name in self.log1p_columns if name not in self.engagement_columns]
        if stray_log:
            raise ValueError(f"log1p_columns {stray_log} are not engagement_columns")
        if len(set(self.engagement_columns)) != len(self.engagement_columns):
            raise ValueError(f"engagement_columns has duplicates: {self.engagement_columns}")
        if self.n_init < 10:
            raise ValueError(f"n_init must be >= 10, got {self.n_init}")
        if self.max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {self.max_threads}")
        if not 0 < self.max_road_warriors_share <= 1:
            raise ValueError(f"max_road_warriors_share must be in (0, 1], got {self.max_road_warriors_share}")
        if self.silhouette_sample_size < 2 * N_CLUSTERS:
            raise ValueError(f"silhouette_sample_size too small: {self.silhouette_sample_size}")


@dataclass(frozen=True)
class SegmentationGateConfig:
    """Thresholds of the promotion gates.

    ``min_silhouette`` 0.20: on populations simulated from the data contract's facts the default
    columns score 0.30-0.32, while K-Means(3) on structureless data (a Gaussian or uniform cloud)
    scores 0.12-0.14; 0.20 passes the first with margin and rejects a model that only slices a
    featureless cloud. ``max_silhouette_drop`` 0.05 keeps a refit from trading separation for nothing.
    ``min_champion_ari`` 0.5: a refit on the next quarter shares 9 of 12 window months, so it
    should label the same population much like the champion does. Consecutive quarters measured
    0.58 on the project's sample data and 0.70-0.97 on other simulated populations; plain K-Means
    on yearly behaviour reaches only 0.22 on the public data, which this design (log scale,
    inactive members by rule, matched names) is meant to avoid. Below 0.5 the segments moved
    enough for a person to look before the names are trusted.
    """

    min_silhouette: float = 0.20
    max_silhouette_drop: float = 0.05
    min_segment_share: float = 0.05
    min_champion_ari: float = 0.5


class NamingCheck(NamedTuple):
    """One naming rule; an advisory rule (``blocking`` False) is reported by the gate but stops nothing."""

    rule: str
    passed: bool
    message: str
    blocking: bool = True


class GateResult(NamedTuple):
    passed: bool
    message: str


@dataclass(frozen=True)
class SegmentationModel:
    """A fitted segmentation.

    ``pipeline``: Pipeline(log1p, StandardScaler, KMeans) over ``engagement_columns`` of active
    members. ``names``: cluster index -> segment name. ``centroids``: K-Means centres in original
    units (inverse scaler, then expm1 on the log1p columns), index = cluster, with a ``segment``
    column; naming columns that are not clustered (tenure) hold the cluster's mean.
    ``silhouette``: of the active members in the scaled space, on a seeded sample.
    ``profile``: one row per segment (inactive Dabblers included): ``members``, ``share`` of all
    members, ``clustered_members``, ``clustered_share`` of active members, ``inactive_members``,
    and per summary column the segment centre (mean in the model's log1p space, mapped back to
    original units; for a segment that is one cluster this is its K-Means centre).
    """

    pipeline: Pipeline
    names: dict[int, str]
    centroids: pd.DataFrame
    silhouette: float
    profile: pd.DataFrame
    engagement_columns: tuple[str, ...]
    naming_checks: list[NamingCheck]
    config: SegmentationConfig
    snapshot_month: pd.Timestamp | None
    n_members: int
    n_active: int


@dataclass(frozen=True)
class StabilityReport:
    """Outcome of matching a candidate to the champion.

    ``candidate`` is the candidate carrying the matched names (profile and naming checks redone
    for them): promote this one. ``rule_names`` are the names the rules alone gave.
    ``adjusted_rand`` and ``jaccard`` compare champion and candidate labels on the active members
    of the current population (inactive members are Dabblers under both by rule, so they would
    only inflate agreement). ``jaccard`` is 1.0 for a segment neither model uses (they agree).
    """

    candidate: SegmentationModel
    matched_names: dict[int, str]
    rule_names: dict[int, str]
    names_agree: bool
    centroid_distances: pd.DataFrame
    adjusted_rand: float
    jaccard: dict[str, float]
    n_compared: int
    message: str


def _log1p_selected(values: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
    transformed = np.array(values, dtype=float, copy=True)
    transformed[:, log_mask] = np.log1p(transformed[:, log_mask])
    return transformed


def _expm1_selected(values: np.ndarray, log_mask: np.ndarray) -> np.ndarray:
    restored = np.array(values, dtype=float, copy=True)
    restored[:, log_mask] = np.expm1(restored[:, log_mask])
    return restored


def _build_pipeline(config: SegmentationConfig) -> Pipeline:
    log_mask = np.array([name in config.log1p_columns for name in config.engagement_columns])
    return Pipeline(
        [
            (
                "log1p",
                FunctionTransformer(
                    _log1p_selected,
                    inverse_func=_expm1_selected,
                    kw_args={"log_mask": log_mask},
                    inv_kw_args={"log_mask": log_mask},
                    check_inverse=False,
                ),
            ),
            ("scale", StandardScaler()),
            ("kmeans", KMeans(n_clusters=N_CLUSTERS, n_init=config.n_init, random_state=config.seed)),
        ]
    )


def active_mask(features: pd.DataFrame) -> pd.Series:
    """True for members with at least one flight in the 12-month window (the clustered ones)."""
    if FLIGHTS not in features.columns:
        raise ValueError(f"features lack column {FLIGHTS!r}")
    flights = features[FLIGHTS]
    if flights.isna().any():
        raise ValueError(f"{int(flights.isna().sum())} members have a missing {FLIGHTS}")
    return flights > 0


def _validate_snapshot(features: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [name for name in (LOYALTY_NUMBER, *columns) if name not in features.columns]
    if missing:
        raise ValueError(f"features lack columns {missing}")
    if features[LOYALTY_NUMBER].duplicated().any():
        raise ValueError("features must hold one snapshot: loyalty_number is not unique")
    if SNAPSHOT_MONTH in features.columns and features[SNAPSHOT_MONTH].nunique() > 1:
        raise ValueError(f"features hold {features[SNAPSHOT_MONTH].nunique()} snapshots, expected one")


def _engagement_values(features: pd.DataFrame, columns: tuple[str, ...], log_columns: tuple[str, ...]) -> np.ndarray:
    """Engagement columns of the given (active) rows as a float array; fails on gaps or bad values."""
    values = features.loc[:, list(columns)].astype(float)
    missing = values.isna().sum()
    if missing.any():
        raise ValueError(f"active members with missing engagement values: {missing[missing > 0].to_dict()}")
    negative = (values[list(log_columns)] < 0).sum()
    if negative.any():
        raise ValueError(f"negative values in log1p columns: {negative[negative > 0].to_dict()}")
    return values.to_numpy()


def _snapshot_of(features: pd.DataFrame) -> pd.Timestamp | None:
    if SNAPSHOT_MONTH not in features.columns or features.empty:
        return None
    return pd.Timestamp(features[SNAPSHOT_MONTH].iloc[0])


def _centroids_in_original_units(
    pipeline: Pipeline, features: pd.DataFrame, labels: pd.Series, config: SegmentationConfig
) -> pd.DataFrame:
    """K-Means centres in original units; naming columns that are not clustered get the cluster mean."""
    centers = pipeline.named_steps["kmeans"].cluster_centers_
    original = pipeline[:-1].inverse_transform(centers)
    centroids = pd.DataFrame(original, columns=list(config.engagement_columns)).rename_axis("cluster")
    descriptive = [name for name in config.summary_columns if name not in config.engagement_columns]
    active = labels >= 0
    means = features.loc[active, descriptive].astype(float).groupby(labels[active]).mean()
    return centroids.join(means)


def rule_based_names(centroids: pd.DataFrame) -> dict[int, str]:
    """Cluster -> name from the centroids in original units (see module docstring)."""
    road_warriors = int((centroids[FLIGHTS] * centroids[DISTANCE]).idxmax())
    others = centroids.drop(index=road_warriors)
    dabblers = int(others.sort_values([ACTIVE_MONTHS, FLIGHTS]).index[0])
    regulars = int(others.drop(index=dabblers).index[0])
    return {road_warriors: ROAD_WARRIORS, regulars: LOYAL_REGULARS, dabblers: DABBLERS}


def evaluate_naming_rules(
    names: dict[int, str],
    centroids: pd.DataFrame,
    active_features: pd.DataFrame,
    road_warriors_share: float,
    max_road_warriors_share: float,
) -> list[NamingCheck]:
    """The business meaning of each name, checked on the centroids (see module docstring).

    Medians are over the active population; ``road_warriors_share`` is the Road Warriors' share of
    all members.
    """
    by_name = centroids.rename(index=names)
    road, regular, dabbler = (by_name.loc[name] for name in SEGMENT_NAMES)
    median_flights = float(active_features[FLIGHTS].median())
    median_distance = float(active_features[DISTANCE].median())
    median_active = float(active_features[ACTIVE_MONTHS].median())
    product = by_name[FLIGHTS] * by_name[DISTANCE]
    top_band = product.idxmax() == by_name[FLIGHTS].idxmax() == by_name[DISTANCE].idxmax() == ROAD_WARRIORS
    return [
        NamingCheck(
            "road_warriors_travel_most",
            bool(top_band),
            "Road Warriors are the top band by flights and distance; flights by segment "
            f"{by_name[FLIGHTS].round(1).to_dict()}, km by segment {by_name[DISTANCE].round(0).to_dict()}",
        ),
        NamingCheck(
            "road_warriors_above_active_median",
            bool(road[FLIGHTS] > median_flights and road[DISTANCE] > median_distance),
            f"Road Warriors centroid {road[FLIGHTS]:.1f} flights, {road[DISTANCE]:.0f} km; "
            f"active medians {median_flights:.1f} flights, {median_distance:.0f} km",
        ),
        NamingCheck(
            "road_warriors_minority",
            bool(road_warriors_share <= max_road_warriors_share),
            f"Road Warriors hold {road_warriors_share:.0%} of the members "
            f"(at most {max_road_warriors_share:.0%}: a top band); more means the busiest K-Means slice is the "
            "bulk of the flyers rather than a top band: read the profile before acting on the name",
            blocking=False,
        ),
        NamingCheck(
            "dabblers_least_active",
            bool(by_name[ACTIVE_MONTHS].idxmin() == DABBLERS and dabbler[ACTIVE_MONTHS] < median_active),
            f"Dabblers fly least regularly: active months by segment {by_name[ACTIVE_MONTHS].round(2).to_dict()}; "
            f"active median {median_active:.1f}",
        ),
        NamingCheck(
            "loyal_regulars_steady_moderate_volume",
            bool(
                regular[ACTIVE_MONTHS] > dabbler[ACTIVE_MONTHS]
                and regular[ACTIVE_MONTHS] >= STEADY_ACTIVE_MONTHS
                and dabbler[FLIGHTS] <= regular[FLIGHTS] <= road[FLIGHTS]
            ),
            f"Loyal Regulars fly steadily at moderate volume: {regular[ACTIVE_MONTHS]:.1f} active months "
            f"(steady: at least {STEADY_ACTIVE_MONTHS}; Dabblers {dabbler[ACTIVE_MONTHS]:.1f}), {regular[FLIGHTS]:.1f} "
            f"flights (Dabblers {dabbler[FLIGHTS]:.1f}, Road Warriors {road[FLIGHTS]:.1f})",
        ),
    ]


def _cluster_labels(pipeline: Pipeline, features: pd.DataFrame, config: SegmentationConfig) -> pd.Series:
    """K-Means cluster per member, -1 for inactive members."""
    active = active_mask(features)
    labels = pd.Series(-1, index=features.index, dtype="int64")
    if active.any():
        values = _engagement_values(features.loc[active], config.engagement_columns, config.log1p_columns)
        # Setting the limit scans the loaded libraries (milliseconds): an online request skips it.
        limit = threadpool_limits(limits=config.max_threads) if len(values) > UNLIMITED_THREADS_ROWS else nullcontext()
        with limit:
            labels.loc[active] = pipeline.predict(values)
    return labels


def _segment_profile(
    labels: pd.Series, names: dict[int, str], features: pd.DataFrame, config: SegmentationConfig
) -> pd.DataFrame:
    segments = labels.map({**names, -1: DABBLERS})
    model_space = features.loc[:, list(config.summary_columns)].astype(float)
    log_columns = list(config.log1p_columns)
    model_space[log_columns] = np.log1p(model_space[log_columns])
    centres = model_space.groupby(segments).mean()
    centres[log_columns] = np.expm1(centres[log_columns])
    active = labels >= 0
    counts = pd.DataFrame(
        {
            "members": segments.value_counts(),
            "clustered_members": segments[active].value_counts(),
            "inactive_members": segments[~active].value_counts(),
        }
    )
    profile = counts.reindex(list(SEGMENT_NAMES)).fillna(0).astype("int64")
    profile.insert(1, "share", profile["members"] / max(len(features), 1))
    profile.insert(3, "clustered_share", profile["clustered_members"] / max(int(active.sum()), 1))
    medians = features[list(PROFILE_MEDIAN_COLUMNS)].astype(float).groupby(segments).median().add_prefix("median_")
    return profile.join(centres).join(medians).rename_axis("segment")


def build_model(
    pipeline: Pipeline,
    features: pd.DataFrame,
    config: SegmentationConfig,
    silhouette: float,
    names: dict[int, str] | None,
) -> SegmentationModel:
    """Model record for an already fitted pipeline on ``features``; names from the rules unless given.

    ``fit_segmentation`` and ``match_to_champion`` use it; it is public so that a pipeline can be
    described again with other names (or after its clusters were re-indexed).
    """
    labels = _cluster_labels(pipeline, features, config)
    centroids = _centroids_in_original_units(pipeline, features, labels, config)
    chosen = rule_based_names(centroids) if names is None else dict(names)
    if sorted(chosen) != list(range(N_CLUSTERS)) or sorted(chosen.values()) != sorted(SEGMENT_NAMES):
        raise ValueError(f"names must map clusters 0..{N_CLUSTERS - 1} onto {SEGMENT_NAMES}, got {chosen}")
    active_features = features.loc[active_mask(features)]
    centroids.insert(0, "segment", centroids.index.map(chosen))
    return SegmentationModel(
        pipeline=pipeline,
        names=chosen,
        centroids=centroids,
        silhouette=silhouette,
        profile=_segment_profile(labels, chosen, features, config),
        engagement_columns=config.engagement_columns,
        naming_checks=evaluate_naming_rules(
            chosen,
            centroids,
            active_features,
            float((labels.map(chosen) == ROAD_WARRIORS).mean()),
            config.max_road_warriors_share,
        ),
        config=config,
        snapshot_month=_snapshot_of(features),
        n_members=len(features),
        n_active=len(active_features),
    )


def fit_segmentation(features: pd.DataFrame, config: SegmentationConfig = SegmentationConfig()) -> SegmentationModel:
    """Fit the segmentation on one snapshot; inactive members are Dabblers and are not clustered."""
    _validate_snapshot(features, config.summary_columns)
    ordered = features.sort_values(LOYALTY_NUMBER, kind="stable")
    active = ordered.loc[active_mask(ordered)]
    if len(active) < 10 * N_CLUSTERS:
        raise ValueError(f"only {len(active)} active members: too few to cluster into {N_CLUSTERS} segments")
    values = _engagement_values(active, config.engagement_columns, config.log1p_columns)
    pipeline = _build_pipeline(config)
    with threadpool_limits(limits=config.max_threads):
        labels = pipeline.fit_predict(values)
        if np.unique(labels).size < N_CLUSTERS:
            raise ValueError("K-Means found fewer distinct clusters than segments: active members are too alike")
        scaled = pipeline[:-1].transform(values)
        sample_size = config.silhouette_sample_size if len(values) > config.silhouette_sample_size else None
        silhouette = float(silhouette_score(scaled, labels, sample_size=sample_size, random_state=config.seed))
    return build_model(pipeline, ordered, config, silhouette, names=None)


def assign_segments(model: SegmentationModel, features: pd.DataFrame) -> pd.Series:
    """Segment name per member, index aligned to ``features``; inactive members are Dabblers."""
    _validate_snapshot(features, model.engagement_columns)
    labels = _cluster_labels(model.pipeline, features, model.config)
    return labels.map({**model.names, -1: DABBLERS}).rename("segment")


def segment_agreement(champion_segments: pd.Series, candidate_segments: pd.Series) -> tuple[float, dict[str, float]]:
    """Adjusted Rand index and per-segment Jaccard (|A and B| / |A or B|) of two labelings."""
    if not champion_segments.index.equals(candidate_segments.index):
        raise ValueError("the two segment labelings must share one index")
    ari = float(adjusted_rand_score(champion_segments, candidate_segments))
    per_segment = jaccard_score(
        champion_segments, candidate_segments, labels=list(SEGMENT_NAMES), average=None, zero_division=1.0
    )
    return ari, dict(zip(SEGMENT_NAMES, per_segment.astype(float).tolist(), strict=True))


def match_to_champion(
    candidate: SegmentationModel, champion: SegmentationModel, features: pd.DataFrame
) -> StabilityReport:
    """Give the candidate's clusters the champion's names by Hungarian matching of centroids.

    ``features`` is the current snapshot the candidate was fitted on. Distances are measured in
    the candidate's scaled space: the champion's centroids (original units) go through the
    candidate's log1p + scaler. One common space is needed because each model standardised with
    its own population's means and spreads, and the candidate's is fitted on exactly the current
    population that is being labelled, so a unit of distance means the same spread in every column.
    """
    if tuple(champion.engagement_columns) != tuple(candidate.engagement_columns):
        raise ValueError(
            f"champion columns {champion.engagement_columns} differ from candidate columns "
            f"{candidate.engagement_columns}: centroids cannot be matched, promote by hand"
        )
    if candidate.snapshot_month is not None and _snapshot_of(features) not in (None, candidate.snapshot_month):
        raise ValueError(
            f"features are snapshot {_snapshot_of(features)}, the candidate was fitted on {candidate.snapshot_month}"
        )
    _validate_snapshot(features, candidate.config.summary_columns)
    columns = list(candidate.engagement_columns)
    to_scaled = candidate.pipeline[:-1]
    candidate_centres = candidate.pipeline.named_steps["kmeans"].cluster_centers_
    champion_centres = to_scaled.transform(champion.centroids[columns].to_numpy())
    distances = cdist(candidate_centres, champion_centres)
    candidate_rows, champion_rows = linear_sum_assignment(distances)
    matched = {int(row): champion.names[int(col)] for row, col in zip(candidate_rows, champion_rows, strict=True)}
    renamed = build_model(candidate.pipeline, features, candidate.config, candidate.silhouette, names=matched)

    active = active_mask(features)
    ari, jaccard = segment_agreement(
        assign_segments(champion, features.loc[active]), assign_segments(renamed, features.loc[active])
    )
    names_agree = matched == candidate.names
    if names_agree:
        message = "champion matching agrees with the naming rules"
    else:
        changed = {
            index: f"{candidate.names[index]} -> {matched[index]}"
            for index in matched
            if matched[index] != candidate.names[index]
        }
        message = f"champion matching overrides the naming rules for clusters {changed}; naming checks re-run"
    return StabilityReport(
        candidate=renamed,
        matched_names=matched,
        rule_names=dict(candidate.names),
        names_agree=names_agree,
        centroid_distances=pd.DataFrame(
            distances,
            index=pd.Index([matched[i] for i in range(N_CLUSTERS)], name="candidate"),
            columns=pd.Index([champion.names[j] for j in range(N_CLUSTERS)], name="champion"),
        ),
        adjusted_rand=ari,
        jaccard=jaccard,
        n_compared=int(active.sum()),
        message=message,
    )


def silhouette_gate(
    silhouette: float, champion_silhouette: float | None, gate: SegmentationGateConfig = SegmentationGateConfig()
) -> GateResult:
    """Silhouette at least the floor, and not worse than the champion's by more than the tolerance."""
    if silhouette < gate.min_silhouette:
        return GateResult(False, f"silhouette {silhouette:.3f} < floor {gate.min_silhouette:.3f}")
    if champion_silhouette is not None and silhouette < champion_silhouette - gate.max_silhouette_drop:
        return GateResult(
            False,
            f"silhouette {silhouette:.3f} is more than {gate.max_silhouette_drop:.3f} below "
            f"the champion's {champion_silhouette:.3f}",
        )
    reference = "no champion" if champion_silhouette is None else f"champion {champion_silhouette:.3f}"
    return GateResult(True, f"silhouette {silhouette:.3f} >= floor {gate.min_silhouette:.3f} ({reference})")


def size_gate(profile: pd.DataFrame, gate: SegmentationGateConfig = SegmentationGateConfig()) -> GateResult:
    """Every segment holds at least ``min_segment_share`` of all members and of the clustered ones."""
    small = profile.index[
        (profile["share"] < gate.min_segment_share) | (profile["clustered_share"] < gate.min_segment_share)
    ]
    shares = ", ".join(
        f"{name} {row.share:.1%} (clustered {row.clustered_share:.1%})" for name, row in profile.iterrows()
    )
    if len(small):
        return GateResult(False, f"segments below {gate.min_segment_share:.0%}: {list(small)}; {shares}")
    return GateResult(True, f"every segment >= {gate.min_segment_share:.0%}: {shares}")


def naming_gate(checks: list[NamingCheck]) -> GateResult:
    """All blocking naming rules hold; broken advisory rules are named in the message."""
    failed = [check for check in checks if not check.passed and check.blocking]
    if failed:
        return GateResult(False, "naming rules broken: " + "; ".join(f"{c.rule}: {c.message}" for c in failed))
    advisory = [check for check in checks if not check.passed]
    if advisory:
        notes = "; ".join(f"{c.rule}: {c.message}" for c in advisory)
        return GateResult(True, f"the {len(checks) - len(advisory)} blocking naming rules hold; advisory: {notes}")
    return GateResult(True, f"all {len(checks)} naming rules hold")


def agreement_gate(
    report: StabilityReport | None, gate: SegmentationGateConfig = SegmentationGateConfig()
) -> GateResult:
    """Adjusted Rand index with the champion at least the threshold; passes when there is no champion."""
    if report is None:
        return GateResult(True, "no champion to agree with")
    if report.adjusted_rand < gate.min_champion_ari:
        return GateResult(False, f"ARI with champion {report.adjusted_rand:.3f} < {gate.min_champion_ari:.3f}")
    return GateResult(True, f"ARI with champion {report.adjusted_rand:.3f} >= {gate.min_champion_ari:.3f}")


def evaluate_gates(
    candidate: SegmentationModel,
    champion: SegmentationModel | None,
    report: StabilityReport | None,
    gate: SegmentationGateConfig = SegmentationGateConfig(),
) -> dict[str, GateResult]:
    """All four gates; with a champion, pass ``report.candidate`` (the model carrying matched names)."""
    if (champion is None) != (report is None):
        raise ValueError("give both a champion and its stability report, or neither")
    if report is not None and report.candidate is not candidate:
        raise ValueError("with a champion, gate report.candidate: it carries the matched names")
    return {
        "silhouette": silhouette_gate(candidate.silhouette, None if champion is None else champion.silhouette, gate),
        "segment_size": size_gate(candidate.profile, gate),
        "naming_rules": naming_gate(candidate.naming_checks),
        "champion_agreement": agreement_gate(report, gate),
    }


def segment_profile_table(
    profile: pd.DataFrame, segments: pd.Series | None = None, churned: pd.Series | None = None
) -> pd.DataFrame:
    """Per segment what a manager reads: ``members``, ``share``, the medians of flights, km per flight
    and active months, and ``churn_rate`` (realised share of churners; NaN when not given).

    ``segments`` (from ``assign_segments``) and ``churned`` (0/1) share one index.
    """
    if (segments is None) != (churned is None):
        raise ValueError("give both segments and churned, or neither")
    table = profile[["members", "share", *PROFILE_HEADINGS]].copy()
    table["churn_rate"] = np.nan
    if segments is not None and churned is not None:
        if not segments.index.equals(churned.index):
            raise ValueError("segments and churned must share one index")
        table["churn_rate"] = churned.astype(float).groupby(segments).mean().reindex(table.index)
    return table


def formatted_profile(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`segment_profile_table` as text columns with headings a manager reads; the churn rate
    column only when some segment has one."""
    formatted = pd.DataFrame(index=table.index)
    formatted["members"] = table["members"].map("{:,.0f}".format)
    formatted["share"] = table["share"].map("{:.1%}".format)
    for column, heading in PROFILE_HEADINGS.items():
        formatted[heading] = table[column].map("{:,.1f}".format)
    if table["churn_rate"].notna().any():
        formatted["churn rate"] = table["churn_rate"].map(lambda rate: "n/a" if pd.isna(rate) else f"{rate:.1%}")
    return formatted


def profile_notes(table: pd.DataFrame, churn_basis: str = "") -> list[str]:
    """How the churn rate of a :func:`segment_profile_table` was measured, or that it is not available."""
    if table["churn_rate"].isna().all():
        return [NO_CHURN_NOTE]
    return [f"Churn rate: {churn_basis}"] if churn_basis else []


def profile_table_markdown(table: pd.DataFrame, churn_basis: str = "") -> str:
    """Markdown of a :func:`segment_profile_table` with its :func:`profile_notes`."""
    return "\n\n".join([formatted_profile(table).to_markdown(), *profile_notes(table, churn_basis)])


def segment_profile_markdown(
    profile: pd.DataFrame,
    segments: pd.Series | None = None,
    churned: pd.Series | None = None,
    churn_basis: str = "",
) -> str:
    """Markdown table of :func:`segment_profile_table`, with the churn rate when given (``churn_basis``
    says how it was measured) and otherwise a line saying it is not available."""
    return profile_table_markdown(segment_profile_table(profile, segments, churned), churn_basis)


def segment_plot_png(features: pd.DataFrame, segments: pd.Series, max_points: int = 4000, seed: int = 42) -> bytes:
    """Scatter of flights vs distance per flight (log-log) per segment, as small PNG bytes.

    Inactive members (no flights) cannot sit on a log axis; their count is in the title.
    At most ``max_points`` members are drawn (a fixed random sample).
    """
    if not segments.index.equals(features.index):
        raise ValueError("segments must share the index of features")
    active = active_mask(features)
    shown = features.loc[active, [FLIGHTS, DISTANCE_PER_FLIGHT]].assign(segment=segments[active])
    if len(shown) > max_points:
        shown = shown.sample(n=max_points, random_state=seed)
    figure = new_figure(6, 4)
    axes = figure.add_subplot()
    for name in SEGMENT_NAMES:
        members = shown[shown["segment"] == name]
        axes.scatter(
            members[FLIGHTS], members[DISTANCE_PER_FLIGHT], s=4, alpha=0.5, color=SEGMENT_COLORS[name], label=name
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("flights, last 12 months")
    axes.set_ylabel("km per flight")
    axes.set_title(f"Segments ({int((~active).sum()):,} inactive Dabblers not shown)", fontsize=10)
    axes.legend(loc="best", fontsize=8, markerscale=3)
    return figure_png(figure)
