"""Monthly churn training: a gated candidate, and the promoted champion that scoring reads."""

import dagster as dg
import pandas as pd
from pydantic import Field

from loyalty_assets.defs.metadata import CHURN_INTERFACE_METRICS, markdown_table, significant
from loyalty_assets.defs.models.promotion import champion_asset
from loyalty_assets.defs.partitions import monthly_partitions
from loyalty_assets.defs.resources.storage import LakeResource
from loyalty_assets.domain import registry
from loyalty_assets.domain.bundles import churn_bundle
from loyalty_assets.domain.churn import (
    BOOSTING_SETTINGS,
    FOREST_SETTINGS,
    ChurnTrainingConfig,
    evaluation_plot_png,
    train_churn_candidate,
)
from loyalty_assets.domain.features import MODEL_FEATURES
from loyalty_assets.domain.figures import png_markdown

OWNERS = ["team:ml-engineering"]
CHURN_GATES = ["roc_auc_floor", "beats_baseline", "not_worse_than_champion", "recall_at_threshold", "no_leakage"]


class ChurnCandidateConfig(dg.Config):
    seed: int = Field(
        default=ChurnTrainingConfig.seed, description="Random seed: the same seed and data give the same model."
    )
    n_estimators: int = Field(default=ChurnTrainingConfig.n_estimators, description="Trees of the forest family.")
    n_jobs: int = Field(default=ChurnTrainingConfig.n_jobs, description="Cores for the forest.")
    test_snapshots: int = Field(
        default=ChurnTrainingConfig.test_snapshots,
        description="Latest mature snapshots held out as the out-of-time test.",
    )
    validation_snapshots: int = Field(
        default=ChurnTrainingConfig.validation_snapshots,
        description="Snapshots before the test, after an embargo: model choice, calibration and threshold.",
    )
    recall_target: float = Field(
        default=ChurnTrainingConfig.recall_target,
        description="The evaluation threshold is the highest with this validation recall.",
    )
    backtest_windows: int = Field(
        default=ChurnTrainingConfig.backtest_windows,
        description="Earlier monthly windows the winning recipe is refitted on (rolling backtest).",
    )
    max_train_rows: int = Field(
        default=ChurnTrainingConfig.max_train_rows, description="Training rows cap, by a seeded sample of members."
    )
    bootstrap_rounds: int = Field(
        default=ChurnTrainingConfig.bootstrap_rounds, description="Member-bootstrap rounds of the AUC intervals."
    )
    settings_per_family: int = Field(
        default=max(len(FOREST_SETTINGS), len(BOOSTING_SETTINGS)),
        ge=1,
        description="How many of each family's settings are tried, first ones first (all by default).",
    )

    def to_training_config(self, horizon_months: int) -> ChurnTrainingConfig:
        """The domain configuration; the embargo is one label horizon."""
        return ChurnTrainingConfig(
            **self.model_dump(exclude={"settings_per_family"}),
            horizon_months=horizon_months,
            embargo_months=horizon_months,
            forest_settings=FOREST_SETTINGS[: self.settings_per_family],
            boosting_settings=BOOSTING_SETTINGS[: self.settings_per_family],
        )


def _metadata_value(value):
    return [str(item) for item in value] if isinstance(value, list) else value


def _interval(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.3f} (95% {metrics[f'{key}_low']:.3f} to {metrics[f'{key}_high']:.3f})"


def _evaluation_metadata(metrics: dict, merges: list[dict]) -> dict:
    """Every figure of the families, gates, calibration and tiers, with intervals where they exist."""
    families = pd.DataFrame(
        [
            {
                "family": family,
                "setting": str(summary["setting"]),
                "validation_roc_auc": summary["validation_roc_auc"],
                "test_roc_auc": summary["test_roc_auc"],
                "chosen": family == metrics["model_family"],
            }
            for family, summary in metrics["families"].items()
        ]
    )
    windows = [{"months_back": 0, "test_snapshots": metrics["test_snapshots"], "roc_auc": {
        "estimate": metrics["roc_auc"], "low": metrics["roc_auc_low"], "high": metrics["roc_auc_high"]}}]
    backtest = pd.DataFrame(
        [
            {"months_back": window["months_back"], "test_snapshots": ", ".join(window["test_snapshots"]),
             **window["roc_auc"]}
            for window in windows + metrics["rolling_roc_auc_backtest"]
        ]
    )
    calibration = metrics["calibration"]
    return {
        "model_family": metrics["model_family"],
        "model_setting": dg.MetadataValue.json(metrics["model_setting"]),
        **{
            f"{family}_{key}": significant(summary[key])
            for family, summary in metrics["families"].items()
            for key in ("validation_roc_auc", "test_roc_auc")
        },
        "model_families": dg.MetadataValue.md(markdown_table(families)),
        "roc_auc_interval": _interval(metrics, "roc_auc"),
        "baseline_roc_auc_interval": _interval(metrics, "baseline_roc_auc"),
        "baseline_difference": _interval(metrics, "baseline_difference"),
        "rolling_roc_auc_mean": significant(metrics["rolling_roc_auc_mean"]),
        "rolling_roc_auc_windows": metrics["rolling_roc_auc_windows"],
        "rolling_roc_auc_backtest": dg.MetadataValue.md(markdown_table(backtest)),
        "threshold_role": (
            f"evaluation threshold: the validation score at which recall reaches {metrics['recall_target']:.0%}; "
            "recall, precision and flagged_share are measured at it, the weekly output does not use it"
        ),
        "calibration_in_the_large": significant(calibration["calibration_in_the_large"]),
        "mean_predicted_churn": significant(calibration["mean_predicted"]),
        "realised_churn": significant(calibration["realised_rate"]),
        "brier_skill": significant(calibration["brier_skill"]),
        "reliability_by_decile": dg.MetadataValue.md(markdown_table(pd.DataFrame(calibration["reliability"]))),
        "merged_tiers": dg.MetadataValue.json(merges),
    }


@dg.asset(
    partitions_def=monthly_partitions,
    io_manager_key="model_io_manager",
    kinds={"scikit-learn", "pandas"},
    owners=OWNERS,
)
def churn_model_candidate(
    context: dg.AssetExecutionContext, config: ChurnCandidateConfig, churn_training_set, lake: LakeResource
) -> dg.Output:
    """The better of a RandomForest and a HistGradientBoosting family (each tuned on the validation
    snapshots), calibrated on them, evaluated on the latest mature snapshots (out of time) and in a
    rolling backtest. Registered as a version; promotion waits for the blocking gates."""
    horizon = int(churn_training_set["label_horizon_months"].iloc[0])
    candidate = train_churn_candidate(churn_training_set, MODEL_FEATURES, config.to_training_config(horizon))
    bundle = churn_bundle(candidate, churn_training_set, context.partition_key, config.model_dump())
    registry.register_bundle(lake.store(), bundle)
    importances = markdown_table(
        pd.DataFrame(candidate.feature_importances.items(), columns=["feature", "validation_roc_auc_loss"])
    )
    metrics = {key: significant(_metadata_value(candidate.metrics[key])) for key in CHURN_INTERFACE_METRICS}
    return dg.Output(
        bundle,
        metadata={
            **metrics,
            "test_snapshots": dg.MetadataValue.json(candidate.metrics["test_snapshots"]),
            "version": bundle.version,
            "horizon_months": horizon,
            "feature_importances": dg.MetadataValue.md(importances),
            **_evaluation_metadata(candidate.metrics, bundle.record.merged_tiers),
            "evaluation_plot": dg.MetadataValue.md(
                png_markdown(evaluation_plot_png(candidate.test_scores), "ROC and precision-recall on the test")
            ),
        },
    )


churn_model = champion_asset(
    "churn",
    CHURN_GATES,
    OWNERS,
    """The promoted churn champion, the only churn model scoring reads. It materializes only after
every blocking gate on its candidate passed, and never moves back in training-data time by
itself; otherwise the previous champion stays.""",
)
