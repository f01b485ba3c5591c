"""Side effects happen once: the marketing e-mail of a week over a real SMTP server (aiosmtpd), and
output files readable as the umask allows."""

import json
import os
import stat
from email.message import EmailMessage

import dagster as dg
import pytest

from loyalty_assets.defs.resources.mailer import SmtpMailer
from loyalty_assets.domain.lake_keys import sent_marker_key
from loyalty_assets.domain.messaging import deliver_once, send_smtp
from loyalty_assets.domain.storage import LocalStore
from loyalty_assets_tests.drop_files import put_committed_drop
from loyalty_assets_tests.test_distribution_assets import (
    RECIPIENTS,
    SENDER,
    UPSTREAM,
    WEEK_2,
    Lake,
    closed_port,
    email_asset,
    loyalty_history,
    metadata_of,
    predictions,
)

MARKER = sent_marker_key(f"marketing_{WEEK_2}")


@pytest.fixture
def week_in_lake(tmp_path) -> Lake:
    lake = Lake(tmp_path / "lake")
    lake.put_week(WEEK_2, predictions(WEEK_2, 24))
    put_committed_drop(lake.store, "2024-03-12", loyalty_history(24, clv=1000.0))
    return lake


def send_week(lake, port: int, resend: bool = False, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    mailer = SmtpMailer(sender=SENDER, recipients=RECIPIENTS[0], host="127.0.0.1", port=port, security="none")
    return dg.materialize(
        [*UPSTREAM, email_asset],
        partition_key=WEEK_2,
        resources={**lake.resources(), "marketing_mailer": mailer},
        run_config={"ops": {"marketing_email": {"config": {"resend": resend}}}},
        raise_on_error=raise_on_error,
    )


def test_a_rerun_of_the_week_sends_nothing_and_says_already_sent(week_in_lake, smtp_server):
    first = metadata_of(send_week(week_in_lake, smtp_server.port), "marketing_email")
    second = metadata_of(send_week(week_in_lake, smtp_server.port), "marketing_email")

    assert len(smtp_server.messages) == 1
    assert first["delivery"] == "sent" and second["delivery"] == "already sent"
    assert second["message_id"] == first["message_id"] == smtp_server.messages[0].message["Message-ID"]
    assert second["sent_at"] == first["sent_at"]
    marker = json.loads(week_in_lake.store.get_bytes(MARKER))
    assert marker["message_id"] == first["message_id"]
    assert marker["delivered"] == f"smtp://127.0.0.1:{smtp_server.port}"


def test_resend_sends_a_new_message_and_moves_the_marker(week_in_lake, smtp_server):
    first = metadata_of(send_week(week_in_lake, smtp_server.port), "marketing_email")
    again = metadata_of(send_week(week_in_lake, smtp_server.port, resend=True), "marketing_email")

    assert len(smtp_server.messages) == 2
    assert again["delivery"] == "sent"
    assert again["message_id"] != first["message_id"]
    assert again["message_id"] == smtp_server.messages[1].message["Message-ID"]
    assert json.loads(week_in_lake.store.get_bytes(MARKER))["message_id"] == again["message_id"]


def test_a_failed_send_leaves_no_marker_so_the_rerun_sends(week_in_lake, smtp_server):
    failed = send_week(week_in_lake, closed_port(), raise_on_error=False)

    assert not failed.success
    assert not week_in_lake.store.exists(MARKER)
    assert metadata_of(send_week(week_in_lake, smtp_server.port), "marketing_email")["delivery"] == "sent"
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_local_files_follow_the_umask(tmp_path, umask, mode):
    store = LocalStore(tmp_path)
    previous = os.umask(umask)
    try:
        store.put_bytes("exports/week=2024-03-11/churn_predictions.csv", b"loyalty_number\n1\n")
        store.put_bytes("exports/week=2024-03-11/churn_predictions.csv", b"loyalty_number\n2\n")
    finally:
        os.umask(previous)
    path = tmp_path / "exports" / "week=2024-03-11" / "churn_predictions.csv"
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() == b"loyalty_number\n2\n"
    assert [entry.name for entry in path.parent.iterdir()] == ["churn_predictions.csv"]


def test_deliver_once_keys_on_the_name_and_records_the_sent_message(tmp_path, smtp_server):
    store = LocalStore(tmp_path)
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = "week", SENDER, RECIPIENTS[0]
    message["Message-ID"] = "<week-1@airline.example>"
    message.set_content("body")

    def deliver(mail: EmailMessage) -> str:
        send_smtp(mail, smtp_server.host, smtp_server.port)
        return "smtp"

    first = deliver_once(store, "marketing_2024-03-11", message, deliver)
    repeated = deliver_once(store, "marketing_2024-03-11", message, deliver)
    other_week = deliver_once(store, "marketing_2024-03-18", message, deliver)

    assert (first.sent, repeated.sent, other_week.sent) == (True, False, True)
    assert repeated.record == first.record
    assert first.record["message_id"] == "<week-1@airline.example>" and first.record["delivered"] == "smtp"
    assert len(smtp_server.messages) == 2
