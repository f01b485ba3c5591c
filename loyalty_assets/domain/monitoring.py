"""The week's drift evaluation: computed once per week, then read by the three drift checks and the report.

:func:`evaluate_week` composes ``domain.drift`` on the week's tables and on earlier weeks:

- feature drift of the week's features against the champion's reference;
- prediction drift of the week's scores against the reference of the model that scored them, and
  against the earlier weeks;
- concept drift: the realised quality of every earlier scored week whose churn labels have matured.

Each becomes a :class:`DriftVerdict` (status, message, metadata) in a :class:`WeekDriftEvaluation`,
which also holds the tables ``domain.monitoring_report`` renders. A model bundle that carries no
reference gets one built from its training set and stored beside its registry version
(:func:`champion_reference`). Every refusal is a ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import ChurnBundle, ChurnRecord
from loyalty_assets.domain.churn import data_fingerprint
from loyalty_assets.domain.drift import (
    DriftThresholds,
    build_reference,
    concept_drift,
    dataset_drift_status,
    drift_table_markdown,
    feature_drift,
    prediction_drift,
    score_distribution,
)
from loyalty_assets.domain.features import ID_COLUMNS, categorical_among, last_complete_month
from loyalty_assets.domain.labels import add_churn_labels
from loyalty_assets.domain.lake_keys import drift_reference_key
from loyalty_assets.domain.scoring import RISK_TIERS, assign_tiers
from loyalty_assets.domain.storage import ObjectStore, parquet_bytes_to_dataframe, split_s3_uri

METRIC_COLUMNS = ["roc_auc", "promotion_roc_auc", "recall_at_threshold", "promotion_recall"]
TIER_RATE_COLUMNS = [f"churn_rate_{tier}" for tier in RISK_TIERS]
SCORED_COLUMNS = ["loyalty_number", "snapshot_month", "churn_risk_pct", "risk_tier", "churn_model_version"]
REALISED_COLUMNS = [
    "week",
    "snapshot_month",
    "model_version",
    "n_members",
    "n_churned",
    "realised_churn_rate",
    *METRIC_COLUMNS,
    "status",
]
REALISED_TABLE_COLUMNS = [*REALISED_COLUMNS, *TIER_RATE_COLUMNS, "message"]

Loaders = Mapping[str, Callable[[], pd.DataFrame]]


def browser_link(url: str) -> str:
    """A link a browser opens: ``file://`` for a local file, the S3 console for ``s3://``."""
    if url.startswith("s3://"):
        bucket, key = split_s3_uri(url)
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    return Path(url).as_uri()


class Markdown(str):
    """A metadata value that is a Markdown table (the UI renders it as a table, not as text)."""


@dataclass(frozen=True)
class DriftVerdict:
    """One drift check's outcome: ``status`` ok / warn / fail, or None while there is nothing to judge
    (the check passes); ``metadata`` numbers, text, lists and :class:`Markdown` tables."""

    status: str | None
    message: str
    metadata: dict


@dataclass(frozen=True)
class MonitoringSettings:
    """The drift limits and how many earlier weeks each evaluation looks back at."""

    thresholds: DriftThresholds = DriftThresholds()
    previous_weeks: int = 4  # earlier weeks whose score histograms this week is compared with
    history_weeks: int = 12  # earlier weeks shown in the tier-share history
    label_lookback_weeks: int = 26  # earlier weeks searched for predictions with matured labels

    @property
    def lookback_weeks(self) -> int:
        return max(self.previous_weeks, self.history_weeks, self.label_lookback_weeks)


@dataclass(frozen=True)
class WeekDriftEvaluation:
    """Everything the checks report and the page shows for one week.

    ``model_version`` / ``reference_source``: the champion and where its reference came from.
    ``feature_drift``: the ``drift.feature_drift`` table. ``prediction``: the ``drift.prediction_drift``
    dict, against ``scoring_reference`` (the reference of the model that scored the week).
    ``tier_history``: tier shares per week (index week, columns ``RISK_TIERS``), oldest first, this
    week last. ``realised``: one row per matured week (``REALISED_TABLE_COLUMNS``), oldest first.
    ``verdicts``: one per drift check, keyed by its name.
    """

    week: str
    model_version: str
    reference_source: str
    n_members: int
    snapshot_month: str
    thresholds: DriftThresholds
    feature_drift: pd.DataFrame
    prediction: dict
    scoring_reference: dict
    tier_history: pd.DataFrame
    realised: pd.DataFrame
    verdicts: dict[str, DriftVerdict]


# --- the reference -------------------------------------------------------------------------------


def reference_from_training_set(champion: ChurnBundle, training_set: pd.DataFrame) -> dict:
    """The reference the candidate stores today: its out-of-time test rows, scored by the model."""
    test_snapshots = pd.to_datetime(champion.record.training_window["test"])
    rows = training_set[training_set["snapshot_month"].isin(test_snapshots)]
    if rows.empty:
        raise ValueError(
            f"churn version {champion.version}: its training set holds none of its test snapshots "
            f"{[str(s.date()) for s in test_snapshots]}"
        )
    columns = list(champion.feature_columns)
    scores = champion.model.predict_proba(rows[columns])[:, 1]
    return build_reference(
        rows, columns, categorical_among(columns), scores, assign_tiers(scores, champion.tier_cutoffs)
    )


def champion_reference(
    store: ObjectStore, champion: ChurnBundle, training_set_key: Callable[[str], str]
) -> tuple[dict, str]:
    """The drift reference of a churn model bundle and where it came from.

    ``bundle``: carried by the bundle (every candidate since drift monitoring). ``stored``: computed
    earlier for an older bundle and read from ``lake_keys.drift_reference_key``. ``computed``: built now from the
    candidate's ``churn_training_set`` partition (stored at ``training_set_key(partition)``; refused if
    that partition changed since training) and stored for later runs.
    """
    if champion.drift_reference is not None:
        return champion.drift_reference, "bundle"
    version = champion.version
    key = drift_reference_key(version)
    if store.exists(key):
        return json.loads(store.get_bytes(key)), "stored"
    partition = champion.record.source_partition
    training_key = training_set_key(partition)
    if not store.exists(training_key):
        raise ValueError(
            f"churn version {version} carries no drift reference and its training set churn_training_set "
            f"{partition} is not in the lake ({store.url(training_key)}): re-materialize that partition"
        )
    training_set = parquet_bytes_to_dataframe(store.get_bytes(training_key))
    if data_fingerprint(training_set) != champion.record.data_fingerprint:
        raise ValueError(
            f"churn version {version} carries no drift reference and churn_training_set {partition} has "
            "changed since it was trained (data fingerprint differs): promote a model trained since"
        )
    reference = reference_from_training_set(champion, training_set)
    store.put_bytes(key, json.dumps(reference).encode("utf-8"))
    return reference, "computed"


def scoring_bundle(store: ObjectStore, champion: ChurnBundle, predictions: pd.DataFrame) -> ChurnBundle:
    """The bundle of the model version that scored ``predictions``: the champion or a registered one."""
    version = single_value(predictions, "churn_model_version", "churn_predictions")
    return champion if version == champion.version else registry.load_bundle(store, "churn", version)


def single_value(frame: pd.DataFrame, column: str, what: str):
    values = frame[column].unique()
    if len(values) != 1:
        raise ValueError(f"{what} holds {len(values)} values of {column}, expected exactly one")
    return values[0]


def weeks_within(loaders: Loaders, week: str, count: int) -> dict[str, Callable[[], pd.DataFrame]]:
    """The loaders of the (at most) ``count`` weeks just before ``week``."""
    first = (date.fromisoformat(week) - timedelta(weeks=count)).isoformat()
    return {key: load for key, load in loaders.items() if first <= key < week}


# --- feature and prediction drift ----------------------------------------------------------------


def feature_drift_verdict(
    frame: pd.DataFrame, thresholds: DriftThresholds, model_version: str, reference_source: str
) -> DriftVerdict:
    """The dataset verdict on a ``drift.feature_drift`` table; ``drift_share`` is the share of features
    that fail (drifted)."""
    status = dataset_drift_status(frame, thresholds)
    failed = frame.loc[frame["status"] == "fail", "feature"].tolist()
    warned = frame.loc[frame["status"] == "warn", "feature"].tolist()
    top = frame.loc[frame["value"].idxmax()]
    message = (
        f"{status}: {len(failed)} of {len(frame)} features drifted ({', '.join(failed) or 'none'}), "
        f"{len(warned)} more warn ({', '.join(warned) or 'none'}); the dataset fails when more than "
        f"{thresholds.dataset_fail_share:.0%} drift; largest: {top['feature']} {top['statistic']} {top['value']:.4f}"
    )
    metadata = {
        "drift_table": Markdown(drift_table_markdown(frame)),
        "max_drift_score": float(top["value"]),
        "max_drift_feature": str(top["feature"]),
        "drift_share": len(failed) / len(frame),
        "warn_share": len(warned) / len(frame),
        "drifted_features": failed,
        "churn_model_version": model_version,
        "reference_source": reference_source,
    }
    return DriftVerdict(status, message, metadata)


def scores_and_tiers(predictions: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The probability (``churn_risk_pct / 100``) and tier of each scored member."""
    return predictions["churn_risk_pct"].astype(float) / 100.0, predictions["risk_tier"].astype(object)


def weekly_distributions(weeks: Loaders, edges: list[float]) -> list[dict]:
    """``drift.score_distribution`` of each week's predictions on the reference's bins, oldest first."""
    return [score_distribution(*scores_and_tiers(load()), edges, week=week) for week, load in sorted(weeks.items())]


def prediction_drift_verdict(result: dict, model_version: str, reference_source: str) -> DriftVerdict:
    """A ``drift.prediction_drift`` result against the reference of the scoring model ``model_version``."""
    previous = pd.DataFrame(result["score_psi_vs_previous_weeks"], columns=["week", "score_psi"])
    metadata = {
        "score_psi_vs_reference": result["score_psi_vs_reference"],
        "tier_psi_vs_reference": result["tier_psi_vs_reference"],
        "previous_weeks_compared": len(previous),
        **{f"tier_share_{tier}": result["current"]["tier_shares"][tier] for tier in RISK_TIERS},
        **{f"tier_share_change_{tier}": result["tier_share_delta"][tier] for tier in RISK_TIERS},
        "churn_model_version": model_version,
        "reference_source": reference_source,
    }
    if result["max_score_psi_vs_previous_weeks"] is not None:
        metadata["max_score_psi_vs_previous_weeks"] = result["max_score_psi_vs_previous_weeks"]
        metadata["score_psi_by_week"] = Markdown(previous.to_markdown(index=False, floatfmt=".4f"))
    return DriftVerdict(result["status"], result["message"], metadata)


# --- concept drift -------------------------------------------------------------------------------


def realised_performance(
    store: ObjectStore,
    champion: ChurnBundle,
    scored_weeks: Loaders,
    feature_weeks: Loaders,
    loyalty: pd.DataFrame,
    last_complete: pd.Timestamp,
    thresholds: DriftThresholds,
) -> pd.DataFrame:
    """Concept drift of every earlier scored week whose labels have matured by ``last_complete``.

    A week is judged against the promotion metrics and frozen threshold of the model version
    that scored it (the champion's record, or the registry's for an older version), with that
    version's label horizon; its members' labels come from ``loyalty`` (the current drop) through
    ``labels.add_churn_labels``. A matured week whose members all churned or none did cannot be
    scored: it is listed with status ``n/a``. One row per matured week, oldest first.
    """
    records = {champion.version: champion.record}
    rows = []
    for week, load in sorted(scored_weeks.items()):  # one pass per earlier week, not per member
        scored = load()
        snapshot = pd.Timestamp(single_value(scored, "snapshot_month", f"churn_predictions {week}"))
        version = single_value(scored, "churn_model_version", f"churn_predictions {week}")
        if version not in records:
            records[version] = ChurnRecord.from_json(registry.record(store, "churn", version))
        record = records[version]
        horizon = record.horizon_months
        if snapshot + pd.DateOffset(months=horizon) > last_complete:
            continue
        if week not in feature_weeks:
            raise ValueError(
                f"churn_predictions {week} has matured labels but scoring_features {week} is not in the lake: "
                "the scored snapshots cannot be labelled"
            )
        labelled = add_churn_labels(feature_weeks[week]()[ID_COLUMNS], loyalty, horizon, last_complete)
        outcomes = labelled.set_index("loyalty_number")["churned"]
        row = {
            "week": week,
            "snapshot_month": str(snapshot.date()),
            "model_version": version,
            "n_members": len(outcomes),
            "n_churned": int(outcomes.sum()),
            "realised_churn_rate": float(outcomes.mean()),
        }
        if outcomes.nunique() < 2:
            only = "churned" if outcomes.iloc[0] == 1 else "stayed"
            rows.append({**row, "status": "n/a", "message": f"every member {only}: ROC-AUC and recall are undefined"})
            continue
        result = concept_drift(scored, outcomes, float(record.threshold), record.metrics, thresholds)
        rows.append(
            {
                **row,
                **{column: result[column] for column in METRIC_COLUMNS},
                **{f"churn_rate_{tier}": rate for tier, rate in result["churn_rate_by_tier"].items()},
                "status": result["status"],
                "message": result["message"],
            }
        )
    return pd.DataFrame(rows, columns=REALISED_TABLE_COLUMNS).astype(
        {column: float for column in ["realised_churn_rate", *METRIC_COLUMNS, *TIER_RATE_COLUMNS]}
    )


def concept_drift_verdict(
    realised: pd.DataFrame, champion_version: str, last_complete: pd.Timestamp, lookback_weeks: int
) -> DriftVerdict:
    """The verdict on the latest scorable matured week; status None while there is none."""
    evaluated = realised[realised["status"] != "n/a"]
    metadata = {"weeks_evaluated": len(evaluated), "labels_complete_to": f"{last_complete:%Y-%m}"}
    if evaluated.empty:
        message = (
            f"no scored week of the last {lookback_weeks} has labels matured by {last_complete:%Y-%m} "
            "with both churners and non-churners yet"
        )
        return DriftVerdict(None, message, metadata)
    latest = evaluated.iloc[-1]
    message = (
        f"week {latest['week']} (snapshot {latest['snapshot_month']}, model {latest['model_version']}): "
        f"{latest['message']}"
    )
    if latest["model_version"] != champion_version:
        message += f"; that model has since been replaced by {champion_version}"
    if latest["status"] == "fail":
        message += "; consider retraining"
    numbers = [*METRIC_COLUMNS, "realised_churn_rate", *TIER_RATE_COLUMNS]
    metadata = {
        **metadata,
        "evaluated_week": latest["week"],
        "n_members": int(latest["n_members"]),
        "n_churned": int(latest["n_churned"]),
        **{name: float(latest[name]) for name in numbers if pd.notna(latest[name])},
        "roc_auc_drop": float(latest["promotion_roc_auc"] - latest["roc_auc"]),
        "recall_drop": float(latest["promotion_recall"] - latest["recall_at_threshold"]),
        "realised_by_week": Markdown(realised[REALISED_COLUMNS].to_markdown(index=False, floatfmt=".4f")),
    }
    return DriftVerdict(latest["status"], message, metadata)


# --- the week ------------------------------------------------------------------------------------


def evaluate_week(
    week: str,
    champion: ChurnBundle,
    scoring_features: pd.DataFrame,
    churn_predictions: pd.DataFrame,
    earlier_predictions: Loaders,
    earlier_features: Loaders,
    drop: tuple[date, pd.DataFrame],
    settings: MonitoringSettings,
    store: ObjectStore,
    training_set_key: Callable[[str], str],
) -> WeekDriftEvaluation:
    """Feature, prediction and concept drift of ``week``, each evaluated once.

    ``earlier_predictions``: ``churn_predictions`` (``SCORED_COLUMNS``) of the weeks before, as far
    back as ``settings.lookback_weeks``; ``earlier_features``: ``scoring_features`` (``ID_COLUMNS``)
    of the label lookback; ``drop``: the date and loyalty table of the week's latest drop, whose
    last complete month bounds the matured labels. ``store`` holds the registry and the references.
    """
    thresholds = settings.thresholds
    reference, reference_source = champion_reference(store, champion, training_set_key)
    frame = feature_drift(reference, scoring_features, thresholds)
    scorer = scoring_bundle(store, champion, churn_predictions)
    scoring_reference, scoring_source = (
        (reference, reference_source) if scorer is champion else champion_reference(store, scorer, training_set_key)
    )
    edges = scoring_reference["score_histogram"]["edges"]
    previous = weekly_distributions(weeks_within(earlier_predictions, week, settings.previous_weeks), edges)
    prediction = prediction_drift(scoring_reference, *scores_and_tiers(churn_predictions), previous, thresholds)

    drop_date, loyalty = drop
    last_complete = last_complete_month(drop_date)
    realised = realised_performance(
        store,
        champion,
        weeks_within(earlier_predictions, week, settings.label_lookback_weeks),
        earlier_features,
        loyalty,
        last_complete,
        thresholds,
    )
    history = [
        *weekly_distributions(weeks_within(earlier_predictions, week, settings.history_weeks), edges),
        {**prediction["current"], "week": week},
    ]
    return WeekDriftEvaluation(
        week=week,
        model_version=champion.version,
        reference_source=reference_source,
        n_members=len(churn_predictions),
        snapshot_month=str(pd.Timestamp(single_value(churn_predictions, "snapshot_month", "churn_predictions")).date()),
        thresholds=thresholds,
        feature_drift=frame,
        prediction=prediction,
        scoring_reference=scoring_reference,
        tier_history=pd.DataFrame([d["tier_shares"] for d in history], index=[d["week"] for d in history]),
        realised=realised,
        verdicts={
            "feature_drift": feature_drift_verdict(frame, thresholds, champion.version, reference_source),
            "prediction_drift": prediction_drift_verdict(prediction, scorer.version, scoring_source),
            "concept_drift": concept_drift_verdict(
                realised, champion.version, last_complete, settings.label_lookback_weeks
            ),
        },
    )


def report_summary(evaluation: WeekDriftEvaluation) -> dict:
    """The headline figures the report's materialization records."""
    feature = evaluation.verdicts["feature_drift"]
    return {
        "churn_model_version": evaluation.model_version,
        "reference_source": evaluation.reference_source,
        "feature_drift_status": feature.status,
        "drift_share": feature.metadata["drift_share"],
        "max_drift_score": feature.metadata["max_drift_score"],
        "prediction_drift_status": evaluation.prediction["status"],
        "score_psi_vs_reference": evaluation.prediction["score_psi_vs_reference"],
        "concept_drift_status": evaluation.verdicts["concept_drift"].status or "n/a",
        "weeks_with_matured_labels": len(evaluation.realised),
    }
