"""Concept drift (``domain.monitoring``) of a hand-made week whose outcomes are counted by hand, judged
by the record of the model version that scored it and reported as the ``concept_drift`` check reports it."""

from datetime import date

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from loyalty_assets.defs.monitoring.checks import drift_check_result
from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import ChurnBundle, ChurnRecord
from loyalty_assets.domain.drift import DriftThresholds
from loyalty_assets.domain.features import ID_COLUMNS, last_complete_month
from loyalty_assets.domain.monitoring import concept_drift_verdict, realised_performance, weeks_within
from loyalty_assets.domain.storage import LocalStore

LABELLED_WEEK, OLDER_WEEK, IMMATURE_WEEK, CURRENT_WEEK = "2024-01-08", "2024-01-01", "2024-03-04", "2024-04-01"
LABEL_LOOKBACK_WEEKS = 26
CURRENT_DROP = "2024-04-02"  # last complete month 2024-03: snapshot 2023-12 + 3 months has matured
# member: (churn_risk_pct, risk_tier, cancellation (year, month) or None)
HAND_MADE = {
    1: (90.0, "Critical", (2024, 2)),
    2: (70.0, "High", (2024, 3)),
    3: (60.0, "High", None),
    4: (40.0, "Medium", (2024, 1)),
    5: (35.0, "Medium", None),
    6: (20.0, "Low", (2024, 4)),  # cancels after the 3-month horizon: not churned at 2023-12
    7: (10.0, "Low", None),
    8: (5.0, "Low", None),
}


def hand_made_predictions(week: str, snapshot: str, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "loyalty_number": np.array(list(HAND_MADE), dtype="int64"),
            "week": week,
            "snapshot_month": pd.Timestamp(snapshot),
            "churn_risk_pct": [risk for risk, _, _ in HAND_MADE.values()],
            "risk_tier": [tier for _, tier, _ in HAND_MADE.values()],
            "churn_model_version": version,
        }
    )


def hand_made_ids(snapshot: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"loyalty_number": np.array(list(HAND_MADE), dtype="int64"), "snapshot_month": pd.Timestamp(snapshot)}
    ).assign(history_months=12)[ID_COLUMNS]


def hand_made_loyalty() -> pd.DataFrame:
    cancellations = [cancelled for _, _, cancelled in HAND_MADE.values()]
    return pd.DataFrame(
        {
            "loyalty_number": np.array(list(HAND_MADE), dtype="int64"),
            "enrollment_year": 2020,
            "enrollment_month": 5,
            "cancellation_year": pd.array([c[0] if c else None for c in cancellations], dtype="Int64"),
            "cancellation_month": pd.array([c[1] if c else None for c in cancellations], dtype="Int64"),
        }
    )


def hand_made_bundle(version: str, roc_auc: float, recall: float, threshold: float) -> ChurnBundle:
    """A churn version with only what concept drift reads: promotion metrics, threshold and horizon."""
    record = ChurnRecord(
        source_partition=f"{version[:7]}-01",
        training_window={},
        metrics={"roc_auc": roc_auc, "recall": recall},
        feature_list=[],
        data_fingerprint="",
        library_versions={},
        config={},
        threshold=threshold,
        tier_cutoffs={},
        capacity_tier_cutoffs={},
        merged_tiers=[],
        horizon_months=3,
    )
    return ChurnBundle(version, None, None, None, pd.DataFrame(), record)


def concept_drift_of_week(
    store: LocalStore, champion: ChurnBundle, week: str, drop: str, scored: dict[str, pd.DataFrame]
) -> dg.AssetCheckResult:
    """The concept drift check's result for ``week``, whose latest drop is dated ``drop``."""
    features = {OLDER_WEEK: hand_made_ids("2023-11-01"), LABELLED_WEEK: hand_made_ids("2023-12-01")}
    last_complete = last_complete_month(date.fromisoformat(drop))
    realised = realised_performance(
        store,
        champion,
        {key: scored[key].copy for key in weeks_within(scored, week, LABEL_LOOKBACK_WEEKS)},
        {key: frame.copy for key, frame in features.items()},
        hand_made_loyalty(),
        last_complete,
        DriftThresholds(),
    )
    return drift_check_result(concept_drift_verdict(realised, champion.version, last_complete, LABEL_LOOKBACK_WEEKS))


def values(evaluation: dg.AssetCheckResult) -> dict:
    return {key: value.value for key, value in evaluation.metadata.items()}


def test_concept_drift_on_a_hand_made_week(tmp_path):
    store = LocalStore(tmp_path / "lake")
    champion = hand_made_bundle("2023-12.champion", roc_auc=0.95, recall=0.85, threshold=0.5)
    registry.register_bundle(store, hand_made_bundle("2023-11.older", roc_auc=0.90, recall=0.60, threshold=0.3))
    scored = {
        OLDER_WEEK: hand_made_predictions(OLDER_WEEK, "2023-11-01", "2023-11.older"),
        LABELLED_WEEK: hand_made_predictions(LABELLED_WEEK, "2023-12-01", champion.version),
        IMMATURE_WEEK: hand_made_predictions(IMMATURE_WEEK, "2024-02-01", champion.version),
    }

    evaluation = concept_drift_of_week(store, champion, CURRENT_WEEK, CURRENT_DROP, scored)

    metadata = values(evaluation)
    # Churned at 2023-12: members 1, 2, 4. Positive above negative in 14 of 15 pairs (40 < 60).
    assert metadata["evaluated_week"] == LABELLED_WEEK
    assert metadata["weeks_evaluated"] == 2  # the immature week is left out
    assert metadata["roc_auc"] == pytest.approx(14 / 15)
    assert metadata["recall_at_threshold"] == pytest.approx(2 / 3)  # 90 and 70 flagged at 0.5, 40 missed
    assert metadata["recall_drop"] == pytest.approx(0.85 - 2 / 3)
    assert metadata["realised_churn_rate"] == pytest.approx(3 / 8)
    rates = {tier: metadata[f"churn_rate_{tier}"] for tier in ("Low", "Medium", "High", "Critical")}
    assert rates == {"Low": 0.0, "Medium": 0.5, "High": 0.5, "Critical": 1.0}
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "High (50.0%) <= Medium (50.0%)" in evaluation.description
    assert "consider retraining" in evaluation.description
    # The older week (snapshot 2023-11, labels in (2023-11, 2024-02]: members 1 and 4) is judged by its own
    # version's record: at its threshold 0.3 both churners are flagged.
    older = markdown_rows(metadata["realised_by_week"])[OLDER_WEEK]
    assert older["model_version"] == "2023-11.older"
    assert float(older["recall_at_threshold"]) == 1.0
    assert float(older["roc_auc"]) == pytest.approx(10 / 12, abs=1e-4)
    assert float(older["promotion_recall"]) == 0.6

    nothing_matured = concept_drift_of_week(store, champion, "2024-02-05", "2024-02-06", scored)
    assert nothing_matured.passed
    assert values(nothing_matured) == {"weeks_evaluated": 0, "labels_complete_to": "2024-01"}
    assert nothing_matured.description.startswith("no scored week of the last 26 has labels matured by 2024-01")


def markdown_rows(table: str) -> dict[str, dict[str, str]]:
    """Rows of a Markdown table keyed by their first cell."""
    header, _, *lines = table.splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    rows = [dict(zip(names, [cell.strip() for cell in line.strip("|").split("|")], strict=True)) for line in lines]
    return {row[names[0]]: row for row in rows}
