"""The SNS inbox of the moto stand-in (sandbox/moto.py), and the icon every sandbox page serves.

Messages are published through boto3 to a real moto server (fixtures in
tests/integrations/conftest.py); the inbox is read as JSON, as HTML and in headless Chromium.
"""

from __future__ import annotations

import html
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from core.aws import aws_client
from sandbox.favicon import CONTENT_TYPE as FAVICON_TYPE
from tests.polling import DEADLINE_SECONDS, eventually

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<script>alert('sns')</script>"


def publish(topic_arn: str, message: str, *, subject: str | None = None, **attributes: str) -> str:
    fields: dict[str, Any] = {
        "TopicArn": topic_arn,
        "Message": message,
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    }
    if subject is not None:
        fields["Subject"] = subject
    return aws_client("sns").publish(**fields)["MessageId"]


def inbox(url: str, **params: str) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/_inbox/messages", params=params, timeout=DEADLINE_SECONDS)
    assert response.status_code == 200
    return response.json()["messages"]


def test_the_inbox_lists_every_message_of_both_topics_newest_first(
    aws_sandbox: dict[str, Any], moto_server_url: str
) -> None:
    assert inbox(moto_server_url) == []
    first = publish(aws_sandbox["topic_arn"], '{"order_id": "1"}', event_type="order.paid", order_id="1")
    alert = publish(aws_sandbox["alerts_topic_arn"], "Email failing", subject="Alert: email")
    batch = aws_client("sns").publish_batch(
        TopicArn=aws_sandbox["topic_arn"],
        PublishBatchRequestEntries=[
            {"Id": "a", "Message": "second"},
            {
                "Id": "b",
                "Message": "third",
                "MessageAttributes": {"attempt": {"DataType": "Number", "StringValue": "2"}},
            },
        ],
    )
    second, third = (entry["MessageId"] for entry in batch["Successful"])

    messages = inbox(moto_server_url)
    assert [m["message_id"] for m in messages] == [third, second, alert, first]
    by_id = {m["message_id"]: m for m in messages}
    assert by_id[first]["topic"] == "cis-order-events"
    assert by_id[first]["topic_arn"] == aws_sandbox["topic_arn"]
    assert by_id[first]["message"] == '{"order_id": "1"}'
    assert by_id[first]["message_attributes"] == {
        "event_type": {"type": "String", "value": "order.paid"},
        "order_id": {"type": "String", "value": "1"},
    }
    assert by_id[third]["message_attributes"] == {"attempt": {"type": "Number", "value": "2"}}
    assert by_id[alert]["topic"] == "cis-ops-alerts"
    assert by_id[alert]["subject"] == "Alert: email"
    assert all(m["published_at"] for m in messages)
    assert [m["published_at"] for m in messages] == sorted(
        (m["published_at"] for m in messages), reverse=True
    )

    # One topic's messages only.
    assert [m["message_id"] for m in inbox(moto_server_url, topic="cis-ops-alerts")] == [alert]
    assert [m["message_id"] for m in inbox(moto_server_url, topic="cis-order-events")] == [
        third,
        second,
        first,
    ]


def test_the_inbox_page_shows_attributes_and_escapes_what_was_published(
    aws_sandbox: dict[str, Any], moto_server_url: str
) -> None:
    publish(aws_sandbox["topic_arn"], "older", subject="Older message")
    message_id = publish(
        aws_sandbox["topic_arn"], HOSTILE, subject=HOSTILE, event_type=HOSTILE, order_id="42"
    )

    page = requests.get(f"{moto_server_url}/_inbox/", timeout=DEADLINE_SECONDS)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    text = page.text
    assert "SNS sandbox inbox" in text
    assert "<script" not in text  # published text is escaped, and the page has no script of its own
    assert html.escape(HOSTILE) in text
    assert message_id in text
    assert "cis-order-events" in text and "event_type" in text and "order_id" in text
    assert text.index(message_id) < text.index("Older message")  # newest first
    assert "cdn" not in text.lower()


def test_a_browser_at_the_root_is_sent_to_the_inbox_while_aws_calls_are_moto_s(
    aws_sandbox: dict[str, Any], moto_server_url: str
) -> None:
    browser_get = requests.get(
        f"{moto_server_url}/",
        headers={"Accept": "text/html,application/xhtml+xml"},
        allow_redirects=False,
        timeout=DEADLINE_SECONDS,
    )
    assert browser_get.status_code == 302
    assert browser_get.headers["Location"] == "/_inbox/"
    # A signed API call at the root is still answered by moto (S3's ListBuckets here).
    assert aws_client("s3").list_buckets()["Buckets"] == []
    # An SNS call too, and the reset forgets what the inbox showed.
    publish(aws_sandbox["topic_arn"], "before the reset")
    assert len(inbox(moto_server_url)) == 1
    requests.post(f"{moto_server_url}/moto-api/reset", timeout=DEADLINE_SECONDS).raise_for_status()
    assert inbox(moto_server_url) == []


def test_the_make_run_banner_links_the_sns_inbox() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run_target = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "http://127.0.0.1:8427/_inbox/" in run_target
    assert not re.search(r"http://127\.0\.0\.1:8427/\s", run_target)  # not moto's root any more


# --- /favicon.ico on every sandbox page -----------------------------------------------------------


def assert_icon(url: str) -> None:
    response = requests.get(f"{url}/favicon.ico", timeout=DEADLINE_SECONDS)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == FAVICON_TYPE
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert b"\x89PNG\r\n\x1a\n" in response.content


def test_the_sandbox_pages_serve_an_icon(
    moto_server_url: str, sendgrid_sandbox: Any, sheets_sandbox: Any
) -> None:
    for url in (moto_server_url, sendgrid_sandbox.url, sheets_sandbox.url):
        assert_icon(url)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_stripe_stand_in_serves_an_icon(tmp_path: Path) -> None:
    # Its own process: localstripe's store is one per process, shared with the payments tests' one.
    port = free_port()
    log = tmp_path / "stripe.log"
    env = {**os.environ, "SQLITE_PATH": str(tmp_path / "db.sqlite3")}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "stripe_sandbox", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        eventually(lambda: "localstripe on" in log.read_text(), what="the Stripe stand-in")
        assert_icon(f"http://127.0.0.1:{port}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=DEADLINE_SECONDS)


# --- In a browser -----------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_browser_sees_a_published_message_in_the_sns_inbox(
    page: Page, aws_sandbox: dict[str, Any], moto_server_url: str
) -> None:
    message_id = publish(
        aws_sandbox["topic_arn"],
        '{"order_id": "7f1c", "status": "paid"}',
        subject="order.paid",
        event_type="order.paid",
    )
    publish(aws_sandbox["alerts_topic_arn"], "Sheets failing", subject="Alert: sheets")

    page.goto(f"{moto_server_url}/")  # the root, as the banner of an older `make run` had it
    expect(page).to_have_url(re.compile(r"/_inbox/$"))
    expect(page.locator("h1")).to_have_text("SNS sandbox inbox")
    articles = page.locator("article.message")
    expect(articles).to_have_count(2)
    expect(articles.nth(0).locator("h2")).to_have_text("Alert: sheets")  # newest first
    paid = articles.nth(1)
    expect(paid.locator(".topic")).to_have_text("cis-order-events")
    expect(paid).to_contain_text(message_id)
    attribute = paid.locator("table.attributes tbody tr")
    expect(attribute).to_have_count(1)
    expect(attribute).to_contain_text("event_type")
    expect(attribute).to_contain_text("order.paid")
    expect(paid.locator("pre")).to_contain_text('"status": "paid"')

    page.get_by_role("link", name="cis-ops-alerts").click()
    expect(page.locator("article.message")).to_have_count(1)
    expect(page.locator("article.message h2")).to_have_text("Alert: sheets")
