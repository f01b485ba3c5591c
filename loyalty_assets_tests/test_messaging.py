"""Marketing e-mail through a real SMTP server (plain, STARTTLS, SSL), SES, SNS and CloudWatch on moto."""

from __future__ import annotations

import json
import math
import socket
import ssl
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email import policy
from email.parser import BytesParser

import boto3
import numpy as np
import pandas as pd
import pytest
from aiosmtpd.smtp import AuthResult
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from loyalty_assets.domain.messaging import (
    Alert,
    EmailDeliveryError,
    build_marketing_email,
    format_alert,
    metric_unit,
    publish_sns,
    put_run_metrics,
    send_ses,
    send_smtp,
    summarize_for_marketing,
    top_critical_members,
    write_eml,
)
from loyalty_assets.domain.storage import LocalStore
from loyalty_assets_tests.tls import write_self_signed_certificate

SENDER = "churn-bot@example.com"
RECIPIENTS = ["marketing@example.com", "crm-team@example.com"]
FILE_LOCATION = "https://lake.example.com/exports/churn_predictions/2024-01-08.csv"


def predictions(
    week: str, tiers_and_segments: list[tuple[str, str, float]], first_member: int = 100001
) -> pd.DataFrame:
    tiers, segments, risks = zip(*tiers_and_segments)
    return pd.DataFrame(
        {
            "loyalty_number": range(first_member, first_member + len(risks)),
            "week": week,
            "churn_risk_pct": risks,
            "risk_tier": tiers,
            "segment": segments,
            "experiment_arm": "treatment",
            "risk_vs_average": np.round(np.asarray(risks) / np.mean(risks), 2),
            "recommended_action": "Call within a week",
            "top_reasons": "flights in the last 3 months: 0, below the usual 4",
        }
    )


@pytest.fixture
def this_week() -> pd.DataFrame:
    return predictions(
        "2024-01-08",
        [("Critical", "Frequent", 90.0)] * 3 + [("Critical", "Occasional", 70.0)] + [("Low", "Frequent", 4.0)] * 5,
    )


@pytest.fixture
def member_value(this_week) -> pd.Series:
    return pd.Series([1000.0, 5000.0, 2000.0, 9000.0, 1.0, 1.0, 1.0, 1.0, 1.0], index=this_week["loyalty_number"])


def text_part(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def html_part(message) -> str:
    return message.get_body(preferencelist=("html",)).get_content().replace("\r\n", "\n")


def section(text: str, heading: str) -> list[list[str]]:
    """The rows (as tokens) of the text table under ``heading``."""
    block = next(part for part in text.split("\n\n") if part.startswith(heading))
    return [line.split() for line in block.splitlines()[1:]]


def test_top_critical_members_rank_by_expected_loss(this_week, member_value):
    top = top_critical_members(this_week, member_value, top_n=3)
    assert top["loyalty_number"].tolist() == [100004, 100002, 100003]
    assert top["expected_loss"].tolist() == pytest.approx([0.7 * 9000, 0.9 * 5000, 0.9 * 2000])
    with pytest.raises(ValueError, match="no member value for 1 Critical members"):
        top_critical_members(this_week, member_value.drop(100002))
    held_out = this_week.assign(experiment_arm=np.where(this_week["loyalty_number"] == 100004, "control", "treatment"))
    assert top_critical_members(held_out, member_value, top_n=3)["loyalty_number"].tolist() == [100002, 100003, 100001]


def test_marketing_email_through_real_smtp_server(smtp_server, this_week, member_value):
    previous = predictions("2024-01-01", [("Critical", "Frequent", 80.0)] + [("Low", "Frequent", 3.0)] * 6)
    summary = summarize_for_marketing(this_week, member_value, FILE_LOCATION, previous_predictions=previous, top_n=2)
    send_smtp(build_marketing_email(summary, SENDER, RECIPIENTS), smtp_server.host, smtp_server.port)

    [received] = smtp_server.messages
    assert received.mail_from == SENDER
    assert received.rcpt_tos == RECIPIENTS
    assert received.message["Subject"] == "Loyalty churn week 2024-01-08: 4 Critical members"
    text = text_part(received.message)
    assert section(text, "Members per risk tier and segment") == [
        ["segment", "Frequent", "Occasional", "Total"],
        ["risk_tier"],
        ["Critical", "3", "1", "4"],
        ["Low", "5", "0", "5"],
        ["Total", "8", "1", "9"],
    ]
    assert section(text, "Change from last week") == [
        ["segment", "Frequent", "Occasional", "Total"],
        ["risk_tier"],
        ["Critical", "2", "1", "3"],
        ["Low", "-1", "0", "-1"],
        ["Total", "1", "1", "2"],
    ]
    assert section(text, "Top Critical members")[1:] == [
        ["100004", "70.0", "Occasional", "6300.0"],
        ["100002", "90.0", "Frequent", "4500.0"],
    ]
    assert f"Full file: {FILE_LOCATION}" in text
    assert f'<a href="{FILE_LOCATION}">' in html_part(received.message)


def test_first_week_email_says_so(smtp_server, this_week, member_value):
    summary = summarize_for_marketing(this_week, member_value, "/lake/exports/2024-01-08.csv")
    send_smtp(build_marketing_email(summary, SENDER, RECIPIENTS[:1]), smtp_server.host, smtp_server.port)
    message = smtp_server.messages[0].message
    assert "Change from last week:\nfirst week" in text_part(message)
    assert "<code>/lake/exports/2024-01-08.csv</code>" in html_part(message)


def test_html_part_escapes_values(this_week, member_value):
    hostile = this_week.assign(segment="<script>alert(1)</script>")
    message = build_marketing_email(summarize_for_marketing(hostile, member_value, "x"), SENDER, RECIPIENTS)
    assert "<script>" not in html_part(message)
    assert "&lt;script&gt;" in html_part(message)


def test_smtp_refusal_names_the_server(this_week, member_value):
    message = build_marketing_email(summarize_for_marketing(this_week, member_value, "x"), SENDER, RECIPIENTS)
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        unused_port = probe.getsockname()[1]
    with pytest.raises(EmailDeliveryError, match=f"could not connect to SMTP server 127.0.0.1:{unused_port}.*refused"):
        send_smtp(message, "127.0.0.1", unused_port, timeout=5)


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts around a self-signed certificate for 127.0.0.1."""
    cert_path, key_path = write_self_signed_certificate(tmp_path_factory.mktemp("tls"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def recording_authenticator(logins: list[tuple[str, str]]):
    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        accepted = auth_data.password == b"s3cret"
        return AuthResult(success=accepted, handled=accepted)  # handled=False: aiosmtpd answers 535

    return authenticate


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_smtp_with_tls_and_login(security, tls_contexts, make_smtp_server, this_week, member_value):
    server_context, client_context = tls_contexts
    logins: list[tuple[str, str]] = []
    # aiosmtpd only counts STARTTLS as TLS for AUTH, so implicit TLS needs auth_require_tls=False.
    tls_options = (
        {"tls_context": server_context, "require_starttls": True}
        if security == "starttls"
        else {"ssl_context": server_context, "auth_require_tls": False}
    )
    server = make_smtp_server(auth_required=True, authenticator=recording_authenticator(logins), **tls_options)
    message = build_marketing_email(summarize_for_marketing(this_week, member_value, "x"), SENDER, RECIPIENTS)

    send_smtp(
        message,
        server.host,
        server.port,
        security=security,
        username="bot",
        password="s3cret",
        ssl_context=client_context,
    )
    assert logins == [("bot", "s3cret")]
    assert [mail.rcpt_tos for mail in server.messages] == [RECIPIENTS]

    with pytest.raises(EmailDeliveryError, match=f"{server.host}:{server.port}.*Authentication"):
        send_smtp(
            message,
            server.host,
            server.port,
            security=security,
            username="bot",
            password="wrong",
            ssl_context=client_context,
        )
    with pytest.raises(EmailDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        send_smtp(message, server.host, server.port, security=security, username="bot", password="s3cret")
    assert len(server.messages) == 1


def test_smtp_credentials_need_tls(this_week, member_value):
    message = build_marketing_email(summarize_for_marketing(this_week, member_value, "x"), SENDER, RECIPIENTS)
    with pytest.raises(ValueError, match="without TLS"):
        send_smtp(message, "127.0.0.1", 25, username="bot", password="s3cret")


def test_send_ses_through_moto(aws_env, this_week, member_value):
    client = boto3.client("ses", endpoint_url=aws_env)
    client.verify_email_identity(EmailAddress=SENDER)
    message = build_marketing_email(summarize_for_marketing(this_week, member_value, FILE_LOCATION), SENDER, RECIPIENTS)

    message_id = send_ses(client, message)

    assert client.get_send_quota()["SentLast24Hours"] == len(RECIPIENTS)  # SES counts per recipient
    [sent] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert sent.id == message_id
    assert sorted(sent.destinations) == sorted(RECIPIENTS)
    delivered = BytesParser(policy=policy.default).parsebytes(sent.raw_data.encode())
    assert delivered["Subject"] == message["Subject"]
    assert FILE_LOCATION in text_part(delivered)


def test_write_eml_to_local_store(tmp_path, this_week, member_value):
    message = build_marketing_email(summarize_for_marketing(this_week, member_value, FILE_LOCATION), SENDER, RECIPIENTS)
    location = write_eml(LocalStore(tmp_path), "exports/emails/2024-01-08.eml", message)
    assert location == str(tmp_path / "exports" / "emails" / "2024-01-08.eml")
    stored = (tmp_path / "exports" / "emails" / "2024-01-08.eml").read_bytes()
    assert b"\r\n" in stored
    reread = BytesParser(policy=policy.default).parsebytes(stored)
    assert reread["To"] == ", ".join(RECIPIENTS)
    assert text_part(reread) == text_part(message)


def failed_scoring_alert(**changes) -> Alert:
    alert = Alert(
        title="Scoring failed",
        job="weekly_distribution",
        asset_or_check="churn_predictions",
        partition="2024-01-08",
        ui_url="http://dagster.internal:3000/runs/abc123",
        details="ValueError: model missing",
        severity="error",
    )
    return replace(alert, **changes)


def test_format_alert_names_job_asset_partition_and_link():
    subject, body = format_alert(failed_scoring_alert())
    assert subject == "[ERROR] weekly_distribution / churn_predictions / 2024-01-08: Scoring failed"
    assert "Job:          weekly_distribution" in body
    assert "Asset/check:  churn_predictions" in body
    assert "Partition:    2024-01-08" in body
    assert "Dagster UI:   http://dagster.internal:3000/runs/abc123" in body
    assert body.endswith("ValueError: model missing")


def test_alert_subject_fits_sns_rules():
    subject, body = format_alert(failed_scoring_alert(title="Prüfung\nfehlgeschlagen " + "x" * 200, partition=None))
    assert len(subject) == 100
    assert subject.isascii() and "\n" not in subject
    assert subject.startswith("[ERROR] weekly_distribution / churn_predictions / unpartitioned: Pr?fung fehlgeschlagen")
    assert subject.endswith("...")
    assert "Prüfung\nfehlgeschlagen" in body
    with pytest.raises(ValueError, match="severity"):
        failed_scoring_alert(severity="urgent")


def test_publish_sns_reaches_a_subscribed_queue(aws_env):
    sns = boto3.client("sns", endpoint_url=aws_env)
    sqs = boto3.client("sqs", endpoint_url=aws_env)
    topic_arn = sns.create_topic(Name="loyalty-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    alert = failed_scoring_alert()

    message_id = publish_sns(sns, topic_arn, alert)

    [received] = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"]
    notification = json.loads(received["Body"])
    assert notification["MessageId"] == message_id
    assert (notification["Subject"], notification["Message"]) == format_alert(alert)
    assert {name: value["Value"] for name, value in notification["MessageAttributes"].items()} == {
        "severity": "error",
        "job": "weekly_distribution",
        "partition": "2024-01-08",
    }


def test_metric_units_from_names():
    assert [metric_unit(name) for name in ["scoring_seconds", "scored_members", "auc", "quarantine_pct"]] == [
        "Seconds",
        "Count",
        "None",
        "Percent",
    ]


def test_put_run_metrics_on_moto(aws_env):
    client = boto3.client("cloudwatch", endpoint_url=aws_env)
    batch_sizes: list[int] = []
    client.meta.events.register(
        "provide-client-params.cloudwatch.PutMetricData",
        lambda params, **kwargs: batch_sizes.append(len(params["MetricData"])),
    )
    dimensions = {"job": "weekly_distribution", "partition": "2024-01-08"}
    when = datetime.now(timezone.utc).replace(microsecond=0)
    metrics = {"scoring_seconds": 12.5, "scored_members": 16000, "auc": 0.81} | {
        f"feature_drift_{index}": index / 10 for index in range(998)
    }

    assert (
        put_run_metrics(client, "Loyalty/Pipeline", metrics, dimensions, units={"auc": "None"}, timestamp=when) == 1001
    )

    assert batch_sizes == [1000, 1]
    listed = [
        metric
        for page in client.get_paginator("list_metrics").paginate(Namespace="Loyalty/Pipeline")
        for metric in page["Metrics"]
    ]
    assert len(listed) == 1001
    assert {(item["Name"], item["Value"]) for item in listed[0]["Dimensions"]} == set(dimensions.items())
    statistics = client.get_metric_statistics(
        Namespace="Loyalty/Pipeline",
        MetricName="scoring_seconds",
        Dimensions=[{"Name": name, "Value": value} for name, value in dimensions.items()],
        StartTime=when - timedelta(minutes=1),
        EndTime=when + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert [(point["Maximum"], point["Unit"]) for point in statistics] == [(12.5, "Seconds")]


def test_put_run_metrics_rejects_nan_before_sending(aws_env):
    client = boto3.client("cloudwatch", endpoint_url=aws_env)
    with pytest.raises(ValueError, match=r"\['auc'\] are NaN or infinite"):
        put_run_metrics(client, "Loyalty/Pipeline", {"auc": math.nan, "rows": 3.0}, {"job": "j"})
    assert client.list_metrics(Namespace="Loyalty/Pipeline")["Metrics"] == []


def test_marketing_email_carries_the_realised_uplift_lines(this_week, member_value):
    line = "Win-back offer (Critical): churn 2.1% treated vs 3.4% held out, -1.3 pp [-2.2, -0.4]"
    summary = summarize_for_marketing(this_week, member_value, "x", experiment_lines=[line])
    message = build_marketing_email(summary, SENDER, RECIPIENTS)
    assert "Is the retention programme working?" in text_part(message)
    assert line in text_part(message)
    assert "-1.3 pp [-2.2, -0.4]" in html_part(message)
    without = build_marketing_email(summarize_for_marketing(this_week, member_value, "x"), SENDER, RECIPIENTS)
    assert "retention programme" not in text_part(without)


def test_marketing_email_explains_tiers_unit_actions_reasons_and_segments(this_week, member_value):
    many = predictions("2024-01-08", [("Critical", "Frequent", 60.0)] * 55 + [("Low", "Frequent", 2.0)] * 45)
    held_out = many.assign(experiment_arm=np.where(many.index == 0, "control", "treatment"))
    values = pd.Series(1000.0 + np.arange(100.0), index=many["loyalty_number"])
    profile = pd.DataFrame(
        {
            "members": [10, 60, 30],
            "share": [0.1, 0.6, 0.3],
            "median_flights_12m": [120.0, 30.0, 2.0],
            "median_distance_per_flight_12m": [1500.0, 250.0, 400.0],
            "median_active_months_12m": [11.0, 11.0, 2.0],
            "churn_rate": [0.01, 0.02, np.nan],
        },
        index=pd.Index(["Road Warriors", "Loyal Regulars", "Dabblers"], name="segment"),
    )
    summary = summarize_for_marketing(
        held_out, values, FILE_LOCATION, segment_profile=profile, churn_basis="realised over 3 months"
    )
    text = text_part(build_marketing_email(summary, SENDER, RECIPIENTS))
    assert "Risk tiers are capacity-based: each is a share of the members, not a level of absolute risk" in text
    assert "(this week Critical 55.0%, Low 45.0% of members)" in text
    assert "expected_loss is in CAD" in text and "CLV" in text
    heading = "Every Critical member to call, with the action and the reasons (50 of 54 by expected loss; 4 more in "
    calls = section(text, heading)
    assert len(calls) == 50
    first = " ".join(calls[0])
    # The highest value among the Critical members: the 55th member (the first is held out).
    assert first.startswith("100055 (Frequent, risk 60.0% = 1.8x average, expected loss 632 CAD): ")
    assert "Call within a week. Why: flights in the last 3 months: 0, below the usual 4" in first
    assert "1 Critical members are held out for the retention experiment and get no call" in text
    segments = section(text, "Segments:")
    assert segments[0][:2] == ["members", "share"]
    assert ["Dabblers", "30", "30.0%", "2.0", "400.0", "2.0", "n/a"] in segments
    assert "Churn rate: realised over 3 months" in text
    assert "Road Warriors: the top band by flights and distance" in text
    unrecorded = summarize_for_marketing(this_week, member_value, FILE_LOCATION)
    assert "Not recorded for this segmentation version" in text_part(
        build_marketing_email(unrecorded, SENDER, RECIPIENTS)
    )
