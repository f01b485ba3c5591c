"""Point-in-time features on small hand-built raw tables (design.md schemas).

The drop is dated 2018-07-10: activity 2017-07 .. 2018-06 is complete, 2018-07 is
month-to-date. Month positions below: 2017-07 is the first month of history.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loyalty_assets.domain.churn import OutOfTimeSplit, leakage_violations
from loyalty_assets.domain.features import (
    ACTIVITY_COLUMNS_USED,
    CATEGORICAL_FEATURES,
    EDUCATION_LEVELS,
    FEATURE_COLUMNS,
    FEATURES,
    GENDERS,
    ID_COLUMNS,
    LOYALTY_COLUMNS_USED,
    MARITAL_STATUSES,
    MODEL_FEATURE_SPECS,
    MODEL_FEATURES,
    PROVINCES,
    all_snapshots,
    build_features,
    feature_summary_markdown,
    features_markdown,
    first_activity_month,
    last_complete_month,
    member_features,
)
from loyalty_assets_tests.ingested_tables import activity_frame, activity_row, loyalty_frame, member
from loyalty_assets.domain.ingest import CATEGORY_VALUES

DROP_DATE = date(2018, 7, 10)
HISTORY = pd.date_range("2017-07-01", "2018-06-01", freq="MS")
STEADY, DECLINER, CHURNER, NEWCOMER, SILENT, CANCELLED_EARLY, ENROLLS_LATER = 100, 200, 300, 400, 500, 600, 700

DECLINER_FLIGHTS = [10, 10, 10, 10, 10, 10, 8, 6, 4, 2, 0, 0]


def sample_loyalty() -> pd.DataFrame:
    return loyalty_frame(
        [
            member(STEADY, (2015, 6), card="Nova"),
            member(
                DECLINER,
                (2014, 3),
                card="Aurora",
                province="British Columbia",
                gender="Male",
                education="Doctor",
                marital_status="Single",
                salary=182144.0,
            ),
            member(CHURNER, (2016, 1), cancelled=(2018, 3)),
            member(NEWCOMER, (2018, 3), enrollment_type="2018 Promotion", education="College", salary=None),
            member(SILENT, (2016, 2), card="Nova"),
            member(CANCELLED_EARLY, (2013, 1), cancelled=(2016, 5)),
            member(ENROLLS_LATER, (2018, 7)),
        ]
    )


def sample_activity() -> pd.DataFrame:
    rows = [activity_row(STEADY, m, 4, companions=1, distance=1000, points=100) for m in HISTORY]
    for month, flights in zip(HISTORY, DECLINER_FLIGHTS):
        redeemed = 600.0 if month == pd.Timestamp("2018-04-01") else 0.0
        rows.append(
            activity_row(
                DECLINER,
                month,
                flights,
                distance=500 * flights,
                points=50 * flights,
                redeemed=redeemed,
                cost=0.081 * redeemed,
            )
        )
    rows += [activity_row(CHURNER, m, 2, distance=300, points=30) for m in HISTORY if m <= pd.Timestamp("2018-03-01")]
    before_enrollment = activity_row(NEWCOMER, "2018-02-01", 1, distance=200, points=20)
    before_enrollment["flag_before_enrollment"] = True
    rows.append(before_enrollment)
    rows += [activity_row(NEWCOMER, m, 3, distance=900, points=90) for m in HISTORY if m >= pd.Timestamp("2018-03-01")]
    # Month-to-date rows of the drop's own month.
    rows += [activity_row(STEADY, "2018-07-01", 9, distance=5000), activity_row(DECLINER, "2018-07-01", 7)]
    return activity_frame(rows)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    activity = sample_activity()
    return build_features(sample_loyalty(), activity, all_snapshots(activity, DROP_DATE))


def row(features: pd.DataFrame, loyalty_number: int, snapshot: str) -> pd.Series:
    match = features[(features["loyalty_number"] == loyalty_number) & (features["snapshot_month"] == snapshot)]
    assert len(match) == 1, f"expected one row for {loyalty_number} at {snapshot}, got {len(match)}"
    return match.iloc[0]


def assert_features(actual: pd.Series, expected: dict[str, float]) -> None:
    assert set(expected) == set(FEATURE_COLUMNS)
    for name, value in expected.items():
        if np.isnan(value):
            assert np.isnan(actual[name]), name
        else:
            assert actual[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def frame_digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()


# Catalogue


def test_catalogue_keeps_the_21_documented_features_first_and_leaves_clv_out():
    assert len(FEATURES) == 21
    assert len(set(FEATURE_COLUMNS)) == 21
    assert MODEL_FEATURES[:21] == FEATURE_COLUMNS
    assert len(set(MODEL_FEATURES)) == len(MODEL_FEATURES) == 35
    assert set(CATEGORICAL_FEATURES) == {
        "loyalty_card_tier",
        "promotion_enrollment",
        "education_code",
        "marital_status_code",
        "gender_code",
        "province_code",
    }
    assert set(CATEGORICAL_FEATURES) < set(MODEL_FEATURES)
    assert not any("clv" in name for name in MODEL_FEATURES)
    assert all(spec.formula and spec.point_in_time and spec.why for spec in MODEL_FEATURE_SPECS)
    lines = features_markdown().splitlines()
    assert lines[0].replace(" ", "") == "|name|formula|point-in-timerule|whyitmatters|"
    assert len(lines) == 2 + 35
    assert [line.split("`")[1] for line in lines[2:]] == MODEL_FEATURES


def test_readme_feature_table_is_the_one_the_code_generates():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = features_markdown()
    assert table in readme, (
        "README.md's feature table differs from features_markdown(): paste its output under ## Features"
    )


def test_code_tables_cover_the_values_the_loader_knows():
    assert GENDERS == CATEGORY_VALUES["Gender"]
    assert EDUCATION_LEVELS == CATEGORY_VALUES["Education"]
    assert MARITAL_STATUSES == CATEGORY_VALUES["Marital Status"]
    assert len(PROVINCES) == 11 and "Ontario" in PROVINCES


# Snapshots


@pytest.mark.parametrize(
    ("drop_date", "expected"),
    [(date(2018, 7, 10), "2018-06-01"), (date(2018, 1, 1), "2017-12-01"), (date(2018, 3, 31), "2018-02-01")],
)
def test_last_complete_month_is_the_month_before_the_drop_month(drop_date, expected):
    assert last_complete_month(drop_date) == pd.Timestamp(expected)


def test_all_snapshots_cover_complete_months_and_exclude_month_to_date():
    assert all_snapshots(sample_activity(), DROP_DATE) == list(HISTORY)
    assert all_snapshots(sample_activity(), date(2018, 7, 31)) == list(HISTORY)


def test_all_snapshots_is_empty_when_the_drop_holds_only_its_own_month():
    activity = activity_frame([activity_row(STEADY, "2018-07-01", 2)])
    assert all_snapshots(activity, DROP_DATE) == []


def test_all_snapshots_rejects_activity_after_the_drop_month():
    activity = activity_frame([activity_row(STEADY, "2018-06-01", 2), activity_row(STEADY, "2018-08-01", 2)])
    with pytest.raises(ValueError, match="after the drop"):
        all_snapshots(activity, DROP_DATE)


# Shape and schema


def test_output_schema_order_and_dtypes(features):
    assert list(features.columns) == ID_COLUMNS + MODEL_FEATURES
    assert features["loyalty_number"].dtype == np.int64
    assert features["snapshot_month"].dtype == np.dtype("datetime64[ns]")
    assert features["history_months"].dtype == np.int64
    assert (features[MODEL_FEATURES].dtypes == np.float64).all()
    ordered = features.sort_values(["snapshot_month", "loyalty_number"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(features, ordered)
    assert not features.duplicated(["loyalty_number", "snapshot_month"]).any()
    expected_history = (features["snapshot_month"].dt.year - 2017) * 12 + features["snapshot_month"].dt.month - 6
    assert (features["history_months"] == expected_history).all()


# Hand-computed members


def test_steady_flyer_with_full_history(features):
    assert_features(
        row(features, STEADY, "2018-06-01"),
        {
            "flights_3m": 12,
            "flights_6m": 24,
            "flights_12m": 48,
            "distance_3m": 3000,
            "distance_12m": 12000,
            "points_accumulated_12m": 1200,
            "points_redeemed_3m": 0,
            "points_redeemed_12m": 0,
            "months_since_last_flight": 0,
            "active_months_12m": 12,
            "flights_mom_change": 0,
            "flights_3m_minus_prior_3m": 0,
            "flights_slope_6m": 0,
            "flights_cv_12m": 0,
            "redeemed_to_accumulated_12m": 0,
            "dollar_cost_per_redeemed_point_12m": np.nan,
            "distance_per_flight_12m": 250,
            "companion_share_12m": 12 / 48,
            "tenure_months": 36,  # 2015-06 .. 2018-06
            "loyalty_card_tier": 1,
            "promotion_enrollment": 0,
        },
    )


def test_windows_reaching_before_history_count_missing_months_as_zero(features):
    steady = row(features, STEADY, "2017-09-01")  # third month of history: nine of twelve months unobserved
    assert steady["history_months"] == 3 == steady["window_coverage_24m"]
    assert steady["flights_6m"] == 12 and steady["flights_12m"] == 12
    assert steady["active_months_12m"] == 3
    assert steady["flights_3m_minus_prior_3m"] == 12
    # monthly flights [0]*9 + [4]*3: mean 1, population variance 48/12 - 1 = 3
    assert steady["flights_cv_12m"] == pytest.approx(np.sqrt(3.0))


def test_decliner(features):
    mean = 80 / 12
    assert_features(
        row(features, DECLINER, "2018-06-01"),
        {
            "flights_3m": 2,
            "flights_6m": 20,
            "flights_12m": 80,
            "distance_3m": 1000,
            "distance_12m": 40000,
            "points_accumulated_12m": 4000,
            "points_redeemed_3m": 600,
            "points_redeemed_12m": 600,
            "months_since_last_flight": 2,  # last flight 2018-04
            "active_months_12m": 10,
            "flights_mom_change": 0,
            "flights_3m_minus_prior_3m": 2 - (8 + 6 + 4),
            # last six months 8,6,4,2,0,0 against x - 2.5: (-20 - 9 - 2 + 1) / 17.5
            "flights_slope_6m": -30 / 17.5,
            # six 10s + 8,6,4,2,0,0: sum of squares 720
            "flights_cv_12m": np.sqrt(720 / 12 - mean**2) / mean,
            "redeemed_to_accumulated_12m": 600 / 4000,
            "dollar_cost_per_redeemed_point_12m": 0.081,
            "distance_per_flight_12m": 500,
            "companion_share_12m": 0,
            "tenure_months": 51,  # 2014-03 .. 2018-06
            "loyalty_card_tier": 2,
            "promotion_enrollment": 0,
        },
    )
    earlier = row(features, DECLINER, "2018-02-01")  # months 2017-09 .. 2018-02: 10,10,10,10,8,6
    assert earlier["flights_mom_change"] == -2
    assert earlier["flights_3m_minus_prior_3m"] == (10 + 8 + 6) - 30
    assert earlier["flights_slope_6m"] == pytest.approx(
        (-2.5 * 10 - 1.5 * 10 - 0.5 * 10 + 0.5 * 10 + 1.5 * 8 + 2.5 * 6) / 17.5
    )


def test_churner_appears_until_the_month_before_cancellation(features):
    snapshots = features.loc[features["loyalty_number"] == CHURNER, "snapshot_month"]
    assert list(snapshots) == list(pd.date_range("2017-07-01", "2018-02-01", freq="MS"))
    last = row(features, CHURNER, "2018-02-01")
    assert (last["flights_3m"], last["flights_12m"], last["active_months_12m"]) == (6, 16, 8)
    assert last["distance_per_flight_12m"] == 150


def test_member_enrolled_mid_window(features):
    snapshots = features.loc[features["loyalty_number"] == NEWCOMER, "snapshot_month"]
    assert list(snapshots) == list(pd.date_range("2018-03-01", "2018-06-01", freq="MS"))
    first = row(features, NEWCOMER, "2018-03-01")
    assert first["tenure_months"] == 0
    assert first["flights_3m"] == 1 + 3  # a flagged flight before enrollment still counts
    assert (first["promotion_enrollment"], first["loyalty_card_tier"]) == (1, 0)
    latest = row(features, NEWCOMER, "2018-06-01")
    assert (latest["tenure_months"], latest["flights_6m"], latest["flights_12m"]) == (3, 13, 13)


def test_eligible_member_without_activity_gets_zeros_and_nan_ratios(features):
    silent = row(features, SILENT, "2018-06-01")
    zero = [
        "flights_3m",
        "flights_6m",
        "flights_12m",
        "distance_3m",
        "distance_12m",
        "points_accumulated_12m",
        "points_redeemed_3m",
        "points_redeemed_12m",
        "active_months_12m",
        "flights_mom_change",
        "flights_3m_minus_prior_3m",
        "flights_slope_6m",
    ]
    undefined = [
        "flights_cv_12m",
        "redeemed_to_accumulated_12m",
        "dollar_cost_per_redeemed_point_12m",
        "distance_per_flight_12m",
        "companion_share_12m",
    ]
    assert (silent[zero] == 0).all()
    assert silent[undefined].isna().all()
    assert silent["months_since_last_flight"] == 12 == silent["history_months"]
    assert (silent["tenure_months"], silent["loyalty_card_tier"]) == (28, 1)
    assert features.loc[features["loyalty_number"] != SILENT, "flights_12m"].notna().all()


def test_eligibility_excludes_members_before_enrollment_and_after_cancellation(features):
    loyalty = sample_loyalty().set_index("loyalty_number")
    joined = features.join(loyalty, on="loyalty_number")
    snapshot = joined["snapshot_month"].dt.year * 12 + joined["snapshot_month"].dt.month
    enrolled = joined["enrollment_year"] * 12 + joined["enrollment_month"]
    cancelled = (joined["cancellation_year"] * 12 + joined["cancellation_month"]).fillna(10**9)
    assert ((enrolled <= snapshot) & (snapshot < cancelled)).all()
    assert features.groupby("loyalty_number").size().to_dict() == {
        STEADY: 12,
        DECLINER: 12,
        CHURNER: 8,
        NEWCOMER: 4,
        SILENT: 12,
    }


def test_member_attributes_at_a_snapshot(features):
    steady = row(features, STEADY, "2018-06-01")  # enrolled 2015-06; Ontario, Female, Bachelor, Married
    assert steady["membership_month_of_year"] == 0  # tenure 36: the anniversary month
    assert steady["enrollment_calendar_month"] == 6
    assert (steady["salary_amount"], steady["salary_missing"]) == (83236.0, 0)
    assert steady["education_code"] == EDUCATION_LEVELS.index("Bachelor") == 2
    assert steady["marital_status_code"] == MARITAL_STATUSES.index("Married") == 1
    assert steady["gender_code"] == GENDERS.index("Female") == 0
    assert steady["province_code"] == PROVINCES.index("Ontario") == 6
    decliner = row(features, DECLINER, "2018-06-01")  # enrolled 2014-03: tenure 51
    assert (decliner["membership_month_of_year"], decliner["enrollment_calendar_month"]) == (3, 3)
    assert decliner[["province_code", "gender_code", "education_code", "marital_status_code"]].tolist() == [1, 1, 4, 0]
    newcomer = row(features, NEWCOMER, "2018-06-01")  # College: no salary
    assert np.isnan(newcomer["salary_amount"]) and newcomer["salary_missing"] == 1
    assert newcomer["education_code"] == 1
    phases = features.loc[features["loyalty_number"] == NEWCOMER, "membership_month_of_year"]
    assert list(phases) == [0, 1, 2, 3]


def test_empty_salary_and_unknown_attribute_values():
    loyalty = sample_loyalty()
    steady = loyalty["loyalty_number"] == STEADY
    loyalty.loc[steady, ["salary", "education", "gender", "marital_status", "province"]] = [
        np.nan,
        "Kindergarten",
        None,
        "Widowed",
        "Nunavut",
    ]
    decliner = loyalty["loyalty_number"] == DECLINER
    loyalty.loc[decliner, ["salary", "education", "province", "gender"]] = [-5000.0, " DOCTOR ", "yukon", "male"]
    features = build_features(loyalty, sample_activity(), [pd.Timestamp("2018-06-01")])
    unknown = row(features, STEADY, "2018-06-01")
    assert np.isnan(unknown["salary_amount"]) and unknown["salary_missing"] == 1
    codes = ["education_code", "gender_code", "marital_status_code", "province_code"]
    assert unknown[codes].isna().all()
    normalised = row(features, DECLINER, "2018-06-01")
    assert (normalised["salary_amount"], normalised["salary_missing"]) == (-5000.0, 0)
    assert (normalised["education_code"], normalised["province_code"], normalised["gender_code"]) == (4, 10, 1)


def test_categorical_features_are_small_non_negative_integer_codes(features):
    codes = features[list(CATEGORICAL_FEATURES)]
    assert ((codes >= 0) & (codes == np.floor(codes)) & (codes <= 10)).all().all()


def test_lifetime_and_redemption_features_of_the_decliner(features):
    latest = row(features, DECLINER, "2018-06-01")
    assert latest["window_coverage_24m"] == 12  # 2017-07 .. 2018-06 observed
    assert latest["flights_24m"] == 80
    assert latest["active_months_24m"] == 10
    assert latest["redeemed_to_accumulated_24m"] == 600 / 4000
    assert latest["redemptions_12m"] == 1
    assert latest["months_since_last_redemption"] == 2  # redeemed in 2018-04
    at_redemption = row(features, DECLINER, "2018-04-01")
    assert (at_redemption["months_since_last_redemption"], at_redemption["redemptions_12m"]) == (0, 1)
    before = row(features, DECLINER, "2018-03-01")  # nine months observed, no redemption yet
    assert (before["months_since_last_redemption"], before["window_coverage_24m"]) == (9, 9)
    assert (before["redemptions_12m"], before["redeemed_to_accumulated_24m"]) == (0, 0)


def test_lifetime_features_of_a_member_without_activity(features):
    silent = row(features, SILENT, "2018-06-01")
    assert (silent["flights_24m"], silent["active_months_24m"], silent["redemptions_12m"]) == (0, 0, 0)
    assert np.isnan(silent["redeemed_to_accumulated_24m"])
    assert silent["months_since_last_redemption"] == silent["window_coverage_24m"] == 12


def test_lifetime_window_is_24_months_when_the_history_is_longer():
    history = pd.date_range("2016-01-01", "2018-06-01", freq="MS")  # 30 months
    redeemed_early, redeemed_in_window = 1, 2
    loyalty = loyalty_frame([member(redeemed_early, (2015, 1)), member(redeemed_in_window, (2015, 1))])
    redemptions = {redeemed_early: pd.Timestamp("2016-02-01"), redeemed_in_window: pd.Timestamp("2016-08-01")}
    activity = activity_frame(
        [
            activity_row(number, month, 1, distance=100, points=10, redeemed=500.0 * (month == redeemed))
            for number, redeemed in redemptions.items()
            for month in history
        ]
    )
    features = build_features(loyalty, activity, [pd.Timestamp("2018-06-01")])
    early, in_window = row(features, redeemed_early, "2018-06-01"), row(features, redeemed_in_window, "2018-06-01")
    assert early["history_months"] == 30 and early["window_coverage_24m"] == 24
    assert (early["flights_24m"], early["active_months_24m"]) == (24, 24)
    assert early["months_since_last_redemption"] == 24  # 28 months ago: outside the window
    assert early["redeemed_to_accumulated_24m"] == 0 and early["redemptions_12m"] == 0
    assert in_window["months_since_last_redemption"] == 22
    assert in_window["redeemed_to_accumulated_24m"] == 500 / 240


def test_online_lifetime_features_need_only_the_24_months_up_to_the_snapshot():
    history = pd.date_range("2016-01-01", "2018-06-01", freq="MS")
    loyalty = loyalty_frame([member(STEADY, (2015, 1))])
    activity = activity_frame(
        [
            activity_row(STEADY, month, month.month % 3, distance=90, points=9, redeemed=80.0 * (month.month == 2))
            for month in history
        ]
    )
    batch = row(build_features(loyalty, activity, [history[-1]]), STEADY, "2018-06-01")
    attributes, months = _member_inputs(loyalty, activity, STEADY)
    values = member_features(attributes, months, date(2018, 6, 1), history_start=date(2016, 7, 1))
    online = pd.Series(values, index=MODEL_FEATURES)
    lifetime = ["window_coverage_24m", "flights_24m", "active_months_24m", "redeemed_to_accumulated_24m"]
    lifetime += ["redemptions_12m", "months_since_last_redemption"]
    assert batch["history_months"] == 30
    assert online[lifetime].to_dict() == batch[lifetime].to_dict()
    assert online["months_since_last_redemption"] == 4 and online["redemptions_12m"] == 1


def test_leakage_guard_recomputes_every_model_feature(features):
    """Each model feature, changed in one stored row, is reported by the point-in-time recompute."""
    loyalty, activity = sample_loyalty(), sample_activity()
    training_set = features.assign(churned=0)
    tampered = training_set.copy()
    for position, name in enumerate(MODEL_FEATURES):
        value = tampered.at[position, name]
        tampered.at[position, name] = 1.0 if np.isnan(value) else value + 1.0
    split = OutOfTimeSplit(
        train=tampered[tampered["snapshot_month"] < "2018-01-01"],
        validation=tampered[tampered["snapshot_month"].between("2018-01-01", "2018-03-01")],
        test=tampered[tampered["snapshot_month"] > "2018-03-01"],
    )

    def recompute(snapshots):
        return build_features(loyalty, activity, snapshots, history_start=HISTORY[0])

    assert leakage_violations(training_set, split, recompute, sample_size=len(training_set)) == []
    violations = leakage_violations(tampered, split, recompute, sample_size=len(tampered))
    reported = [violation.split(": feature ")[1].split(" is ")[0] for violation in violations]
    assert sorted(reported) == sorted(MODEL_FEATURES)


# Variants and validation


def test_eight_column_variant_has_nan_companion_share_and_same_other_features(features):
    activity = sample_activity()
    activity["flights_booked"] = pd.array([pd.NA] * len(activity), dtype="Int64")
    activity["flights_with_companions"] = pd.array([pd.NA] * len(activity), dtype="Int64")
    variant = build_features(sample_loyalty(), activity, list(HISTORY))
    assert variant["companion_share_12m"].isna().all()
    others = [c for c in features.columns if c != "companion_share_12m"]
    pd.testing.assert_frame_equal(variant[others], features[others], check_exact=True)


def test_companion_share_uses_only_months_with_a_known_companion_count():
    activity = sample_activity()
    unknown = (activity["loyalty_number"] == STEADY) & (activity["month"] == 6) & (activity["year"] == 2018)
    activity.loc[unknown, "flights_with_companions"] = pd.NA
    activity.loc[unknown, "total_flights"] = 20
    features = build_features(sample_loyalty(), activity, [pd.Timestamp("2018-06-01")])
    steady = row(features, STEADY, "2018-06-01")
    assert steady["companion_share_12m"] == 11 / 44
    assert steady["flights_12m"] == 64


def test_duplicate_member_month_rows_are_rejected():
    activity = sample_activity()
    activity = pd.concat([activity, activity.iloc[[3]]], ignore_index=True)
    with pytest.raises(
        ValueError, match=r"1 \(member, month\) keys with more than one row.*loyalty_number 100 in 2017-10"
    ):
        build_features(sample_loyalty(), activity, list(HISTORY))


def test_duplicates_outside_the_snapshot_range_are_ignored():
    activity = sample_activity()
    month_to_date = activity[(activity["year"] == 2018) & (activity["month"] == 7)]
    duplicated = pd.concat([activity, month_to_date], ignore_index=True)
    pd.testing.assert_frame_equal(
        build_features(sample_loyalty(), duplicated, list(HISTORY)),
        build_features(sample_loyalty(), activity, list(HISTORY)),
        check_exact=True,
    )


def test_activity_of_unknown_member_is_rejected():
    activity = pd.concat([sample_activity(), activity_frame([activity_row(999, "2017-08-01", 1)])], ignore_index=True)
    with pytest.raises(ValueError, match="absent from loyalty, e.g. loyalty_number 999"):
        build_features(sample_loyalty(), activity, list(HISTORY))


def test_implausible_flight_count_is_rejected():
    activity = sample_activity()
    activity.loc[0, "total_flights"] = 2**31
    with pytest.raises(ValueError, match="total_flights holds 2147483648 in one month"):
        build_features(sample_loyalty(), activity, list(HISTORY))


def test_missing_column_is_named():
    with pytest.raises(ValueError, match=r"activity lacks required columns \['distance'\]"):
        build_features(sample_loyalty(), sample_activity().drop(columns="distance"), list(HISTORY))


@pytest.mark.parametrize(
    ("snapshots", "message"),
    [
        ([], "no snapshots"),
        ([pd.Timestamp("2018-06-15")], "first day of a month"),
        ([pd.Timestamp("2017-06-01")], "precedes history_start"),
    ],
)
def test_invalid_snapshots_are_rejected(snapshots, message):
    with pytest.raises(ValueError, match=message):
        build_features(sample_loyalty(), sample_activity(), snapshots)


def test_explicit_history_start_extends_history_months():
    features = build_features(
        sample_loyalty(), sample_activity(), [pd.Timestamp("2018-06-01")], history_start=pd.Timestamp("2017-01-01")
    )
    assert (features["history_months"] == 18).all()
    assert row(features, SILENT, "2018-06-01")["months_since_last_flight"] == 18
    assert row(features, STEADY, "2018-06-01")["flights_12m"] == 48


def test_unknown_category_values_become_nan():
    loyalty = sample_loyalty()
    loyalty.loc[loyalty["loyalty_number"] == STEADY, ["loyalty_card", "enrollment_type"]] = ["Platinum", "Referral"]
    loyalty.loc[loyalty["loyalty_number"] == DECLINER, "loyalty_card"] = " aurora "
    features = build_features(loyalty, sample_activity(), [pd.Timestamp("2018-06-01")])
    steady = row(features, STEADY, "2018-06-01")
    assert np.isnan(steady["loyalty_card_tier"]) and np.isnan(steady["promotion_enrollment"])
    assert row(features, DECLINER, "2018-06-01")["loyalty_card_tier"] == 2


# Point in time


def perturb_after(activity: pd.DataFrame, loyalty: pd.DataFrame, snapshot: pd.Timestamp, seed: int):
    """Change, delete and add activity after ``snapshot`` (month-to-date included); move future cancellations."""
    rng = np.random.default_rng(seed)
    month = pd.to_datetime({"year": activity["year"], "month": activity["month"], "day": 1})
    later = (month > snapshot).to_numpy()
    changed = activity.copy()
    changed.loc[later, "total_flights"] = changed.loc[later, "total_flights"] * 3 + 1
    changed.loc[later, "flights_with_companions"] = pd.NA
    changed.loc[later, ["distance", "points_accumulated", "points_redeemed", "dollar_cost_points_redeemed"]] = (
        rng.uniform(0, 5000, size=(int(later.sum()), 4))
    )
    deleted = later & (rng.random(len(changed)) < 0.5)
    changed = changed.loc[~deleted]
    added_months = [m for m in pd.date_range(snapshot, "2018-07-01", freq="MS")[1:]]
    added = activity_frame(
        [activity_row(SILENT, m, 5, companions=2, distance=700, points=70, redeemed=100, cost=8) for m in added_months]
    )
    changed = pd.concat([changed, added], ignore_index=True)

    future = loyalty.copy()
    cancel_month = future["cancellation_year"] * 12 + future["cancellation_month"]
    snapshot_month = snapshot.year * 12 + snapshot.month
    move = (cancel_month > snapshot_month).fillna(False).to_numpy()
    future.loc[move, ["cancellation_year", "cancellation_month"]] = [2018, 7]
    never_cancelled = (future["loyalty_number"] == STEADY).to_numpy()
    future.loc[never_cancelled, ["cancellation_year", "cancellation_month"]] = [2018, 7]
    return changed, future


@pytest.mark.parametrize("snapshot", list(HISTORY))
def test_features_at_a_snapshot_ignore_everything_after_it(features, snapshot):
    activity, loyalty = sample_activity(), sample_loyalty()
    changed_activity, changed_loyalty = perturb_after(activity, loyalty, snapshot, seed=snapshot.month)
    baseline = features[features["snapshot_month"] == snapshot].reset_index(drop=True)

    recomputed = build_features(changed_loyalty, changed_activity, list(HISTORY))
    at_snapshot = recomputed[recomputed["snapshot_month"] == snapshot].reset_index(drop=True)
    pd.testing.assert_frame_equal(at_snapshot, baseline, check_exact=True)
    assert frame_digest(at_snapshot) == frame_digest(baseline)

    alone = build_features(changed_loyalty, changed_activity, [snapshot])
    pd.testing.assert_frame_equal(alone, baseline, check_exact=True)
    assert frame_digest(alone) == frame_digest(baseline)


def test_perturbation_really_changes_later_snapshots(features):
    snapshot = pd.Timestamp("2017-12-01")
    changed_activity, changed_loyalty = perturb_after(sample_activity(), sample_loyalty(), snapshot, seed=1)
    recomputed = build_features(changed_loyalty, changed_activity, list(HISTORY))
    later = pd.Timestamp("2018-06-01")
    assert frame_digest(recomputed[recomputed["snapshot_month"] == later]) != frame_digest(
        features[features["snapshot_month"] == later]
    )


# Summary


def test_feature_summary_markdown(features):
    summary = feature_summary_markdown(features)
    lines = summary.splitlines()
    assert lines[0].replace(" ", "") == "|feature|min|median|max|nullshare|"
    assert len(lines) == 2 + len(MODEL_FEATURES)
    tenure = next(line for line in lines if line.startswith("| tenure_months"))
    cells = [cell.strip() for cell in tenure.strip("|").split("|")]
    tenure_values = features["tenure_months"]
    assert [float(c) for c in cells[1:]] == pytest.approx(
        [tenure_values.min(), tenure_values.median(), tenure_values.max(), 0.0], rel=1e-3
    )
    cost = next(line for line in lines if line.startswith("| dollar_cost_per_redeemed_point_12m"))
    null_share = float(cost.strip("|").split("|")[-1])
    assert null_share == pytest.approx(features["dollar_cost_per_redeemed_point_12m"].isna().mean(), rel=1e-3)


def _member_inputs(loyalty: pd.DataFrame, activity: pd.DataFrame, loyalty_number: int) -> tuple[dict, dict]:
    record = loyalty[loyalty["loyalty_number"] == loyalty_number].iloc[0]
    attributes = {
        name: (None if pd.isna(record[name]) else record[name]) for name in LOYALTY_COLUMNS_USED
    }
    rows = activity[activity["loyalty_number"] == loyalty_number]
    months = {
        name: [None if pd.isna(value) else value for value in rows[name]]
        for name in ACTIVITY_COLUMNS_USED
        if name != "loyalty_number"
    }
    return attributes, months


def test_member_features_equal_build_features_for_every_member_and_snapshot(features):
    loyalty, activity = sample_loyalty(), sample_activity()
    start = first_activity_month(activity)
    checked = 0
    for expected in features.itertuples(index=False):
        attributes, months = _member_inputs(loyalty, activity, expected.loyalty_number)
        actual = member_features(attributes, months, expected.snapshot_month.date(), history_start=start.date())
        np.testing.assert_array_equal(actual, np.array([getattr(expected, name) for name in MODEL_FEATURES]))
        checked += 1
    assert checked == len(features) > 40


def test_member_features_refuse_a_member_not_active_at_the_snapshot():
    loyalty, activity = sample_loyalty(), sample_activity()
    start = first_activity_month(activity).date()
    for member_number, snapshot in ((CANCELLED_EARLY, date(2018, 1, 1)), (ENROLLS_LATER, date(2018, 5, 1))):
        attributes, months = _member_inputs(loyalty, activity, member_number)
        with pytest.raises(ValueError, match="not enrolled and active"):
            member_features(attributes, months, snapshot, history_start=start)
    attributes, months = _member_inputs(loyalty, activity, STEADY)
    twice = {name: values + values[:1] for name, values in months.items()}
    with pytest.raises(ValueError, match="a month twice"):
        member_features(attributes, twice, date(2018, 6, 1), history_start=start)
