"""The SendGrid stand-in answers like SendGrid's v3 Mail Send API, keeps an inbox, injects faults."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import sendgrid
from python_http_client.exceptions import BadRequestsError, UnauthorizedError
from sendgrid.helpers.mail import Mail

from tests.integrations.conftest import SENDGRID_TEST_KEY
from tests.polling import DEADLINE_SECONDS, eventually

ROOT = Path(__file__).resolve().parents[2]


def good_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "ada@example.com", "name": "Ada"}]}],
        "from": {"email": "shop@example.com"},
        "subject": "Order 1234ABCD confirmed",
        "content": [
            {"type": "text/plain", "value": "Thank you"},
            {"type": "text/html", "value": "<p>Thank you</p>"},
        ],
        "custom_args": {"order_id": "1234abcd", "idempotency_key": "key-1"},
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def mail_send(url: str, body: Any, *, key: str | None = SENDGRID_TEST_KEY, timeout: float = 10) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers["Content-Type"] = "application/json"
    return requests.post(f"{url}/v3/mail/send", data=data, headers=headers, timeout=timeout)


def set_faults(sandbox: Any, **faults: int) -> dict[str, Any]:
    response = requests.post(f"{sandbox.url}/_sandbox/faults", json=faults, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def stats_at(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/_sandbox/stats", timeout=10).json()


def stats(sandbox: Any) -> dict[str, Any]:
    return stats_at(sandbox.url)


def assert_sendgrid_errors(response: Any, status: int) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    errors = response.json()["errors"]
    assert errors
    for error in errors:
        assert set(error) == {"message", "field", "help"}
        assert isinstance(error["message"], str) and error["message"]
    return errors


# --- auth -----------------------------------------------------------------------------------


def test_a_wrong_key_gets_401_in_sendgrids_shape(sendgrid_sandbox: Any) -> None:
    response = mail_send(sendgrid_sandbox.url, good_body(), key="SG.wrong")

    assert response.json() == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    assert response.status_code == 401
    assert sendgrid_sandbox.messages() == []


def test_no_authorization_header_gets_401(sendgrid_sandbox: Any) -> None:
    errors = assert_sendgrid_errors(mail_send(sendgrid_sandbox.url, good_body(), key=None), 401)

    assert errors[0]["message"] == "authorization required"


def test_the_sendgrid_library_raises_unauthorized_for_a_wrong_key(sendgrid_sandbox: Any) -> None:
    client = sendgrid.SendGridAPIClient(api_key="SG.wrong", host=sendgrid_sandbox.url)

    with pytest.raises(UnauthorizedError) as raised:
        client.send(good_body())

    assert raised.value.status_code == 401
    assert raised.value.to_dict["errors"][0]["field"] is None


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"personalizations": None}, "personalizations"),
        ({"personalizations": []}, "personalizations"),
        ({"personalizations": [{}]}, "personalizations.0.to"),
        ({"personalizations": [{"to": []}]}, "personalizations.0.to"),
        ({"personalizations": [{"to": [{"email": "not-an-email"}]}]}, "personalizations.0.to.0.email"),
        (
            {
                "personalizations": [
                    {"to": [{"email": "ada@example.com"}], "cc": [{"email": "ADA@example.com"}]}
                ]
            },
            "personalizations.0.cc",
        ),
        ({"from": None}, "from.email"),
        ({"from": {"name": "Shop"}}, "from.email"),
        ({"from": {"email": "shop@"}}, "from.email"),
        ({"subject": None}, "subject"),
        ({"content": None}, "content"),
        ({"content": []}, "content"),
        ({"content": [{"type": "text/plain", "value": ""}]}, "content.0.value"),
        ({"content": [{"value": "hello"}]}, "content.0.type"),
        (
            {"content": [{"type": "text/html", "value": "<p>a</p>"}, {"type": "text/plain", "value": "a"}]},
            "content",
        ),
        ({"custom_args": {"order_id": 42}}, "custom_args.order_id"),
        ({"headers": {"X-Idempotency-Key": 7}}, "headers.X-Idempotency-Key"),
        ({"mail_settings": {"sandbox_mode": {"enable": "true"}}}, "mail_settings.sandbox_mode.enable"),
    ],
)
def test_invalid_bodies_get_400_naming_the_field(
    sendgrid_sandbox: Any, changes: dict[str, Any], field: str
) -> None:
    errors = assert_sendgrid_errors(mail_send(sendgrid_sandbox.url, good_body(**changes)), 400)

    assert field in [error["field"] for error in errors], errors
    assert sendgrid_sandbox.messages() == []


def test_every_problem_of_a_body_is_reported_at_once(sendgrid_sandbox: Any) -> None:
    body = good_body(subject=None, content=None)
    body["from"] = {"email": "nope"}

    errors = assert_sendgrid_errors(mail_send(sendgrid_sandbox.url, body), 400)

    assert {"from.email", "subject", "content"} <= {error["field"] for error in errors}
    assert all(error["help"] for error in errors)


def test_a_body_that_is_not_json_is_a_bad_request(sendgrid_sandbox: Any) -> None:
    errors = assert_sendgrid_errors(mail_send(sendgrid_sandbox.url, "{not json"), 400)

    assert errors == [{"message": "Bad Request", "field": None, "help": None}]


def test_a_template_stands_in_for_subject_and_content(sendgrid_sandbox: Any) -> None:
    body = good_body(subject=None, content=None, template_id="d-0123456789abcdef")

    assert mail_send(sendgrid_sandbox.url, body).status_code == 202


def test_the_sendgrid_library_raises_bad_request_with_the_errors(sendgrid_sandbox: Any) -> None:
    client = sendgrid.SendGridAPIClient(api_key=SENDGRID_TEST_KEY, host=sendgrid_sandbox.url)

    with pytest.raises(BadRequestsError) as raised:
        client.send(good_body(subject=None))

    assert raised.value.status_code == 400
    assert raised.value.to_dict["errors"][0]["field"] == "subject"


# --- accepted messages and the inbox --------------------------------------------------------


def test_a_good_message_gets_202_an_empty_body_and_a_message_id(sendgrid_sandbox: Any) -> None:
    response = mail_send(sendgrid_sandbox.url, good_body())

    assert response.status_code == 202
    assert response.content == b""
    message_id = response.headers["X-Message-Id"]
    assert len(message_id) >= 16
    [message] = sendgrid_sandbox.messages()
    assert message["id"] == message_id
    assert message["to"] == ["ada@example.com"]
    assert message["subject"] == "Order 1234ABCD confirmed"
    assert message["text"] == "Thank you"
    assert message["html"] == "<p>Thank you</p>"
    assert message["custom_args"] == {"order_id": "1234abcd", "idempotency_key": "key-1"}
    assert message["received_at"]
    assert message["request_headers"]["Content-Type"] == "application/json"
    assert SENDGRID_TEST_KEY not in json.dumps(message)  # the key is not kept


def test_the_sendgrid_library_gets_202_and_the_message_id(sendgrid_sandbox: Any) -> None:
    client = sendgrid.SendGridAPIClient(api_key=SENDGRID_TEST_KEY, host=sendgrid_sandbox.url)
    mail = Mail(
        from_email="shop@example.com",
        to_emails="grace@example.com",
        subject="Hello",
        plain_text_content="plain",
        html_content="<b>html</b>",
    )

    response = client.send(mail)

    assert response.status_code == 202
    [message] = sendgrid_sandbox.messages()
    assert response.headers["X-Message-Id"] == message["id"]
    assert message["request_headers"]["User-Agent"].startswith("sendgrid/")


def test_each_message_gets_its_own_id(sendgrid_sandbox: Any) -> None:
    ids = [mail_send(sendgrid_sandbox.url, good_body()).headers["X-Message-Id"] for _ in range(3)]

    assert len(set(ids)) == 3
    assert [m["id"] for m in sendgrid_sandbox.messages()] == ids  # oldest first


def test_sandbox_mode_validates_answers_200_and_keeps_nothing(sendgrid_sandbox: Any) -> None:
    body = good_body(mail_settings={"sandbox_mode": {"enable": True}})

    response = mail_send(sendgrid_sandbox.url, body)

    assert response.status_code == 200
    assert sendgrid_sandbox.messages() == []
    assert stats(sendgrid_sandbox)["sandbox_mode"] == 1


def test_the_inbox_json_lists_messages_and_filters_by_recipient(sendgrid_sandbox: Any) -> None:
    mail_send(sendgrid_sandbox.url, good_body())
    grace = good_body(personalizations=[{"to": [{"email": "grace@example.com"}]}], subject="For Grace")
    mail_send(sendgrid_sandbox.url, grace)

    everything = requests.get(f"{sendgrid_sandbox.url}/_sandbox/messages", timeout=10).json()["messages"]
    for_grace = requests.get(
        f"{sendgrid_sandbox.url}/_sandbox/messages", params={"to": "Grace@Example.com"}, timeout=10
    ).json()["messages"]

    assert [m["subject"] for m in everything] == ["Order 1234ABCD confirmed", "For Grace"]
    assert [m["subject"] for m in for_grace] == ["For Grace"]
    assert everything[0]["body"]["custom_args"]["idempotency_key"] == "key-1"


def test_the_inbox_page_shows_messages_escaped(sendgrid_sandbox: Any) -> None:
    mail_send(sendgrid_sandbox.url, good_body(subject="<script>alert(1)</script> Your order"))

    page = requests.get(f"{sendgrid_sandbox.url}/", timeout=10)

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "SendGrid sandbox inbox" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Your order" in page.text
    assert "<script>" not in page.text
    assert "ada@example.com" in page.text
    assert 'sandbox=""' in page.text  # the HTML part is shown in a sandboxed frame


def test_other_methods_and_paths_answer_like_the_api(sendgrid_sandbox: Any) -> None:
    wrong_method = requests.get(f"{sendgrid_sandbox.url}/v3/mail/send", timeout=10)
    unknown = requests.post(f"{sendgrid_sandbox.url}/v3/nothing-here", json={}, timeout=10)

    assert assert_sendgrid_errors(wrong_method, 405)[0]["message"] == "method not allowed"
    assert assert_sendgrid_errors(unknown, 404)[0]["message"] == "resource not found"


# --- faults, stats and reset ----------------------------------------------------------------


def test_fail_next_answers_the_status_then_recovers_and_keeps_nothing_faulted(sendgrid_sandbox: Any) -> None:
    armed = set_faults(sendgrid_sandbox, fail_next=2, status=503)
    assert armed == {"fail_next": 2, "status": 503, "latency_ms": 0, "burst_429": 0}

    first, second, third = (mail_send(sendgrid_sandbox.url, good_body()) for _ in range(3))

    assert assert_sendgrid_errors(first, 503)[0]["message"] == "Service Unavailable"
    assert second.status_code == 503
    assert third.status_code == 202
    assert len(sendgrid_sandbox.messages()) == 1
    counted = stats(sendgrid_sandbox)
    assert counted["calls"] == 3
    assert counted["faulted"] == 2
    assert counted["accepted"] == 1
    assert counted["by_status"] == {"202": 1, "503": 2}
    assert counted["faults"]["fail_next"] == 0


def test_faults_come_before_authentication(sendgrid_sandbox: Any) -> None:
    set_faults(sendgrid_sandbox, fail_next=1, status=500)

    assert mail_send(sendgrid_sandbox.url, good_body(), key="SG.wrong").status_code == 500


def test_a_429_burst_carries_rate_limit_headers(sendgrid_sandbox: Any) -> None:
    set_faults(sendgrid_sandbox, burst_429=2, fail_next=1, status=502)

    statuses = []
    for _ in range(4):
        sent_at = int(time.time())
        response = mail_send(sendgrid_sandbox.url, good_body())
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert assert_sendgrid_errors(response, 429)[0]["message"] == "too many requests"
            assert response.headers["X-RateLimit-Remaining"] == "0"
            assert int(response.headers["X-RateLimit-Reset"]) > sent_at  # a moment after it was asked
            assert int(response.headers["X-RateLimit-Limit"]) > 0

    assert statuses == [429, 429, 502, 202]
    assert stats(sendgrid_sandbox)["faulted"] == 3


def test_latency_delays_every_call_until_turned_off(sendgrid_sandbox: Any) -> None:
    set_faults(sendgrid_sandbox, latency_ms=2000)

    # The sandbox holds each answer back for longer than this client waits, at any speed.
    with pytest.raises(requests.exceptions.ReadTimeout):
        mail_send(sendgrid_sandbox.url, good_body(), timeout=0.2)
    # The client gave up, the sandbox did not: like SendGrid, it accepts the message anyway.
    eventually(lambda: len(sendgrid_sandbox.messages()) == 1, what="the abandoned call to finish")
    assert mail_send(sendgrid_sandbox.url, good_body()).status_code == 202  # a patient client waits

    set_faults(sendgrid_sandbox, latency_ms=0)
    assert requests.get(f"{sendgrid_sandbox.url}/_sandbox/faults", timeout=10).json()["latency_ms"] == 0
    assert mail_send(sendgrid_sandbox.url, good_body()).status_code == 202
    assert len(sendgrid_sandbox.messages()) == 3


def test_bad_fault_settings_are_refused(sendgrid_sandbox: Any) -> None:
    for faults in ({"fail_next": -1}, {"status": 200}, {"explode": 1}, {"latency_ms": "slow"}):
        response = requests.post(f"{sendgrid_sandbox.url}/_sandbox/faults", json=faults, timeout=10)
        assert response.status_code == 400, faults

    assert requests.get(f"{sendgrid_sandbox.url}/_sandbox/faults", timeout=10).json()["fail_next"] == 0


def test_stats_count_every_call_by_outcome(sendgrid_sandbox: Any) -> None:
    mail_send(sendgrid_sandbox.url, good_body())
    mail_send(sendgrid_sandbox.url, good_body(), key="SG.wrong")
    mail_send(sendgrid_sandbox.url, good_body(subject=None))

    counted = stats(sendgrid_sandbox)

    assert counted["calls"] == 3
    assert (counted["accepted"], counted["unauthorized"], counted["rejected"]) == (1, 1, 1)
    assert counted["by_status"] == {"202": 1, "400": 1, "401": 1}
    assert counted["messages"] == 1


def test_reset_forgets_messages_stats_and_faults(sendgrid_sandbox: Any) -> None:
    mail_send(sendgrid_sandbox.url, good_body())
    set_faults(sendgrid_sandbox, fail_next=5, latency_ms=10, burst_429=1, status=500)

    response = requests.post(f"{sendgrid_sandbox.url}/_sandbox/reset", timeout=10)

    assert response.status_code == 200
    assert sendgrid_sandbox.messages() == []
    counted = stats(sendgrid_sandbox)
    assert counted["calls"] == 0
    assert counted["faults"] == {"fail_next": 0, "status": 503, "latency_ms": 0, "burst_429": 0}
    assert mail_send(sendgrid_sandbox.url, good_body()).status_code == 202


# --- as a process -----------------------------------------------------------------------------


@pytest.mark.slow
def test_manage_py_sandbox_sendgrid_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox_sendgrid", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, line
        url = found.group(0)
        eventually(lambda: requests.get(f"{url}/_sandbox/stats", timeout=2).ok, what="the sandbox to answer")

        assert mail_send(url, good_body(), key="SG.not-the-key").status_code == 401
        assert stats_at(url)["unauthorized"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_SECONDS) == 0
        if process.stdout:
            process.stdout.close()


# --- personalizations: SendGrid's limits and one message each --------------------------------


def personalization(n: int, **changes: Any) -> dict[str, Any]:
    return {"to": [{"email": f"buyer{n}@example.com"}], **changes}


@pytest.mark.parametrize(
    ("personalizations", "field", "phrase"),
    [
        ([personalization(n) for n in range(1001)], "personalizations", "limited to 1000 personalizations"),
        (
            [{"to": [{"email": f"p{p}-{n}@example.com"} for n in range(501)]} for p in range(2)],
            "personalizations",
            "1000 total recipients",
        ),
        (
            [personalization(1), personalization(2), personalization(1)],
            "personalizations.2.to",
            "more than once",
        ),
        (
            [
                personalization(1),
                {"to": [{"email": "a@example.com"}], "bcc": [{"email": "BUYER1@example.com"}]},
            ],
            "personalizations.1.bcc",
            "more than once",
        ),
        (
            [personalization(1, substitutions={"-body-": "x" * 9_995})],
            "personalizations.0.substitutions",
            "10,000 bytes",
        ),
        (
            [personalization(1, substitutions={"-body-": "é" * 5_000})],  # 10,000 bytes of UTF-8, + the key
            "personalizations.0.substitutions",
            "10,000 bytes",
        ),
        ([personalization(1, substitutions={"-n-": 7})], "personalizations.0.substitutions.-n-", "string"),
        (
            [personalization(1, custom_args={"big": "y" * 10_000})],
            "personalizations.0.custom_args",
            "10,000 bytes",
        ),
        ([personalization(1, subject="")], "personalizations.0.subject", "at least one character"),
        ([personalization(1, send_at="tomorrow")], "personalizations.0.send_at", "integer"),
    ],
    ids=[
        "1001 personalizations",
        "1002 recipients",
        "an address twice",
        "an address again in bcc",
        "substitutions over 10,000 bytes",
        "substitutions over 10,000 bytes of UTF-8",
        "a substitution that is not a string",
        "custom_args over 10,000 bytes",
        "an empty subject",
        "send_at not an integer",
    ],
)
def test_what_sendgrid_refuses_in_personalizations_gets_400(
    sendgrid_sandbox: Any, personalizations: list[dict[str, Any]], field: str, phrase: str
) -> None:
    errors = assert_sendgrid_errors(
        mail_send(sendgrid_sandbox.url, good_body(personalizations=personalizations)), 400
    )

    assert any(error["field"] == field and phrase in error["message"] for error in errors), errors
    assert sendgrid_sandbox.messages() == []


def test_a_personalization_at_the_limits_is_accepted(sendgrid_sandbox: Any) -> None:
    substitutions = {"-body-": "x" * (10_000 - len("-body-"))}
    body = good_body(personalizations=[personalization(n, substitutions=substitutions) for n in range(3)])

    assert mail_send(sendgrid_sandbox.url, body).status_code == 202


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"attachments": [{"content": "aGVsbG8="}]}, "attachments.0.filename"),
        ({"asm": {"groups_to_display": [1]}}, "asm.group_id"),
        ({"ip_pool_name": "x"}, "ip_pool_name"),
        ({"send_at": "soon"}, "send_at"),
        (
            {"tracking_settings": {"click_tracking": {"enable": "yes"}}},
            "tracking_settings.click_tracking.enable",
        ),
        ({"reply_to_list": [{"name": "no address"}]}, "reply_to_list.0.email"),
        (
            {"reply_to": {"email": "a@example.com"}, "reply_to_list": [{"email": "b@example.com"}]},
            "reply_to_list",
        ),
        (
            {
                "template_id": "d-0123456789abcdef",
                "personalizations": [personalization(1, substitutions={"-name-": "Ada"})],
            },
            "personalizations.0.substitutions",
        ),
    ],
)
def test_what_the_schema_and_the_documented_rules_say_is_refused_too(
    sendgrid_sandbox: Any, changes: dict[str, Any], field: str
) -> None:
    errors = assert_sendgrid_errors(mail_send(sendgrid_sandbox.url, good_body(**changes)), 400)

    assert field in [error["field"] for error in errors], errors


def test_each_personalization_is_its_own_message_with_its_substitutions(sendgrid_sandbox: Any) -> None:
    body = good_body(
        personalizations=[
            personalization(
                n,
                subject=f"Order -ref- for buyer {n}",
                substitutions={
                    "-ref-": f"REF{n}",
                    "-name-": f"Buyer {n}",
                    "-note-": "-name- stays as written",
                },
                custom_args={"order_id": f"order-{n}"},
                headers={"X-Idempotency-Key": f"key-{n}"},
            )
            for n in range(3)
        ],
        content=[
            {"type": "text/plain", "value": "Hi -name-, order -ref-. -note-"},
            {"type": "text/html", "value": "<p>Hi -name-, order -ref-.</p>"},
        ],
    )

    response = mail_send(sendgrid_sandbox.url, body)

    assert response.status_code == 202
    message_id = response.headers["X-Message-Id"]
    messages = sendgrid_sandbox.messages()
    assert [m["id"] for m in messages] == [f"{message_id}.{n}" for n in range(3)]
    for n, message in enumerate(messages):
        assert message["to"] == [f"buyer{n}@example.com"]
        assert message["subject"] == f"Order REF{n} for buyer {n}"
        assert message["text"] == f"Hi Buyer {n}, order REF{n}. -name- stays as written"
        assert message["html"] == f"<p>Hi Buyer {n}, order REF{n}.</p>"
        # the request-level custom_args, overridden per personalization
        assert message["custom_args"] == {"order_id": f"order-{n}", "idempotency_key": "key-1"}
        assert message["mail_headers"] == {"X-Idempotency-Key": f"key-{n}"}
        assert message["request"] == {"x_message_id": message_id, "personalizations": 3, "index": n}
        others = [f"buyer{m}@" for m in range(3) if m != n] + [f"REF{m}" for m in range(3) if m != n]
        assert [other for other in others if other in json.dumps(message)] == []
    assert stats(sendgrid_sandbox)["messages"] == 3
