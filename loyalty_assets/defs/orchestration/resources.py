"""Where alerts and run metrics go: SNS, e-mail and CloudWatch in aws; a JSON-lines file and the log locally.

Alert e-mails go out through the mailer of ``defs/resources/mailer.py``, like the marketing e-mail.
Locally every alert is logged and appended to `$LOYALTY_HOME/alerts.jsonl`, and run metrics are logged.
"""

import json
import logging
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import dagster as dg
from pydantic import Field

from loyalty_assets.defs.clients import BoundedAwsClients
from loyalty_assets.defs.resources.mailer import Mailer
from loyalty_assets.domain.messaging import (
    Alert,
    format_alert,
    publish_sns,
    put_run_metrics,
)
from loyalty_assets.domain.redaction import redact
from loyalty_assets.settings import DEFAULT_METRICS_NAMESPACE, DEFAULT_UI_URL


class AlertDeliveryError(RuntimeError):
    """At least one alert channel failed; the message names each failed channel."""


class AlertNotifier(dg.ConfigurableResource):
    """Delivers alerts; ``run_url`` builds the Dagster UI link an alert carries."""

    ui_url: str = Field(default=DEFAULT_UI_URL, description="Base URL of the Dagster UI.")

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    @abstractmethod
    def notify(self, alert: Alert, log: logging.Logger) -> list[str]:
        """Deliver ``alert`` on every channel; returns where it went."""


def alert_email(alert: Alert, sender: str, recipients: list[str]) -> EmailMessage:
    """A plain-text e-mail with the alert's subject and body."""
    subject, body = format_alert(alert)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(body)
    return message


class AwsAlertNotifier(AlertNotifier, BoundedAwsClients):
    """SNS publish plus an e-mail through the mailer (to the alert recipients)."""

    topic_arn: str = Field(description="SNS topic ARN.")
    mailer: Mailer

    def notify(self, alert: Alert, log: logging.Logger) -> list[str]:
        # Both channels are tried, so an SMTP outage does not silence SNS (and the reverse).
        subject = format_alert(alert)[0]
        delivered: list[str] = []
        errors: list[tuple[str, Exception]] = []
        try:
            message_id = publish_sns(self.aws_client("sns"), self.topic_arn, alert)
            delivered.append(f"sns {self.topic_arn} ({message_id})")
        except Exception as error:  # noqa: BLE001 - collected, re-raised below
            errors.append((f"SNS {self.topic_arn}", error))
        try:
            message = alert_email(alert, self.mailer.sender, self.mailer.recipient_list())
            delivered.append(self.mailer.deliver(message, f"alert_{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"))
        except Exception as error:  # noqa: BLE001 - collected, re-raised below
            errors.append(("e-mail", error))
        if errors:
            failed = redact("; ".join(f"{channel}: {error}" for channel, error in errors))
            raise AlertDeliveryError(f"alert {subject!r} not delivered to {failed}") from None
        log.info("alert %r sent to %s", subject, ", ".join(delivered))
        return delivered


class LocalAlertNotifier(AlertNotifier):
    """Writes the alert to the log and appends it as one JSON line to ``alerts_path``."""

    alerts_path: str = Field(description="The JSON-lines file of alerts; its folder is created when missing.")

    def notify(self, alert: Alert, log: logging.Logger) -> list[str]:
        subject, body = format_alert(alert)
        log.warning("%s\n%s", subject, body)
        path = Path(self.alerts_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {"sent_at": datetime.now(timezone.utc).isoformat(), "subject": subject, **asdict(alert)}
        with path.open("a", encoding="utf-8") as alerts:
            alerts.write(json.dumps(line) + "\n")
        return [str(path)]


class MetricsPublisher(dg.ConfigurableResource):
    """Publishes the metrics of one finished run."""

    @abstractmethod
    def publish(self, job: str, metrics: Mapping[str, float], timestamp: datetime, log: logging.Logger) -> str:
        """Publish ``metrics`` of a run of ``job`` finished at ``timestamp``; returns where they went."""


class CloudWatchMetricsPublisher(MetricsPublisher, BoundedAwsClients):
    """One CloudWatch datapoint per metric, dimension ``Job=<job>``."""

    namespace: str = Field(default=DEFAULT_METRICS_NAMESPACE, description="CloudWatch namespace.")

    def publish(self, job: str, metrics: Mapping[str, float], timestamp: datetime, log: logging.Logger) -> str:
        client = self.aws_client("cloudwatch")
        count = put_run_metrics(client, self.namespace, metrics, {"Job": job}, timestamp=timestamp)
        destination = f"CloudWatch namespace {self.namespace}"
        log.info("%d metrics of %s sent to %s: %s", count, job, destination, json.dumps(dict(metrics)))
        return destination


class LogMetricsPublisher(MetricsPublisher):
    """The metrics as one JSON log line (the local environment)."""

    def publish(self, job: str, metrics: Mapping[str, float], timestamp: datetime, log: logging.Logger) -> str:
        log.info("run metrics of %s at %s: %s", job, timestamp.isoformat(), json.dumps(dict(metrics)))
        return "log"
