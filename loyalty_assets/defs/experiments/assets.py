"""Retention experiments: realised uplift per action from the matured weeks' hold-outs."""

import dagster as dg
import pandas as pd
from pydantic import Field

from loyalty_assets.defs.drops import RAW_DROP_INS
from loyalty_assets.defs.metadata import markdown_table, table_metadata
from loyalty_assets.defs.partitions import monthly_partitions
from loyalty_assets.defs.storage import LAZY_PARTITIONS, latest_partition
from loyalty_assets.domain.experiments import (
    EXPERIMENT_COLUMNS,
    RESULT_COLUMNS,
    measure_experiments,
    sample_ratio_mismatches,
)
from loyalty_assets.domain.figures import png_markdown
from loyalty_assets.domain.monitoring_report import uplift_png

GROUP = "experiments"
OWNERS = ["team:ml-engineering"]
SCORED_COLUMNS = ["loyalty_number", "week", "snapshot_month", "risk_tier", "segment", *EXPERIMENT_COLUMNS]


class ExperimentResultsConfig(dg.Config):
    horizon_months: int = Field(default=3, description="Outcome: the member cancels within this many months.")
    target_risk_reduction: float = Field(
        default=0.02,
        description="Planned effect (absolute churn reduction): an action has reached its planned sample "
        "size once its minimum detectable effect is at or below this.",
    )


def _check(name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name=name, asset="retention_experiment_results", description=description)


EXPERIMENT_CHECKS = [
    _check("no_harmful_action", "WARN when an action's interval shows more churn treated than held out."),
    _check(
        "effect_at_planned_size",
        "WARN when an action reached its planned sample size with an interval that includes zero.",
    ),
    _check("sample_ratio", "WARN when a cell's hold-out share differs from its configured share (binomial test)."),
]


def _warn(name: str, offenders: pd.DataFrame, message: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=offenders.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=message if not offenders.empty else "passed",
        metadata={"offending_rows": len(offenders)},
    )


@dg.asset(
    io_manager_key="lake_io_manager",
    kinds={"pandas", "parquet"},
    owners=OWNERS,
    partitions_def=monthly_partitions,
    ins={
        "churn_predictions": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-12, allow_nonexistent_upstream_partitions=True
            ),
            metadata=LAZY_PARTITIONS,
        ),
        "raw_loyalty_history": RAW_DROP_INS["raw_loyalty_history"],
    },
    check_specs=EXPERIMENT_CHECKS,
    group_name=GROUP,
)
def retention_experiment_results(
    context: dg.AssetExecutionContext, config: ExperimentResultsConfig, churn_predictions, raw_loyalty_history
):
    """Per retention experiment, action and tier: members treated and held out, realised churn per arm,
    risk reduction with its 95% Newcombe interval, relative reduction, number needed to treat and the
    minimum detectable effect, from every scored week of the last 12 months whose outcome horizon has
    matured in the month's latest accepted drop."""
    window = context.partition_time_window
    drop, loyalty = latest_partition(
        raw_loyalty_history, "raw_loyalty_history", f"{window.start.date()} .. {window.end.date()} (exclusive)"
    )
    weeks = sorted(churn_predictions)
    loaded = [churn_predictions[week]() for week in weeks]
    # Weeks scored before experiments existed hold no arms; before the first experiment week there is
    # nothing to measure yet: an empty table, not a failure.
    frames = [frame[SCORED_COLUMNS] for frame in loaded if "experiment_arm" in frame.columns]
    scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORED_COLUMNS)
    measurement = measure_experiments(scored, loyalty, drop, config.horizon_months)
    results, assignments = measurement.results, measurement.assignments
    measured = results.dropna(subset=["risk_reduction"])
    metadata = {
        **table_metadata(results),
        "drop_date": drop,
        "weeks_read": len(weeks),
        "weeks_without_experiment": len(weeks) - len(frames),
        "members_assigned": len(assignments),
        "members_with_matured_outcome": len(measurement.outcomes),
        "results": dg.MetadataValue.md(markdown_table(results, floatfmt=".4g") if len(results) else "none yet"),
    }
    if not measured.empty:
        metadata["uplift_plot"] = dg.MetadataValue.md(png_markdown(uplift_png(measured), "uplift per action"))
    yield dg.Output(results[RESULT_COLUMNS], metadata=metadata)

    harmful = measured[measured["risk_reduction_high"] < 0]
    yield _warn("no_harmful_action", harmful, f"more churn treated than held out: {', '.join(harmful['action'])}")
    inconclusive = measured[
        (measured["minimum_detectable_effect"] <= config.target_risk_reduction)
        & (measured["risk_reduction_low"] <= 0)
        & (measured["risk_reduction_high"] >= 0)
    ]
    yield _warn(
        "effect_at_planned_size",
        inconclusive,
        f"no evidence at the planned sample size: {', '.join(inconclusive['action'])}",
    )
    mismatched = sample_ratio_mismatches(assignments)
    yield _warn(
        "sample_ratio",
        mismatched,
        f"hold-out share off in {len(mismatched)} cells: {mismatched.head(5).to_dict('records')}",
    )


@dg.asset(
    partitions_def=monthly_partitions,
    group_name=GROUP,
    kinds={"redshift", "pandas"},
    owners=OWNERS,
    io_manager_key="warehouse_io_manager",
    metadata={"partition_expr": "month"},
    description="The month's retention experiment results in the warehouse (Redshift; DuckDB locally).",
)
def redshift_retention_experiment_results(
    context: dg.AssetExecutionContext, retention_experiment_results: pd.DataFrame
) -> dg.Output[pd.DataFrame]:
    frame = retention_experiment_results.assign(month=pd.Timestamp(context.partition_key))
    return dg.Output(frame, metadata={"rows_written": len(frame)})


LATEST_EXPERIMENT_RESULTS = dg.AssetIn(
    "retention_experiment_results",
    # The months overlapping the eight weeks before a week; the newest materialized one is read.
    partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-8, allow_nonexistent_upstream_partitions=True),
    metadata=LAZY_PARTITIONS,
)


def latest_results(results) -> pd.DataFrame:
    """The newest materialized month of ``retention_experiment_results`` (lazy input), or an empty table."""
    return results[max(results)]() if results else pd.DataFrame(columns=RESULT_COLUMNS)


EXPERIMENT_ASSETS = [retention_experiment_results, redshift_retention_experiment_results]
