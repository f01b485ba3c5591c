"""The mailer: how the marketing e-mail and the alert e-mails are delivered (SMTP, SES or an outbox).

``environment.py`` builds one per use (``marketing_mailer``; the alert notifier's, to the alert
recipients) with the transport of ``LOYALTY_EMAIL_TRANSPORT``.
"""

from abc import abstractmethod
from email.message import EmailMessage

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from loyalty_assets.defs.clients import BoundedAwsClients
from loyalty_assets.defs.storage import store_at
from loyalty_assets.domain.lake_keys import outbox_key
from loyalty_assets.domain.messaging import send_ses, send_smtp, write_eml
from loyalty_assets.settings import NetworkSettings


class Mailer(dg.ConfigurableResource):
    """Who sends e-mail to whom, and how it is delivered."""

    sender: str = Field(description="From address.")
    recipients: str = Field(description="Comma-separated recipient addresses.")

    def recipient_list(self) -> list[str]:
        addresses = [address.strip() for address in self.recipients.split(",") if address.strip()]
        if not addresses:
            raise ValueError(
                "no e-mail recipients configured (LOYALTY_MARKETING_RECIPIENTS or LOYALTY_ALERT_RECIPIENTS is empty)"
            )
        return addresses

    @abstractmethod
    def deliver(self, message: EmailMessage, name: str) -> str:
        """Deliver ``message``; ``name`` identifies it (e.g. ``marketing_2024-01-08``). Returns where it went."""


class SmtpMailer(Mailer):
    """Delivery through an SMTP server; a refusal raises with the server's host:port."""

    host: str
    port: int = 587
    security: str = Field(default="starttls", description="starttls, ssl or none.")
    username: str | None = None
    password: str | None = None
    timeout: float = Field(default=NetworkSettings.read_timeout_seconds, description="Seconds per connect or reply.")

    def deliver(self, message: EmailMessage, name: str) -> str:
        send_smtp(
            message,
            self.host,
            self.port,
            security=self.security,
            username=self.username,
            password=self.password,
            timeout=self.timeout,
        )
        return f"smtp://{self.host}:{self.port}"


class SesMailer(Mailer, BoundedAwsClients):
    """Delivery through Amazon SES (``send_raw_email``)."""

    def deliver(self, message: EmailMessage, name: str) -> str:
        message_id = send_ses(self.aws_client("ses"), message)
        return f"ses:{message_id}"


class OutboxMailer(Mailer):
    """No delivery: the message is written as ``<outbox>/<name>.eml`` (the local environment)."""

    outbox_uri: str = Field(description="Folder or s3://bucket/prefix of the .eml files.")
    s3: S3Resource

    def deliver(self, message: EmailMessage, name: str) -> str:
        store = store_at(self.outbox_uri, self.s3)
        return write_eml(store, outbox_key(name), message)
