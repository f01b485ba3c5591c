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
from loyalty_assets.domain.storage import ObjectStore

CRITICAL_TIER = "Critical"
TOP_MEMBER_COLUMNS = ["loyalty_number", "churn_risk_pct", "segment", "expected_loss"]


@dataclass(frozen=True)
class MarketingSummary:
    """What the weekly marketing e-mail reports.

    counts / previous_counts: members per risk tier (rows) and segment (columns) that the week holds
    (previous is None in the first week).
    top_members: columns ``loyalty_number, churn_risk_pct, segment, expected_loss``, best first.
    file_location: URL or path of the full prediction file.
    experiment_lines: the latest retention experiment results, one line per action and tier.
    """

    week: str
    counts: pd.DataFrame
    previous_counts: pd.DataFrame | None
    top_members: pd.DataFrame
    file_location: str
    experiment_lines: tuple[str, ...] = ()  # realised uplift per action, one line each


def top_critical_members(predictions: pd.DataFrame, member_value: pd.Series, top_n: int = 10) -> pd.DataFrame:
    """The ``top_n`` members of the Critical tier to call (experiment hold-outs left out) by expected
    loss = churn risk (fraction) x member value.

    ``member_value`` is indexed by loyalty_number (e.g. a yearly revenue estimate chosen by the caller).
    """
    to_call = (predictions["risk_tier"] == CRITICAL_TIER) & (predictions["experiment_arm"] != "control")
    critical = predictions.loc[to_call, ["loyalty_number", "churn_risk_pct", "segment"]]
    value = critical["loyalty_number"].map(member_value)
    if value.isna().any():
        missing = critical.loc[value.isna(), "loyalty_number"]
        raise ValueError(f"no member value for {len(missing)} {CRITICAL_TIER} members, e.g. {missing.head(5).tolist()}")
    ranked = critical.assign(expected_loss=critical["churn_risk_pct"] / 100.0 * value)
    return ranked.nlargest(top_n, "expected_loss").reset_index(drop=True)[TOP_MEMBER_COLUMNS]


def summarize_for_marketing(
    predictions: pd.DataFrame,
    member_value: pd.Series,
    file_location: str,
    previous_predictions: pd.DataFrame | None = None,
    top_n: int = 10,
    experiment_lines: Sequence[str] = (),
) -> MarketingSummary:
    """A MarketingSummary from one week of churn_predictions (and the previous week's, if any)."""
    weeks = predictions["week"].astype(str).unique()
    if len(weeks) != 1:
        raise ValueError(f"predictions must hold exactly one week, found {sorted(weeks)}")
    return MarketingSummary(
        week=weeks[0],
        counts=tier_segment_counts(predictions, observed_only=True),
        previous_counts=(
            None if previous_predictions is None else tier_segment_counts(previous_predictions, observed_only=True)
        ),
        top_members=top_critical_members(predictions, member_value, top_n),
        file_location=file_location,
        experiment_lines=tuple(experiment_lines),
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


def _experiment_block(lines: Sequence[str]) -> list[str]:
    if not lines:
        return []
    return ["Is the retention programme working? (treated vs held out, 95% interval)\n" + "\n".join(lines)]


def build_marketing_email(summary: MarketingSummary, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """Plain-text e-mail with an HTML alternative: tier x segment counts, change, top Critical members."""
    if isinstance(recipients, str) or not recipients:
        raise ValueError("recipients must be a non-empty list of addresses")
    counts = _with_totals(summary.counts)
    change = None if summary.previous_counts is None else _change_matrix(summary.counts, summary.previous_counts)
    top = summary.top_members.round({"churn_risk_pct": 1, "expected_loss": 2})
    critical = critical_members(summary.counts)
    total = int(summary.counts.to_numpy().sum())
    change_text = change.to_string() if change is not None else "first week"

    text = "\n\n".join(
        [
            f"Loyalty churn report, week {summary.week}: {critical} {CRITICAL_TIER} members of {total} scored.",
            "Members per risk tier and segment:\n" + counts.to_string(),
            "Change from last week:\n" + change_text,
            f"Top {CRITICAL_TIER} members by expected loss (risk x member value):\n" + top.to_string(index=False),
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
        f"<h3>Members per risk tier and segment</h3>{counts.to_html()}"
        f"<h3>Change from last week</h3>{change_html}"
        f"<h3>Top {CRITICAL_TIER} members by expected loss</h3>{top.to_html(index=False)}"
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
