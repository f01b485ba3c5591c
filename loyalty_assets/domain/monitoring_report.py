"""The weekly monitoring report: one self-contained HTML page (inline CSS, plots as base64 PNG).

:func:`render_monitoring_report` takes the week's ``domain.monitoring.WeekDriftEvaluation`` (feature
drift table, prediction drift, realised performance of matured weeks, the three verdicts) and the
latest retention experiment results, and returns the page; it needs no network and no other file
to display. The plot helpers return PNG bytes.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from loyalty_assets.domain.drift import STATUSES, worst_first
from loyalty_assets.domain.figures import figure_png, new_figure, png_html
from loyalty_assets.domain.monitoring import REALISED_COLUMNS, WeekDriftEvaluation
from loyalty_assets.domain.scoring import RISK_TIERS

TIER_COLORS = {"Low": "#4c9f70", "Medium": "#e0b040", "High": "#e07b39", "Critical": "#c0392b"}
STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 980px;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
.status { font-weight: 600; text-transform: uppercase; font-size: 0.8em; padding: 0.1em 0.5em; border-radius: 3px; }
.status-ok { background: #d8f0df; color: #1e6b37; }
.status-warn { background: #fbeec8; color: #7a5a00; }
.status-fail { background: #f7d4d0; color: #8e1f14; }
.status-na { background: #e8e8e8; color: #555; }
.summary td { text-align: left; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; }
"""


def score_histogram_figure(edges, reference_shares, current_shares) -> Figure:
    """Share of members per score bin, this week against the reference, on a quantile axis.

    The edges are the reference's score quantiles (``drift.reference_score_edges``), crowded near the
    base rate: on a linear score axis every bin but the last would be a sliver at the left edge. Each
    bin gets the same width instead, and the ticks name its score edges.
    """
    edges = np.asarray(edges, dtype=float)
    reference_shares = np.asarray(reference_shares, dtype=float)
    current_shares = np.asarray(current_shares, dtype=float)
    if not edges.size - 1 == reference_shares.size == current_shares.size:
        raise ValueError(
            f"{edges.size} edges need {edges.size - 1} shares, got {reference_shares.size} and {current_shares.size}"
        )
    positions = np.arange(edges.size)
    figure = new_figure(7, 3)
    axes = figure.add_subplot()
    axes.bar(
        positions[:-1], reference_shares, width=1.0, align="edge", color="#bbbbbb", edgecolor="white", label="reference"
    )
    this_week = np.append(current_shares, current_shares[-1])
    axes.step(positions, this_week, where="post", color="#1f5fa8", label="this week")
    axes.set_xticks(positions, [f"{edge:.2g}" for edge in edges], rotation=45, ha="right", fontsize=7)
    axes.set(
        xlabel="churn probability (bins at the reference's quantiles)",
        ylabel="share of members",
        xlim=(positions[0], positions[-1]),
    )
    axes.set_title("Score distribution against the reference", fontsize=10)
    axes.legend(fontsize=8)
    return figure


def score_histogram_png(edges, reference_shares, current_shares) -> bytes:
    """:func:`score_histogram_figure` as PNG bytes."""
    return figure_png(score_histogram_figure(edges, reference_shares, current_shares))


def tier_history_png(tier_history: pd.DataFrame) -> bytes:
    """Stacked tier shares per week (index = week, columns = ``RISK_TIERS``), as PNG bytes."""
    missing = [tier for tier in RISK_TIERS if tier not in tier_history.columns]
    if missing:
        raise ValueError(f"tier_history lacks tiers {missing}")
    if tier_history.empty:
        raise ValueError("tier_history has no weeks")
    figure = new_figure(7, 3)
    axes = figure.add_subplot()
    positions = np.arange(len(tier_history))
    bottom = np.zeros(len(tier_history))
    for tier in RISK_TIERS:
        shares = tier_history[tier].to_numpy(dtype=float)
        axes.bar(positions, shares, bottom=bottom, color=TIER_COLORS[tier], label=tier)
        bottom += shares
    axes.set_xticks(positions, [str(week) for week in tier_history.index], rotation=45, ha="right", fontsize=7)
    axes.set(ylabel="share of members", ylim=(0, 1))
    axes.set_title("Risk tier shares per week", fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_png(figure)


def realised_performance_png(realised: pd.DataFrame) -> bytes:
    """Realised ROC-AUC and recall per matured week against the figures at promotion, as PNG bytes."""
    missing = [column for column in REALISED_COLUMNS if column not in realised.columns]
    if missing:
        raise ValueError(f"realised lacks columns {missing}")
    evaluated = realised.dropna(subset=["roc_auc"])
    if evaluated.empty:
        raise ValueError("realised holds no evaluated week")
    figure = new_figure(7, 3)
    axes = figure.add_subplot()
    weeks = evaluated["week"].astype(str).to_numpy()
    for column, promised, color, name in (
        ("roc_auc", "promotion_roc_auc", "#1f5fa8", "ROC-AUC"),
        ("recall_at_threshold", "promotion_recall", "#c0392b", "recall"),
    ):
        axes.plot(weeks, evaluated[column], marker="o", color=color, label=f"realised {name}")
        axes.plot(
            weeks,
            evaluated[promised],
            linestyle="--",
            marker="_",
            markersize=16,
            color=color,
            alpha=0.6,
            label=f"{name} at promotion",
        )
    axes.set(ylabel="value", ylim=(0, 1.02))
    axes.tick_params(axis="x", labelrotation=45, labelsize=7)
    axes.set_title("Realised performance of matured weeks", fontsize=10)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_png(figure)


def uplift_png(results: pd.DataFrame) -> bytes:
    """Change in churn (treated minus held out, percentage points) per action and tier, with the
    95 % intervals, as PNG bytes."""
    if results.empty:
        raise ValueError("results hold no action to plot")
    figure = new_figure(7, 0.5 + 0.35 * len(results))
    axes = figure.add_subplot()
    labels = [f"{action[:40]} ({tier})" for action, tier in zip(results["action"], results["risk_tier"])]
    change = -100 * results["risk_reduction"].to_numpy(dtype=float)
    low = change + 100 * results["risk_reduction_high"].to_numpy(dtype=float)
    high = -100 * results["risk_reduction_low"].to_numpy(dtype=float) - change
    positions = np.arange(len(results))
    axes.errorbar(change, positions, xerr=[low, high], fmt="o", color="#1f5fa8", capsize=3)
    axes.axvline(0, color="#888888", linewidth=1)
    axes.set_yticks(positions, labels, fontsize=7)
    axes.set(xlabel="churn treated minus held out (pp), 95% interval")
    axes.set_title("Realised effect of each retention action", fontsize=10)
    return figure_png(figure)


def _experiments_section(results: pd.DataFrame | None) -> str:
    if results is None or results.empty:
        return '<p class="note">No retention experiment has matured outcomes yet.</p>'
    measured = results.dropna(subset=["risk_reduction"])
    plot = png_html(uplift_png(measured), "uplift per action") if not measured.empty else ""
    return plot + _table(results, {"experiment_id", "action", "risk_tier"}, status_column=None)


def _status(status: str | None) -> str:
    name = status if status in STATUSES else "na"
    return f'<span class="status status-{name}">{html.escape(status or "n/a")}</span>'


def _cell(value, text: bool = False) -> str:
    if isinstance(value, (float, np.floating)):
        shown = "" if np.isnan(value) else f"{value:.4f}"
    else:
        shown = html.escape(str(value))
    return f'<td class="text">{shown}</td>' if text else f"<td>{shown}</td>"


def _table(frame: pd.DataFrame, text_columns: set[str], status_column: str | None = "status") -> str:
    """An HTML table of ``frame``; columns in ``text_columns`` left-aligned, the status column as a badge."""
    head = "".join(
        f'<th class="text">{html.escape(str(c))}</th>' if c in text_columns else f"<th>{html.escape(str(c))}</th>"
        for c in frame.columns
    )
    rows = []
    for record in frame.itertuples(index=False, name=None):  # a few dozen summary rows, not member rows
        cells = [
            f'<td class="text">{_status(value)}</td>'
            if column == status_column
            else _cell(value, column in text_columns)
            for column, value in zip(frame.columns, record, strict=True)
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _tier_table(prediction: dict, reference: dict) -> pd.DataFrame:
    current = prediction["current"]["tier_shares"]
    return pd.DataFrame(
        {
            "tier": list(RISK_TIERS),
            "reference share": [reference["tier_shares"][tier] for tier in RISK_TIERS],
            "this week": [current[tier] for tier in RISK_TIERS],
            "change (pp)": [prediction["tier_share_delta"][tier] * 100 for tier in RISK_TIERS],
        }
    )


def render_monitoring_report(evaluation: WeekDriftEvaluation, experiments: pd.DataFrame | None = None) -> str:
    """The report as one HTML document (UTF-8 text); ``experiments``: the latest
    ``retention_experiment_results``, if any."""
    drift = worst_first(evaluation.feature_drift)
    prediction = evaluation.prediction
    feature, concept = evaluation.verdicts["feature_drift"], evaluation.verdicts["concept_drift"]
    current = prediction["current"]
    previous = pd.DataFrame(prediction["score_psi_vs_previous_weeks"], columns=["week", "score_psi"])
    summary = pd.DataFrame(
        [
            ("feature drift", feature.status, feature.message),
            ("prediction drift", prediction["status"], prediction["message"]),
            ("realised performance", concept.status, concept.message),
        ],
        columns=["check", "status", "detail"],
    )
    realised_section = (
        png_html(realised_performance_png(evaluation.realised), "realised performance")
        + _table(evaluation.realised[REALISED_COLUMNS], {"week", "snapshot_month", "model_version"})
        if evaluation.realised["roc_auc"].notna().any()
        else f'<p class="note">{html.escape(concept.message)}</p>'
    )
    previous_section = (
        _table(previous, {"week"}, status_column=None)
        if not previous.empty
        else '<p class="note">No previous week in the lake to compare with.</p>'
    )
    histogram = score_histogram_png(
        current["score_edges"], evaluation.scoring_reference["score_histogram"]["shares"], current["score_shares"]
    )
    limits = evaluation.thresholds
    title = f"Churn model monitoring, week {evaluation.week}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">Champion {html.escape(evaluation.model_version)}; {evaluation.n_members:,} members scored on the
snapshot {html.escape(evaluation.snapshot_month)}; drift reference: {html.escape(evaluation.reference_source)}.</p>
<div class="summary">{_table(summary, {"check", "detail"})}</div>

<h2>Feature drift</h2>
<p class="note">Numeric features: population stability index over the reference deciles (warn above
{limits.psi_warn:g}, fail above {limits.psi_fail:g}). Categorical features: Jensen-Shannon distance of the
category shares (warn above {limits.js_warn:g}, fail above {limits.js_fail:g}). The dataset fails when more than
{limits.dataset_fail_share:.0%} of the features fail. Verdict: {_status(feature.status)}</p>
{_table(drift, {"feature", "kind", "statistic"})}

<h2>Score distribution</h2>
{png_html(histogram, "score histogram")}
<p class="note">PSI of the score histogram against the reference: {prediction["score_psi_vs_reference"]:.4f}.</p>
<h3>Against previous weeks</h3>
{previous_section}

<h2>Risk tiers</h2>
{_table(_tier_table(prediction, evaluation.scoring_reference), {"tier"}, status_column=None)}
<p class="note">PSI of the tier shares against the reference: {prediction["tier_psi_vs_reference"]:.4f}.</p>
{png_html(tier_history_png(evaluation.tier_history), "tier shares per week")}

<h2>Realised performance</h2>
{realised_section}

<h2>Retention experiments</h2>
<p class="note">Each weekly list holds out a hashed share of every (tier, segment, action) cell. Risk
reduction is realised churn held out minus treated over the label horizon, with Newcombe's 95% interval.</p>
{_experiments_section(experiments)}
</body>
</html>
"""
