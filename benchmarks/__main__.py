"""``make bench``: every stage's wall time and peak memory in one table.

``python -m benchmarks WORD ...`` runs only the stages whose name contains one of the words.
"""

import sys

from benchmarks import harness

STAGES = [
    ("ingest one drop: 15k members, ~400k rows CSV", "benchmarks.bench_ingest:bench_ingest_drop", "<= 5 s, <= 1.5 GB"),
    (
        "ingest + completeness gate: 15k members",
        "benchmarks.bench_ingest:bench_ingest_with_completeness",
        "gate <= 10% of ingest",
    ),
    ("features 15k members x 24 months", "benchmarks.bench_features:bench_features_15k", "<= 3 s"),
    ("features 1M members x 24 months", "benchmarks.bench_features:bench_features_1m", "<= 180 s, <= 8 GB"),
    (
        "churn monthly training 15k x 24 months: 2 families, tuning, backtest",
        "benchmarks.bench_pipeline:bench_churn_training_15k",
        "<= 300 s",
    ),
    ("score_members 15k members", "benchmarks.bench_scoring:bench_score_15k", "<= 2 s"),
    ("score_members 1M members", "benchmarks.bench_scoring:bench_score_1m", "<= 60 s"),
    ("drift checks 15k members", "benchmarks.bench_scoring:bench_drift_15k", "<= 2 s"),
    ("experiment assignment 15k members", "benchmarks.bench_experiments:bench_assignment_15k", "<= 0.05 s"),
    ("experiment results 52 weeks x 15k", "benchmarks.bench_experiments:bench_results_52_weeks", "<= 5 s"),
    (
        "weekly_scoring_job 15k members (Dagster)",
        "benchmarks.bench_pipeline:bench_weekly_job_15k",
        "<= 15 s, <= 2x floor",
    ),
    (
        "online API: latency and 500 req/s for 30 s (15k members)",
        "benchmarks.bench_serving:bench_online_api",
        "POST p50 <= 2 ms, p99 <= 10 ms; GET p99 <= 3 ms; 0 errors",
    ),
]


def main(words: list[str]) -> None:
    rows = []
    for stage, target, goal in STAGES:
        if words and not any(word in stage for word in words):
            continue
        print(f"running: {stage}", flush=True)
        rows.append(harness.measure(stage, target, goal))
    harness.print_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
