"""Churn labels and training snapshots on a small hand-built drop.

The drop is dated 2019-01-10: activity 2017-01 .. 2018-12 is complete (last complete month 2018-12).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from loyalty_assets.domain.features import MODEL_FEATURES, all_snapshots, build_features, last_complete_month
from loyalty_assets.domain.labels import (
    add_churn_labels,
    build_training_set,
    history_start_of,
    label_counts_by_snapshot,
    positive_rate,
    training_snapshots,
)
from loyalty_assets_tests.ingested_tables import activity_frame, activity_row, loyalty_frame, member

DROP_DATE = date(2019, 1, 10)
LAST_COMPLETE = last_complete_month(DROP_DATE)
MONTHS = pd.date_range("2017-01-01", "2018-12-01", freq="MS")
LOYAL, LEAVES_2018_03, LEAVES_2018_12, JOINS_2018_02, LEAVES_2017_10 = 11, 12, 13, 14, 15
MEMBERS = {  # loyalty_number: (enrollment (year, month), cancellation (year, month) or None)
    LOYAL: ((2015, 1), None),
    LEAVES_2018_03: ((2016, 1), (2018, 3)),
    LEAVES_2018_12: ((2016, 6), (2018, 12)),
    JOINS_2018_02: ((2018, 2), None),
    LEAVES_2017_10: ((2014, 4), (2017, 10)),
}


QUEBEC_MALE_MASTER_SINGLE = {
    "province": "Quebec",
    "city": "Montreal",
    "postal_code": "H2Y 2W2",
    "gender": "Male",
    "education": "Master",
    "salary": 105487.0,
    "marital_status": "Single",
    "clv": 5780.0,
}


def sample_loyalty() -> pd.DataFrame:
    return loyalty_frame(
        [
            member(number, enrolled, cancelled=cancelled, **QUEBEC_MALE_MASTER_SINGLE)
            for number, (enrolled, cancelled) in MEMBERS.items()
        ]
    )


def sample_activity() -> pd.DataFrame:
    """One flight a month for every member while enrolled and not yet past the cancellation month."""
    rows = []
    for number, (enrolled, cancelled) in MEMBERS.items():
        first = pd.Timestamp(year=enrolled[0], month=enrolled[1], day=1)
        last = MONTHS[-1] if cancelled is None else pd.Timestamp(year=cancelled[0], month=cancelled[1], day=1)
        rows += [activity_row(number, month, 1, distance=250, points=25) for month in MONTHS if first <= month <= last]
    return activity_frame(rows)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    activity = sample_activity()
    return build_features(sample_loyalty(), activity, all_snapshots(activity, DROP_DATE))


def labels_of(labelled: pd.DataFrame, loyalty_number: int) -> dict[str, int]:
    member = labelled[labelled["loyalty_number"] == loyalty_number]
    return dict(zip(member["snapshot_month"].dt.strftime("%Y-%m"), member["churned"]))


def test_labels_mark_cancellation_within_the_horizon(features):
    labelled = add_churn_labels(features, sample_loyalty(), 3, LAST_COMPLETE)
    assert labelled["churned"].dtype == np.int64
    leaves_march = labels_of(labelled, LEAVES_2018_03)
    assert list(leaves_march) == [f"2017-{m:02d}" for m in range(1, 13)] + ["2018-01", "2018-02"]
    assert [month for month, label in leaves_march.items() if label] == ["2017-12", "2018-01", "2018-02"]
    leaves_october = labels_of(labelled, LEAVES_2017_10)
    assert [month for month, label in leaves_october.items() if label] == ["2017-07", "2017-08", "2017-09"]
    leaves_december = labels_of(labelled, LEAVES_2018_12)
    assert [month for month, label in leaves_december.items() if label] == ["2018-09"]
    assert max(leaves_december) == "2018-09"  # 2018-10 and 2018-11 are immature for a 3-month horizon
    assert sum(labels_of(labelled, LOYAL).values()) == 0
    assert sum(labels_of(labelled, JOINS_2018_02).values()) == 0


def test_labels_keep_feature_columns_unchanged(features):
    labelled = add_churn_labels(features, sample_loyalty(), 3, LAST_COMPLETE)
    mature = features[features["snapshot_month"] <= "2018-09-01"].reset_index(drop=True)
    pd.testing.assert_frame_equal(labelled.drop(columns="churned"), mature, check_exact=True)


@pytest.mark.parametrize("horizon", [1, 2, 3, 6, 12, 24])
@pytest.mark.parametrize("last_complete", ["2017-06-01", "2018-03-01", "2018-12-01"])
def test_no_immature_label_is_ever_emitted(features, horizon, last_complete):
    last_complete = pd.Timestamp(last_complete)
    labelled = add_churn_labels(features, sample_loyalty(), horizon, last_complete)
    deadline = last_complete - pd.DateOffset(months=horizon)
    assert (labelled["snapshot_month"] <= deadline).all()
    assert len(labelled) == int((features["snapshot_month"] <= deadline).sum())
    assert list(labelled.columns) == list(features.columns) + ["churned"]


def test_rows_of_already_cancelled_members_are_rejected(features):
    stale = features.iloc[[0]].copy()
    stale["loyalty_number"] = LEAVES_2017_10
    stale["snapshot_month"] = pd.Timestamp("2017-10-01")
    with pytest.raises(ValueError, match="cancelled on or before their snapshot, e.g. loyalty_number 15"):
        add_churn_labels(pd.concat([features, stale], ignore_index=True), sample_loyalty(), 3, LAST_COMPLETE)


def test_rows_of_unknown_members_are_rejected(features):
    unknown = features.iloc[[0]].assign(loyalty_number=999)
    with pytest.raises(ValueError, match="absent from loyalty, e.g. loyalty_number 999"):
        add_churn_labels(unknown, sample_loyalty(), 3, LAST_COMPLETE)


def test_invalid_horizon_is_rejected(features):
    with pytest.raises(ValueError, match="horizon_months must be at least 1"):
        add_churn_labels(features, sample_loyalty(), 0, LAST_COMPLETE)


@pytest.mark.parametrize(
    ("lookback", "min_history", "expected"),
    [
        (12, 12, ("2017-12-01", "2018-09-01")),  # history covers 12 months from 2017-12
        (6, 12, ("2018-04-01", "2018-09-01")),  # look-back binds
        (12, 18, ("2018-06-01", "2018-09-01")),  # history requirement binds
    ],
)
def test_training_snapshots(lookback, min_history, expected):
    snapshots = training_snapshots(LAST_COMPLETE, 3, lookback, min_history, pd.Timestamp("2017-01-01"))
    assert snapshots == list(pd.date_range(*expected, freq="MS"))


def test_training_snapshots_empty_when_history_is_too_short():
    assert training_snapshots(pd.Timestamp("2017-12-01"), 3, 12, 12, pd.Timestamp("2017-01-01")) == []


def test_training_snapshots_accept_truncated_windows_and_reject_no_history():
    snapshots = training_snapshots(LAST_COMPLETE, 3, 36, 3, pd.Timestamp("2017-01-01"))
    assert snapshots == list(pd.date_range("2017-03-01", "2018-09-01", freq="MS"))
    with pytest.raises(ValueError, match="min_history_months must be at least 1"):
        training_snapshots(LAST_COMPLETE, 3, 12, 0, pd.Timestamp("2017-01-01"))


def test_history_start_is_read_back_from_features(features):
    assert history_start_of(features) == pd.Timestamp("2017-01-01")


def test_training_set_counts_and_positive_rate(features):
    training = build_training_set(
        features, sample_loyalty(), horizon_months=3, last_complete=LAST_COMPLETE, lookback_months=12,
        min_history_months=12,
    )
    assert sorted(training["snapshot_month"].unique()) == list(pd.date_range("2017-12-01", "2018-09-01", freq="MS"))
    assert (training["history_months"] >= 12).all()
    counts = label_counts_by_snapshot(training)
    assert counts["snapshot_month"].tolist() == list(pd.date_range("2017-12-01", "2018-09-01", freq="MS"))
    # 2017-12 and 2018-01: LOYAL and both 2018 leavers; 2018-02 adds JOINS; from 2018-03 the March leaver is gone.
    expected_members = [3, 3, 4] + [3] * 7
    expected_churned = [1, 1, 1] + [0] * 6 + [1]
    assert counts["members"].tolist() == expected_members
    assert counts["churned"].tolist() == expected_churned
    assert counts["positive_rate"].tolist() == pytest.approx(
        [c / m for c, m in zip(expected_churned, expected_members)]
    )
    assert positive_rate(training) == pytest.approx(4 / 31)


def test_training_set_carries_every_model_feature_with_the_member_attributes(features):
    training = build_training_set(
        features, sample_loyalty(), horizon_months=3, last_complete=LAST_COMPLETE, lookback_months=12
    )
    assert list(training.columns) == ["loyalty_number", "snapshot_month", "history_months", *MODEL_FEATURES, "churned"]
    loyal = training[training["loyalty_number"] == LOYAL]  # Quebec, Male, Master, Single, salary 105,487
    codes = loyal[["province_code", "gender_code", "education_code", "marital_status_code"]]
    assert (codes == [8, 1, 3, 0]).all().all()
    assert (loyal["salary_amount"] == 105487.0).all() and (loyal["salary_missing"] == 0).all()


def test_training_set_fails_without_a_qualifying_snapshot(features):
    early = features[features["snapshot_month"] <= "2017-12-01"]
    with pytest.raises(ValueError, match="no mature snapshot with 12 months of history"):
        build_training_set(
            early, sample_loyalty(), horizon_months=3, last_complete=pd.Timestamp("2017-12-01"), lookback_months=12,
            min_history_months=12,
        )


def test_training_set_fails_when_features_lack_a_snapshot(features):
    gap = features[features["snapshot_month"] != "2018-05-01"]
    with pytest.raises(ValueError, match=r"lack training snapshots \['2018-05-01'\]"):
        build_training_set(gap, sample_loyalty(), horizon_months=3, last_complete=LAST_COMPLETE, lookback_months=12)


def test_default_training_set_keeps_every_mature_snapshot_with_a_3_month_window(features):
    training = build_training_set(
        features, sample_loyalty(), horizon_months=3, last_complete=LAST_COMPLETE, lookback_months=36
    )
    assert sorted(training["snapshot_month"].unique()) == list(pd.date_range("2017-03-01", "2018-09-01", freq="MS"))
    assert training["history_months"].min() == 3


def test_positive_rate_of_empty_training_set_is_an_error(features):
    empty = add_churn_labels(features, sample_loyalty(), 24, LAST_COMPLETE)
    assert empty.empty
    with pytest.raises(ValueError, match="positive rate undefined"):
        positive_rate(empty)
