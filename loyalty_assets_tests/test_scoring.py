"""Weekly scoring: capacity tiers, action rule table, forest attributions and the predictions table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline

from loyalty_assets.domain.drift import build_reference
from loyalty_assets.domain.experiments import EXPERIMENT_COLUMNS, HOLD_OUT_ACTION
from loyalty_assets.domain.ingest import SourceFile, ingest_drop
from loyalty_assets.domain.reasons import (
    NO_SINGLE_REASON,
    feature_wording,
    reason_text,
    usual_values,
    usual_values_from_drift_reference,
)
from loyalty_assets.domain.scoring import (
    PREDICTION_COLUMNS,
    RISK_TIERS,
    add_relative_risk,
    assign_tiers,
    load_action_table,
    recommend_actions,
    score_members,
    tier_cutoffs,
    tier_segment_counts,
    top_reasons,
    unscored_member_counts,
)
from loyalty_assets.domain.segmentation import SEGMENT_NAMES
from loyalty_assets_tests.drop_files import ACTIVITY_HEADER, LOYALTY_HEADER, activity_row, csv_bytes, member_row

DRIVER = "months_since_last_flight"
FEATURES = [DRIVER, "tenure_months", "distance_12m", "companion_share_12m", "loyalty_card_tier"]


def synthetic_members(count: int, seed: int) -> pd.DataFrame:
    """Members whose churn depends on the months since the last flight only; one column has NaN."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "loyalty_number": 100_000 + np.arange(count, dtype=np.int64),
            "snapshot_month": pd.Timestamp("2018-11-01"),
            DRIVER: rng.integers(0, 13, count).astype(float),
            "tenure_months": rng.integers(1, 80, count).astype(float),
            "distance_12m": rng.lognormal(8, 1, count),
            "companion_share_12m": np.where(rng.random(count) < 0.2, np.nan, rng.random(count)),
            "loyalty_card_tier": rng.integers(0, 3, count).astype(float),
        }
    )
    churn_probability = 1 / (1 + np.exp(-(-5.0 + 0.55 * frame[DRIVER])))
    frame["churned"] = (rng.random(count) < churn_probability).astype(int)
    return frame


@pytest.fixture(scope="module")
def champion():
    """Calibrated frozen forest pipeline, shaped like the churn champion."""
    train = synthetic_members(4000, seed=1)
    validation = synthetic_members(2000, seed=2)
    pipeline = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("forest", RandomForestClassifier(n_estimators=40, min_samples_leaf=20, random_state=0, n_jobs=1)),
        ]
    ).fit(train[FEATURES], train["churned"])
    model = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid")
    model.fit(validation[FEATURES], validation["churned"])
    cutoffs = tier_cutoffs(model.predict_proba(validation[FEATURES])[:, 1])
    return pipeline, model, cutoffs


@pytest.fixture(scope="module")
def week_features() -> pd.DataFrame:
    return synthetic_members(3000, seed=3).drop(columns="churned")


def test_tiers_are_ordered_and_shares_match_reference_quantiles():
    scores = np.random.default_rng(0).beta(1, 25, 20_000)
    cutoffs = tier_cutoffs(scores)
    assert list(cutoffs) == ["Medium", "High", "Critical"]
    assert cutoffs == pytest.approx(dict(zip(cutoffs, np.quantile(scores, [0.60, 0.85, 0.95]))))
    tiers = assign_tiers(scores, cutoffs)
    assert tiers.ordered and list(tiers.categories) == list(RISK_TIERS)
    shares = pd.Series(tiers).value_counts(normalize=True).reindex(list(RISK_TIERS))
    assert shares.to_numpy() == pytest.approx([0.60, 0.25, 0.10, 0.05], abs=1e-3)
    # Higher tier always means higher score.
    frame = pd.DataFrame({"score": scores, "tier": tiers})
    bounds = frame.groupby("tier", observed=True)["score"].agg(["min", "max"])
    assert (bounds["max"].to_numpy()[:-1] < bounds["min"].to_numpy()[1:]).all()


def test_assign_tiers_keeps_ties_in_the_lower_tier_and_compares_in_order():
    tiers = assign_tiers([0.1, 0.2, 0.3, 0.4, 0.05], {"Medium": 0.1, "High": 0.2, "Critical": 0.3})
    assert list(tiers) == ["Low", "Medium", "High", "Critical", "Low"]
    assert list(tiers >= "High") == [False, False, True, True, False]


def test_tier_cutoffs_and_assign_tiers_reject_bad_input():
    with pytest.raises(ValueError, match="summing to 1"):
        tier_cutoffs([0.1, 0.2], shares=(0.5, 0.3, 0.1, 0.05))
    with pytest.raises(ValueError, match="without NaN"):
        tier_cutoffs([0.1, np.nan])
    with pytest.raises(ValueError, match="non-decreasing"):
        assign_tiers([0.1], {"Medium": 0.3, "High": 0.2, "Critical": 0.4})
    with pytest.raises(ValueError, match="exactly the keys"):
        assign_tiers([0.1], {"Medium": 0.3, "High": 0.4})


def test_packaged_action_table_covers_every_segment_and_tier():
    table = load_action_table()
    assert list(table.columns) == ["version", "segment", "risk_tier", "recommended_action", "control_share"]
    assert table["version"].nunique() == 1
    combos = set(zip(table["segment"], table["risk_tier"]))
    assert combos == {(segment, tier) for segment in SEGMENT_NAMES for tier in RISK_TIERS}
    assert (table["recommended_action"].str.len() > 10).all()


def _write_table(tmp_path, table: pd.DataFrame):
    path = tmp_path / "actions.csv"
    table.to_csv(path, index=False)
    return path


def test_action_table_missing_combination_fails(tmp_path):
    table = load_action_table()
    incomplete = table[~((table["segment"] == "Dabblers") & (table["risk_tier"] == "High"))]
    with pytest.raises(ValueError, match=r"lacks rows for .*Dabblers.*High"):
        load_action_table(_write_table(tmp_path, incomplete))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.assign(version=["v1"] * 6 + ["v2"] * 6), "exactly one version"),
        (lambda t: pd.concat([t, t.iloc[[0]]]), "several rows"),
        (lambda t: t.assign(segment=t["segment"].replace("Dabblers", "Casuals")), "unknown segments"),
        (lambda t: t.assign(recommended_action=[""] + t["recommended_action"].tolist()[1:]), "empty cells"),
        (lambda t: t.drop(columns="version"), "lacks columns"),
    ],
)
def test_action_table_validation_errors(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        load_action_table(_write_table(tmp_path, change(load_action_table())))


def test_recommend_actions_looks_up_the_rule_table():
    table = load_action_table()
    segments = pd.Series(["Dabblers", "Road Warriors", "Loyal Regulars"], index=[7, 8, 9])
    tiers = pd.Categorical(["Critical", "Low", "High"], categories=list(RISK_TIERS), ordered=True)
    actions = recommend_actions(segments, tiers, table)
    expected = table.set_index(["segment", "risk_tier"])["recommended_action"]
    assert list(actions.index) == [7, 8, 9]
    assert actions.tolist() == [
        expected[("Dabblers", "Critical")],
        expected[("Road Warriors", "Low")],
        expected[("Loyal Regulars", "High")],
    ]
    with pytest.raises(ValueError, match="Casuals"):
        recommend_actions(["Casuals"], ["Low"], table)


def _high_tiers(model, X, cutoffs) -> tuple[np.ndarray, np.ndarray]:
    risk = model.predict_proba(X)[:, 1]
    return risk, np.asarray(assign_tiers(risk, cutoffs) >= "High")


def test_top_reasons_name_the_planted_driver_with_direction_and_values(champion, week_features):
    _, model, cutoffs = champion
    X = week_features[FEATURES]
    risk, high = _high_tiers(model, X, cutoffs)
    assert 0 < high.sum() < len(X)
    usual = usual_values(week_features, FEATURES, ["loyalty_card_tier"])
    reasons = top_reasons(lambda rows: model.predict_proba(rows)[:, 1], X, risk, high, usual, k=3)
    assert list(reasons.columns) == ["top_reasons", "top_reason_features"]
    assert (reasons.index == X.index).all()
    assert (reasons.loc[~high] == "").all().all()
    # The driver raises risk by being high: a member above its usual range has it as first reason,
    # with both values; a member inside the usual range is not unusual in it.
    unusual = high & (X[DRIVER] > usual[DRIVER]["high"]).to_numpy()
    assert unusual.sum() > 0.8 * high.sum()
    named = reasons["top_reason_features"].str.split(",")
    assert named[high].map(lambda names: set(names) <= {*FEATURES, ""}).all()
    assert named[unusual].map(lambda names: 1 <= len(names) <= 3 and names[0] == DRIVER).all()
    assert named[high & ~unusual].map(lambda names: DRIVER not in names).all()
    first = reasons.loc[unusual, "top_reasons"].str.split("; ").str[0]
    expected = [
        f"months since the last flight: {value:,.0f} months, above the usual {usual[DRIVER]['usual']:,.0f} months"
        for value in X.loc[unusual, DRIVER]
    ]
    assert first.tolist() == expected


def test_top_reasons_explain_a_calibrated_gradient_boosting_model_where_fewer_flights_raise_risk():
    rng = np.random.default_rng(5)
    count = 6000
    X = pd.DataFrame(
        {
            "flights_3m": rng.integers(0, 12, count).astype(float),
            "tenure_months": rng.integers(1, 80, count).astype(float),
            "loyalty_card_tier": rng.integers(0, 3, count).astype(float),
        }
    )
    churned = (rng.random(count) < 1 / (1 + np.exp(-(-1.0 - 0.6 * X["flights_3m"])))).astype(int)
    boosting = Pipeline([("boosting", HistGradientBoostingClassifier(max_iter=60, random_state=0))])
    boosting.fit(X.iloc[:4000], churned.iloc[:4000])
    model = CalibratedClassifierCV(FrozenEstimator(boosting), method="isotonic").fit(
        X.iloc[4000:], churned.iloc[4000:]
    )
    risk = model.predict_proba(X)[:, 1]
    explain = risk >= np.quantile(risk, 0.9)
    usual = usual_values(X, list(X.columns), ["loyalty_card_tier"])
    assert usual["flights_3m"] == {
        "low": X["flights_3m"].quantile(0.25),
        "usual": X["flights_3m"].median(),
        "high": X["flights_3m"].quantile(0.75),
    }
    assert usual["loyalty_card_tier"] == dict.fromkeys(["low", "usual", "high"], X["loyalty_card_tier"].mode()[0])
    reasons = top_reasons(lambda rows: model.predict_proba(rows)[:, 1], X, risk, explain, usual)
    few_flights = explain & (X["flights_3m"] < usual["flights_3m"]["low"]).to_numpy()
    assert few_flights.sum() > 0.5 * explain.sum()
    explained = reasons[few_flights]
    assert (explained["top_reason_features"].str.split(",").str[0] == "flights_3m").mean() > 0.95
    assert explained["top_reasons"].str.startswith("flights in the last 3 months: ").mean() > 0.95
    below = f"below the usual {usual['flights_3m']['usual']:.0f}"
    assert explained["top_reasons"].str.contains(below).mean() > 0.95
    # A member already at every usual value has no single reason.
    at_usual = pd.DataFrame([{column: values["usual"] for column, values in usual.items()}])
    alone = top_reasons(lambda rows: model.predict_proba(rows)[:, 1], at_usual, [0.5], [True], usual)
    assert alone.iloc[0].tolist() == [NO_SINGLE_REASON, ""]


def test_reason_wording_for_known_categorical_and_unknown_features():
    assert reason_text("flights_3m", 0.0, 4.0) == "flights in the last 3 months: 0, below the usual 4"
    assert reason_text("distance_12m", 12345.6, 8000.0) == (
        "distance flown in the last 12 months: 12,346 km, above the usual 8,000 km"
    )
    assert reason_text("loyalty_card_tier", 0.0, 1.0, categorical=True) == "loyalty card: Star (usual: Nova)"
    assert reason_text("promotion_enrollment", 1.0, 0.0) == "enrolled through the 2018 promotion: yes (usual: no)"
    assert reason_text("companion_share_12m", np.nan, 0.2) == (
        "share of flights with companions: none recorded (usual: 20%)"
    )
    assert reason_text("lounge_visits_24m", 1.0, 3.5) == "lounge visits in the last 24 months: 1.0, below the usual 3.5"
    assert feature_wording("province_code").label == "province"


def test_usual_values_from_an_older_models_drift_reference_approximate_the_quartiles(week_features):
    reference = build_reference(
        week_features, FEATURES, ["loyalty_card_tier"], np.full(len(week_features), 0.1), ["Low"] * len(week_features)
    )
    from_reference = usual_values_from_drift_reference(reference)
    exact = usual_values(week_features, FEATURES, ["loyalty_card_tier"])
    assert set(from_reference) == set(FEATURES)
    assert from_reference[DRIVER]["usual"] == exact[DRIVER]["usual"]
    assert from_reference["loyalty_card_tier"] == exact["loyalty_card_tier"]
    # Quartiles come from decile edges: within a decile of the exact ones.
    for column in (DRIVER, "tenure_months"):
        for name, (lowest, highest) in {"low": (0.2, 0.3), "usual": (0.45, 0.55), "high": (0.7, 0.8)}.items():
            spread = week_features[column].quantile([lowest, highest])
            assert spread.iloc[0] <= from_reference[column][name] <= spread.iloc[1]


def test_score_members_columns_dtypes_and_ranges(champion, week_features):
    _, model, cutoffs = champion
    features = week_features.iloc[::-1]  # non-default index order: segments align by index
    segments = pd.Series(
        np.array(SEGMENT_NAMES, dtype=object)[features["loyalty_number"].to_numpy() % 3], index=features.index
    ).sample(frac=1.0, random_state=0)
    predictions = score_members(
        model, features, FEATURES, cutoffs, segments, load_action_table(), "2018-12-03", "churn-v7", "seg-v2"
    )
    assert list(predictions.columns) == [*PREDICTION_COLUMNS, *EXPERIMENT_COLUMNS]
    assert len(predictions) == len(features)
    assert predictions["loyalty_number"].tolist() == features["loyalty_number"].tolist()
    assert predictions["loyalty_number"].dtype == np.int64
    assert (predictions["week"] == "2018-12-03").all()
    assert predictions["snapshot_month"].dtype == "datetime64[ns]"
    risk = predictions["churn_risk_pct"]
    assert risk.dtype == np.float64 and risk.between(0, 100).all()
    assert np.allclose(risk, risk.round(1))
    expected_risk = np.round(model.predict_proba(features[FEATURES])[:, 1] * 100, 1)
    np.testing.assert_allclose(risk, expected_risk)
    assert isinstance(predictions["risk_tier"].dtype, pd.CategoricalDtype)
    assert predictions["risk_tier"].cat.ordered
    assert list(predictions["risk_tier"].cat.categories) == list(RISK_TIERS)
    expected_segments = np.array(SEGMENT_NAMES, dtype=object)[predictions["loyalty_number"].to_numpy() % 3]
    assert (predictions["segment"].to_numpy() == expected_segments).all()
    table = load_action_table().set_index(["segment", "risk_tier"])["recommended_action"]
    looked_up = table.reindex(pd.MultiIndex.from_arrays([predictions["segment"], predictions["risk_tier"].astype(str)]))
    assert (predictions["assigned_action"].to_numpy() == looked_up.to_numpy()).all()
    treated = predictions["experiment_arm"] == "treatment"
    assert (predictions.loc[treated, "recommended_action"] == predictions.loc[treated, "assigned_action"]).all()
    assert (predictions.loc[~treated, "recommended_action"] == HOLD_OUT_ACTION).all()
    explained = predictions["risk_tier"].isin(["High", "Critical"])
    assert (predictions.loc[explained, "top_reasons"] != "").all()
    assert (predictions.loc[~explained, "top_reasons"] == "").all()
    assert (predictions["churn_model_version"] == "churn-v7").all()
    assert (predictions["segmentation_model_version"] == "seg-v2").all()

    counts = tier_segment_counts(predictions)
    assert list(counts.index) == list(RISK_TIERS) and list(counts.columns) == list(SEGMENT_NAMES)
    assert counts.to_numpy().sum() == len(predictions)
    assert counts.loc["Critical"].sum() == (predictions["risk_tier"] == "Critical").sum()


def test_score_members_rejects_members_without_segment_and_duplicates(champion, week_features):
    _, model, cutoffs = champion
    segments = pd.Series("Dabblers", index=week_features.index[1:])
    arguments = (FEATURES, cutoffs)
    with pytest.raises(ValueError, match="1 scored members have no segment"):
        score_members(model, week_features, *arguments, segments, load_action_table(), "2018-12-03", "c", "s")
    doubled = pd.concat([week_features, week_features.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="several rows for members"):
        score_members(
            model, doubled, *arguments, ["Dabblers"] * len(doubled), load_action_table(), "2018-12-03", "c", "s"
        )


def test_every_member_of_the_drop_is_scored_cancelled_or_left_out_with_a_reason():
    drop_date = "2026-11-20"  # snapshot 2026-10
    members = [
        member_row(100000),  # scored
        member_row(100001),  # eligible, but scoring_features had no row for it
        member_row(100002, enrolled=(2026, 11)),  # enrolled in the month-to-date month
        member_row(100003, cancelled=(2026, 11)),  # cancelled by the drop date: not eligible
        member_row(100004, cancelled=(2020, 5)),
        member_row(100005, enrolled=(2099, 1)),  # quarantined: after_drop_date
        member_row(100006, enrolled=(2026, 10)),  # enrolled in the snapshot month: scored
    ]
    drop = ingest_drop(
        [SourceFile("l.csv", csv_bytes(LOYALTY_HEADER, members))],
        [SourceFile("a.csv", csv_bytes(ACTIVITY_HEADER, [activity_row(100000, 2026, 10)]))],
        drop_date=drop_date,
    )
    predictions = pd.DataFrame({"loyalty_number": [100000, 100006]})

    counts = unscored_member_counts(drop.loyalty, drop.quarantine, predictions, drop_date)

    assert drop.stats["quarantined_by_reason"] == {"after_drop_date": 1}
    assert counts == {
        "members_in_drop": 7,
        "members_scored": 2,
        "members_cancelled": 2,
        "members_left_out": 3,
        "left_out_by_reason": {
            "loyalty_row_quarantined": 1,
            "enrolled_after_snapshot": 1,
            "no_scoring_features": 1,
        },
    }


def test_relative_risk_against_the_week_mean_and_percentile():
    week = pd.DataFrame({"churn_risk_pct": [1.0, 2.0, 2.0, 5.0]})
    relative = add_relative_risk(week)
    assert relative["risk_vs_average"].tolist() == [0.4, 0.8, 0.8, 2.0]
    assert relative["risk_percentile"].tolist() == [25.0, 75.0, 75.0, 100.0]
