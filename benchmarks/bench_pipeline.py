"""Churn training on the 15,000-member history, and the weekly job as a Dagster run against its floor."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import date
from pathlib import Path

AS_OF = date(2026, 11, 27)
TRAINING_DROP = date(2026, 10, 31)


def bench_churn_training_15k():
    """Monthly training of the candidate on 15k members x 24 months: both families with their
    settings, calibration, baseline, bootstrap intervals and the rolling backtest (data preparation
    not timed). The note also gives the process CPU seconds: on a shared machine the wall time
    includes waiting for other processes."""
    import resource

    from loyalty_assets.defs.features.assets import TrainingSetConfig
    from loyalty_assets.defs.models.churn.assets import ChurnCandidateConfig
    from loyalty_assets.domain.churn import train_churn_candidate
    from loyalty_assets.domain.features import MODEL_FEATURES, all_snapshots, build_features, last_complete_month
    from loyalty_assets.domain.ingest import SourceFile, ingest_drop
    from loyalty_assets.domain.labels import build_training_set
    from loyalty_assets.domain.sample_data import SampleConfig, encode_drop_file, extract_as_of, simulate_population

    members, flights = extract_as_of(simulate_population(SampleConfig(customers=15000), AS_OF), TRAINING_DROP)
    drop = ingest_drop(
        [SourceFile("loyalty.csv", encode_drop_file(members, "csv"))],
        [SourceFile("activity.csv", encode_drop_file(flights, "csv"))],
        drop_date=TRAINING_DROP,
    )
    loyalty, activity = drop.loyalty, drop.activity
    features = build_features(loyalty, activity, all_snapshots(activity, TRAINING_DROP))
    set_config = TrainingSetConfig()
    training_set = build_training_set(
        features,
        loyalty,
        horizon_months=set_config.horizon_months,
        last_complete=last_complete_month(TRAINING_DROP),
        lookback_months=set_config.lookback_months,
    )
    config = ChurnCandidateConfig().to_training_config(set_config.horizon_months)

    def cpu_seconds() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_started, started = cpu_seconds(), time.perf_counter()
    candidate = train_churn_candidate(training_set, MODEL_FEATURES, config)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    metrics = candidate.metrics
    families = ", ".join(
        f"{family} validation {summary['validation_roc_auc']:.3f} test {summary['test_roc_auc']:.3f}"
        for family, summary in metrics["families"].items()
    )
    calibration = metrics["calibration"]
    return seconds, (
        f"{cpu:.0f} CPU s; {len(training_set)} rows, {metrics['n_train_fitted']} fitted; {families}; chose "
        f"{metrics['model_family']}; test ROC-AUC {metrics['roc_auc']:.3f}, rolling mean "
        f"{metrics['rolling_roc_auc_mean']:.3f} over {metrics['rolling_roc_auc_windows']}, baseline "
        f"{metrics['baseline_roc_auc']:.3f} (paired gain {metrics['baseline_difference']:+.3f}, 95% "
        f"{metrics['baseline_difference_low']:+.3f} to {metrics['baseline_difference_high']:+.3f}); flagged "
        f"{metrics['flagged_share']:.0%} at recall {metrics['recall']:.2f}; calibration-in-the-large "
        f"{calibration['calibration_in_the_large']:.2f}, Brier skill {calibration['brier_skill']:.3f}"
    )


def bench_weekly_job_15k():
    """``weekly_scoring_job`` in-process for one week, and the plain-Python floor of the same work."""
    home = Path(tempfile.mkdtemp(prefix="loyalty_bench_"))
    os.environ["LOYALTY_HOME"] = str(home)
    os.environ.pop("DAGSTER_HOME", None)
    import dagster as dg
    import pandas as pd

    from loyalty_assets.definitions import build_defs
    from loyalty_assets.domain.storage import joblib_bytes_to_object, parquet_bytes_to_dataframe
    from loyalty_assets.runner import demo
    from loyalty_assets.settings import load_settings

    demo(AS_OF, echo=lambda line: None)
    settings = load_settings()
    week = "2026-11-23"
    job = build_defs(settings).resolve_job_def("weekly_scoring_job")
    started = time.perf_counter()
    result = job.execute_in_process(partition_key=week, instance=dg.DagsterInstance.ephemeral())
    job_seconds = time.perf_counter() - started
    assert result.success

    lake = home / "lake"
    started = time.perf_counter()
    features = parquet_bytes_to_dataframe((lake / "scoring_features" / f"{week}.parquet").read_bytes())
    champion = joblib_bytes_to_object((lake / "churn_model.pkl").read_bytes())
    scores = champion.model.predict_proba(features[champion.feature_columns])[:, 1]
    pd.DataFrame({"loyalty_number": features["loyalty_number"], "churn_risk_pct": scores * 100}).to_csv(
        home / "floor.csv", index=False
    )
    floor = time.perf_counter() - started
    step_seconds = {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }
    scoring = step_seconds["churn_predictions"]
    slowest = sorted(step_seconds.items(), key=lambda item: -item[1])[:3]
    return job_seconds, (
        f"floor (read features, predict_proba, write CSV) {floor:.2f} s; churn_predictions step {scoring:.2f} s "
        f"= {scoring / floor:.1f}x floor; whole job ({len(step_seconds)} steps) {job_seconds / floor:.1f}x floor; "
        "slowest steps " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in slowest)
    )
