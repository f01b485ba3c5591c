"""The weekly marketing e-mail (SMTP, SES, .eml archive), failure alerts on SNS, run metrics on CloudWatch.

Plain functions over boto3 clients and smtplib; nothing here knows about Dagster.
"""

from __future__ import annotations

import html
import json
import math
import re
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Literal

import pandas as pd

from loyalty_assets.domain.lake_keys import sent_marker_key
from loyalty_assets.domain.redaction import one_line, redact
from loyalty_assets.domain.scoring import tier_segment_counts
from loyalty_assets.domain.segmentation import SEGMENT_MEANINGS, formatted_profile, profile_notes
from loyalty_assets.domain.storage import ObjectStore

CRITICAL_TIER = "Critical"
TOP_MEMBER_COLUMNS = ["loyalty_number", "churn_risk_pct", "segment", "expected_loss"]
CALL_LIST_COLUMNS = [*TOP_MEMBER_COLUMNS, "risk_vs_average", "recommended_action", "top_reasons"]
# Critical members whose action and reasons the e-mail lists; the full list is in the week's file.
CALL_LIST_LIMIT = 50
TIER_ORDER = ("Critical", "High", "Medium", "Low")
EXPECTED_LOSS_UNIT = (
    "expected_loss is in CAD: the member's churn risk (the chance of cancelling within the churn model's "
    "horizon, 3 months by default) x CLV (the member's total invoice value of all flights booked so far, "
    "from the loyalty drop). It ranks what is at stake; it is not a forecast of lost revenue."
)


@dataclass(frozen=True)
class MarketingSummary:
    """What the weekly marketing e-mail reports.

    counts / previous_counts: members per risk tier (rows) and segment (columns) that the week holds
    (previous is None in the first week).
    top_members: columns ``loyalty_number, churn_risk_pct, segment, expected_loss``, best first.
    file_location: URL or path of the full prediction file.
    experiment_lines: the latest retention experiment results, one line per action and tier.
    call_list: the first ``CALL_LIST_LIMIT`` Critical members to call (``CALL_LIST_COLUMNS``), best first;
    critical_to_call: how many there are in all; critical_held_out: Critical experiment hold-outs.
    segment_profile: per segment (index) ``segmentation.segment_profile_table``, None when the segmentation
    version did not record one; churn_basis: how its churn rate was measured.
    """

    week: str
    counts: pd.DataFrame
    previous_counts: pd.DataFrame | None
    top_members: pd.DataFrame
    file_location: str
    call_list: pd.DataFrame
    critical_to_call: int
    critical_held_out: int
    segment_profile: pd.DataFrame | None
    churn_basis: str
    experiment_lines: tuple[str, ...] = ()  # realised uplift per action, one line each


def critical_call_list(predictions: pd.DataFrame, member_value: pd.Series) -> pd.DataFrame:
    """Every Critical member to call (experiment hold-outs left out), ranked by expected loss = churn
    risk (fraction) x member value, with the columns of ``predictions`` and ``expected_loss``.

    ``member_value`` is indexed by loyalty_number (the marketing e-mail uses CLV, see EXPECTED_LOSS_UNIT).
    """
    to_call = (predictions["risk_tier"] == CRITICAL_TIER) & (predictions["experiment_arm"] != "control")
    critical = predictions.loc[to_call]
    value = critical["loyalty_number"].map(member_value)
    if value.isna().any():
        missing = critical.loc[value.isna(), "loyalty_number"]
        raise ValueError(f"no member value for {len(missing)} {CRITICAL_TIER} members, e.g. {missing.head(5).tolist()}")
    ranked = critical.assign(expected_loss=critical["churn_risk_pct"] / 100.0 * value)
    return ranked.sort_values("expected_loss", ascending=False, kind="stable").reset_index(drop=True)


def top_critical_members(predictions: pd.DataFrame, member_value: pd.Series, top_n: int = 10) -> pd.DataFrame:
    """The ``top_n`` first members of :func:`critical_call_list`, columns ``TOP_MEMBER_COLUMNS``."""
    return critical_call_list(predictions, member_value).head(top_n)[TOP_MEMBER_COLUMNS]


def summarize_for_marketing(
    predictions: pd.DataFrame,
    member_value: pd.Series,
    file_location: str,
    previous_predictions: pd.DataFrame | None = None,
    top_n: int = 10,
    experiment_lines: Sequence[str] = (),
    segment_profile: pd.DataFrame | None = None,
    churn_basis: str = "",
) -> MarketingSummary:
    """A MarketingSummary from one week of churn_predictions (and the previous week's, if any).

    ``segment_profile``: the segmentation's ``segment_profile_table``.
    """
    weeks = predictions["week"].astype(str).unique()
    if len(weeks) != 1:
        raise ValueError(f"predictions must hold exactly one week, found {sorted(weeks)}")
    calls = critical_call_list(predictions, member_value)
    critical = predictions["risk_tier"] == CRITICAL_TIER
    return MarketingSummary(
        week=weeks[0],
        counts=tier_segment_counts(predictions, observed_only=True),
        previous_counts=(
            None if previous_predictions is None else tier_segment_counts(previous_predictions, observed_only=True)
        ),
        top_members=calls.head(top_n)[TOP_MEMBER_COLUMNS],
        file_location=file_location,
        experiment_lines=tuple(experiment_lines),
        call_list=calls.head(CALL_LIST_LIMIT)[CALL_LIST_COLUMNS],
        critical_to_call=len(calls),
        critical_held_out=int((critical & (predictions["experiment_arm"] == "control")).sum()),
        segment_profile=segment_profile,
        churn_basis=churn_basis,
    )


def critical_members(counts: pd.DataFrame) -> int:
    """Members of the Critical tier in a ``tier_segment_counts`` matrix."""
    return int(counts.loc[CRITICAL_TIER].sum()) if CRITICAL_TIER in counts.index else 0


def _with_totals(matrix: pd.DataFrame) -> pd.DataFrame:
    """``matrix`` with a Total column and a Total row."""
    table = matrix.assign(Total=matrix.sum(axis=1))
    table.loc["Total"] = table.sum()
    return table


def _change_matrix(counts: pd.DataFrame, previous_counts: pd.DataFrame) -> pd.DataFrame:
    rows = counts.index.union(previous_counts.index, sort=False)
    columns = counts.columns.union(previous_counts.columns, sort=False)
    change = counts.reindex(index=rows, columns=columns, fill_value=0) - previous_counts.reindex(
        index=rows, columns=columns, fill_value=0
    )
    return _with_totals(change)


def _tier_line(counts: pd.DataFrame) -> str:
    shares = counts.sum(axis=1) / counts.to_numpy().sum()
    listed = ", ".join(f"{tier} {shares[tier]:.1%}" for tier in TIER_ORDER if tier in shares.index)
    return (
        f"Risk tiers are capacity-based: each is a share of the members, not a level of absolute risk "
        f"(this week {listed} of members); risk_vs_average in the file says how many times the average "
        "member's risk a member has."
    )


def _call_lines(summary: MarketingSummary) -> list[str]:
    lines = []
    for row in summary.call_list.itertuples(index=False):
        risk = f"risk {row.churn_risk_pct:.1f}% = {row.risk_vs_average:.1f}x average"
        lines.append(
            f"{row.loyalty_number} ({row.segment}, {risk}, expected loss {row.expected_loss:,.0f} CAD): "
            f"{row.recommended_action}. Why: {row.top_reasons}"
        )
    return lines


def _call_heading(summary: MarketingSummary) -> str:
    listed = len(summary.call_list)
    rest = summary.critical_to_call - listed
    more = f"; {rest} more in the full file" if rest else ""
    return (
        f"Every {CRITICAL_TIER} member to call, with the action and the reasons ({listed} of "
        f"{summary.critical_to_call} by expected loss{more}; {summary.critical_held_out} {CRITICAL_TIER} members are "
        "held out for the retention experiment and get no call)"
    )


def _profile_table(summary: MarketingSummary) -> pd.DataFrame | None:
    return None if summary.segment_profile is None else formatted_profile(summary.segment_profile)


def _profile_notes(summary: MarketingSummary) -> list[str]:
    if summary.segment_profile is None:
        return ["Not recorded for this segmentation version (fitted before profiles were recorded)."]
    meanings = [f"{name}: {meaning}." for name, meaning in SEGMENT_MEANINGS.items()]
    return meanings + profile_notes(summary.segment_profile, summary.churn_basis)


def _experiment_block(lines: Sequence[str]) -> list[str]:
    if not lines:
        return []
    return ["Is the retention programme working? (treated vs held out, 95% interval)\n" + "\n".join(lines)]


def build_marketing_email(summary: MarketingSummary, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """Plain-text e-mail with an HTML alternative: what the tiers and expected_loss mean, tier x segment
    counts, change, top Critical members, each Critical member's action and reasons, the segment profile."""
    if isinstance(recipients, str) or not recipients:
        raise ValueError("recipients must be a non-empty list of addresses")
    counts = _with_totals(summary.counts)
    change = None if summary.previous_counts is None else _change_matrix(summary.counts, summary.previous_counts)
    top = summary.top_members.round({"churn_risk_pct": 1, "expected_loss": 2})
    critical = critical_members(summary.counts)
    total = int(summary.counts.to_numpy().sum())
    change_text = change.to_string() if change is not None else "first week"

    how_to_read = [_tier_line(summary.counts), EXPECTED_LOSS_UNIT]
    calls = _call_lines(summary)
    profile = _profile_table(summary)
    profile_text = "\n".join([*([profile.to_string()] if profile is not None else []), *_profile_notes(summary)])
    text = "\n\n".join(
        [
            f"Loyalty churn report, week {summary.week}: {critical} {CRITICAL_TIER} members of {total} scored.",
            "How to read this report:\n" + "\n".join(how_to_read),
            "Members per risk tier and segment:\n" + counts.to_string(),
            "Change from last week:\n" + change_text,
            f"Top {CRITICAL_TIER} members by expected loss (risk x member value):\n" + top.to_string(index=False),
            _call_heading(summary) + ":\n" + ("\n".join(calls) or "none this week"),
            "Segments:\n" + profile_text,
            *_experiment_block(summary.experiment_lines),
            f"Full file: {summary.file_location}",
        ]
    )
    location = html.escape(summary.file_location)
    link = (
        f'<a href="{location}">{location}</a>'
        if re.match(r"https?://", summary.file_location)
        else f"<code>{location}</code>"
    )
    change_html = change.to_html() if change is not None else "<p>First week: no previous week to compare.</p>"
    body_html = (
        f"<html><body><h2>Loyalty churn report, week {html.escape(summary.week)}</h2>"
        f"<p>{critical} {CRITICAL_TIER} members of {total} scored.</p>"
        + "".join(f"<p>{html.escape(line)}</p>" for line in how_to_read)
        + f"<h3>Members per risk tier and segment</h3>{counts.to_html()}"
        f"<h3>Change from last week</h3>{change_html}"
        f"<h3>Top {CRITICAL_TIER} members by expected loss</h3>{top.to_html(index=False)}"
        + f"<h3>{html.escape(_call_heading(summary))}</h3>"
        + ("<ol>" + "".join(f"<li>{html.escape(line)}</li>" for line in calls) + "</ol>" if calls else "<p>none</p>")
        + "<h3>Segments</h3>"
        + (profile.to_html() if profile is not None else "")
        + "".join(f"<p>{html.escape(note)}</p>" for note in _profile_notes(summary))
        + "".join(f"<p>{html.escape(block)}</p>" for block in _experiment_block(summary.experiment_lines))
        + f"<p>Full file: {link}</p></body></html>"
    )

    message = EmailMessage()
    message["Subject"] = f"Loyalty churn week {summary.week}: {critical} {CRITICAL_TIER} members"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text)
    message.add_alternative(body_html, subtype="html")
    return message


class EmailDeliveryError(RuntimeError):
    """The SMTP server could not be reached or did not accept the message."""


def send_smtp(
    message: EmailMessage,
    host: str,
    port: int,
    *,
    security: Literal["none", "starttls", "ssl"] = "none",
    username: str | None = None,
    password: str | None = None,
    timeout: float = 30,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Send through SMTP; raises EmailDeliveryError naming host:port if any recipient is not accepted.

    ``ssl`` is implicit TLS (port 465), ``starttls`` upgrades a plain connection (port 587).
    Credentials are only sent over TLS. ``ssl_context`` defaults to the system trust store.
    ``timeout`` bounds the connect and every reply. Errors are one line with the credentials
    masked, and chain no smtplib error (whose text may quote them).
    """
    if security not in ("none", "starttls", "ssl"):
        raise ValueError(f"security must be 'none', 'starttls' or 'ssl', got {security!r}")
    if (username is None) != (password is None):
        raise ValueError("username and password go together")
    if username is not None and security == "none":
        raise ValueError(f"refusing to send SMTP credentials to {host}:{port} without TLS")
    context = ssl_context or ssl.create_default_context()
    server = f"SMTP server {host}:{port} (security={security})"
    try:
        if security == "ssl":
            connection = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            connection = smtplib.SMTP(host, port, timeout=timeout)
    except OSError as error:
        raise EmailDeliveryError(f"could not connect to {server}: {_smtp_reason(error, username, password)}") from None
    try:
        with connection:
            if security == "starttls":
                connection.starttls(context=context)
            if username is not None:
                connection.login(username, password)
            refused = connection.send_message(message)
    except (smtplib.SMTPException, OSError) as error:
        reason = _smtp_reason(error, username, password)
        raise EmailDeliveryError(f"{server} did not accept the message: {reason}") from None
    if refused:
        raise EmailDeliveryError(f"{server} refused recipients: {_smtp_reason(refused, username, password)}")


def _smtp_reason(error: object, username: str | None, password: str | None) -> str:
    return one_line(redact(str(error) or type(error).__name__, [password, username]))


def send_ses(client: Any, message: EmailMessage) -> str:
    """Send through Amazon SES (``send_raw_email``, sender and recipients from the headers); returns its MessageId."""
    response = client.send_raw_email(RawMessage={"Data": message.as_bytes(policy=policy.SMTP)})
    return response["MessageId"]


def write_eml(store: ObjectStore, key: str, message: EmailMessage) -> str:
    """Archive the message as an RFC 5322 ``.eml`` object; returns its URL or path."""
    store.put_bytes(key, message.as_bytes(policy=policy.SMTP))
    return store.url(key)


@dataclass(frozen=True)
class Delivery:
    """What :func:`deliver_once` did: ``sent`` is False when an earlier send was found; ``record`` is its marker."""

    sent: bool
    record: dict[str, Any]


def deliver_once(
    store: ObjectStore,
    name: str,
    message: EmailMessage,
    deliver: Callable[[EmailMessage], str],
    *,
    resend: bool = False,
) -> Delivery:
    """Send ``message`` through ``deliver`` unless the sent-marker of ``name`` is in ``store``; ``resend`` sends anyway.

    The marker (Message-ID, subject, where it went, when) is written in one atomic put, only after
    ``deliver`` returned: a failed send leaves no marker, so a re-run tries again.
    """
    key = sent_marker_key(name)
    if not resend and store.exists(key):
        return Delivery(sent=False, record=json.loads(store.get_bytes(key)))
    delivered = deliver(message)
    record = {
        "name": name,
        "message_id": message["Message-ID"],
        "subject": message["Subject"],
        "delivered": delivered,
        "sent_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    store.put_bytes(key, json.dumps(record, indent=2).encode("utf-8"))
    return Delivery(sent=True, record=record)


SEVERITIES = ("info", "warning", "error", "critical")
SNS_SUBJECT_LIMIT = 100


@dataclass(frozen=True)
class Alert:
    """A failed run, asset or check. ``partition`` is None for unpartitioned jobs."""

    title: str
    job: str
    asset_or_check: str
    partition: str | None
    ui_url: str
    details: str
    severity: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


def format_alert(alert: Alert) -> tuple[str, str]:
    """(subject, body): the subject fits SNS (ASCII, one line, <= 100 characters)."""
    partition = alert.partition or "unpartitioned"
    subject = f"[{alert.severity.upper()}] {alert.job} / {alert.asset_or_check} / {partition}: {alert.title}"
    subject = re.sub(r"[^\x20-\x7e]", "?", re.sub(r"\s+", " ", subject)).strip()
    if len(subject) > SNS_SUBJECT_LIMIT:
        subject = subject[: SNS_SUBJECT_LIMIT - 3] + "..."
    body = "\n".join(
        [
            alert.title,
            "",
            f"Severity:     {alert.severity}",
            f"Job:          {alert.job}",
            f"Asset/check:  {alert.asset_or_check}",
            f"Partition:    {partition}",
            f"Dagster UI:   {alert.ui_url}",
            "",
            alert.details,
        ]
    )
    return subject, body


def publish_sns(client: Any, topic_arn: str, alert: Alert) -> str:
    """Publish the alert; severity, job and partition also go as message attributes for filtering."""
    subject, body = format_alert(alert)
    attributes = {"severity": alert.severity, "job": alert.job, "partition": alert.partition}
    response = client.publish(
        TopicArn=topic_arn,
        Subject=subject,
        Message=body,
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items() if value
        },
    )
    return response["MessageId"]


CLOUDWATCH_BATCH_SIZE = 1000
CLOUDWATCH_MAX_DIMENSIONS = 30
# Unit from the metric name's suffix, e.g. ``scoring_seconds`` -> Seconds.
UNIT_BY_SUFFIX = {
    "_seconds": "Seconds",
    "_ms": "Milliseconds",
    "_bytes": "Bytes",
    "_mb": "Megabytes",
    "_pct": "Percent",
    "_percent": "Percent",
    "_rows": "Count",
    "_count": "Count",
    "_members": "Count",
}


def metric_unit(name: str) -> str:
    """The CloudWatch unit implied by the metric name's suffix, or ``None``."""
    return next((unit for suffix, unit in UNIT_BY_SUFFIX.items() if name.endswith(suffix)), "None")


def put_run_metrics(
    client: Any,
    namespace: str,
    metrics: Mapping[str, float],
    dimensions: Mapping[str, str],
    *,
    units: Mapping[str, str] | None = None,
    timestamp: datetime | None = None,
) -> int:
    """Send one datapoint per metric (same dimensions and timestamp), <= 1000 per call; returns the count.

    Units come from ``units`` or else from the name's suffix (see UNIT_BY_SUFFIX).
    """
    if len(dimensions) > CLOUDWATCH_MAX_DIMENSIONS:
        raise ValueError(f"CloudWatch allows {CLOUDWATCH_MAX_DIMENSIONS} dimensions, got {len(dimensions)}")
    empty = [name for name, value in dimensions.items() if not name or not value]
    if empty:
        raise ValueError(f"CloudWatch dimensions need a non-empty name and value: {empty}")
    not_finite = [name for name, value in metrics.items() if not math.isfinite(value)]
    if not_finite:
        raise ValueError(f"CloudWatch rejects non-finite values; metrics {not_finite} are NaN or infinite")
    units = dict(units or {})
    when = timestamp or datetime.now(timezone.utc)
    dimension_list = [{"Name": name, "Value": value} for name, value in dimensions.items()]
    datapoints = [
        {
            "MetricName": name,
            "Value": float(value),
            "Unit": units.get(name, metric_unit(name)),
            "Dimensions": dimension_list,
            "Timestamp": when,
        }
        for name, value in metrics.items()
    ]
    for start in range(0, len(datapoints), CLOUDWATCH_BATCH_SIZE):
        client.put_metric_data(Namespace=namespace, MetricData=datapoints[start : start + CLOUDWATCH_BATCH_SIZE])
    return len(datapoints)
