"""Many emails per SendGrid Mail Send call: one personalization per delivery, each recipient
seeing only their own order, within SendGrid's limits, against the stand-in and the schema."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from jsonschema import Draft4Validator, FormatChecker

from integrations.adapters.base import DeliveryRequest
from integrations.adapters.sendgrid import (
    HTML_TAG,
    IDEMPOTENCY_HEADER,
    MAX_PERSONALIZATIONS,
    MAX_SUBSTITUTIONS_BYTES,
    TEXT_TAG,
    SendGridAdapter,
    build_email,
    mail_body,
    plan_calls,
)
from orders.domain import order_reference
from sandbox.sendgrid import SendGridSandbox
from sandbox.sendgrid_schema import SOURCE_COMMIT, SOURCE_REPO, published_schema, schema_errors
from tests.integrations.test_sendgrid_adapter import order_snapshot


def order_delivery(
    n: int, *, email: str | None = None, lines: int = 2, event_type: str = "order.paid", **order: Any
) -> DeliveryRequest:
    """The delivery of one email about its own order: order n, buyer n, total n dollars."""
    order_id = uuid.uuid4()
    delivery_id = uuid.uuid4()
    line = {"sku": f"SKU-{n}", "name": f"Thing {n}", "quantity": 1, "unit_price_minor": 100 * n}
    snapshot = order_snapshot(
        id=str(order_id),
        email=email or f"buyer{n}@example.com",
        customer_name=f"Buyer {n}",
        subtotal_minor=100 * n * lines,
        shipping_minor=0,
        total_minor=100 * n * lines,
        lines=[{**line, "sku": f"SKU-{n}-{i}", "line_total_minor": 100 * n} for i in range(lines)],
        **order,
    )
    return DeliveryRequest(
        delivery_id=delivery_id,
        idempotency_key=f"email:{order_id}:{event_type}:v3",
        event_type=event_type,
        order_id=order_id,
        order_version=3,
        payload={
            "order": snapshot,
            "event": {
                "from_status": "pending_payment",
                "to_status": "paid",
                "at": "2025-03-04T10:25:00+00:00",
            },
        },
    )


def by_order(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {message["custom_args"]["order_id"]: message for message in messages}


# --- one call for a batch -------------------------------------------------------------------


def test_a_batch_is_one_call_and_each_recipient_sees_only_their_own_order(
    sendgrid_sandbox: SendGridSandbox,
) -> None:
    batch = [order_delivery(n) for n in range(1, 8)]

    outcomes = SendGridAdapter().deliver(batch)

    assert sendgrid_sandbox.stats()["calls"] == 1
    assert [o.delivery_id for o in outcomes] == [r.delivery_id for r in batch]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    messages = by_order(sendgrid_sandbox.messages())
    assert len(messages) == len(batch)
    all_order_ids = {str(r.order_id) for r in batch}
    for n, (request, outcome) in enumerate(zip(batch, outcomes, strict=True), start=1):
        message = messages[str(request.order_id)]
        ref = order_reference(str(request.order_id))
        assert message["to"] == [f"buyer{n}@example.com"]
        assert message["subject"] == f"Order {ref} confirmed: ${2 * n}.00 paid"
        assert outcome.external_id == message["id"]
        assert message["id"] == f"{message['request']['x_message_id']}.{n - 1}"
        assert message["custom_args"] == {
            "order_id": str(request.order_id),
            "event_type": "order.paid",
            "idempotency_key": request.idempotency_key,
            "delivery_id": str(request.delivery_id),
        }
        assert message["mail_headers"] == {IDEMPOTENCY_HEADER: request.idempotency_key}
        for body in (message["text"], message["html"]):
            assert str(request.order_id) in body and f"Buyer {n}" in body and f"SKU-{n}-0" in body
            assert TEXT_TAG not in body and HTML_TAG not in body
        # Nothing of any other order anywhere in what this recipient got.
        whole = json.dumps(message)
        assert [other for other in all_order_ids - {str(request.order_id)} if other in whole] == []
        assert message["text"].startswith("Hi Buyer") and message["html"].lstrip().startswith(
            "<!doctype html>"
        )


def test_the_batched_email_is_the_same_as_the_email_sent_alone(sendgrid_sandbox: SendGridSandbox) -> None:
    alone, first, second = order_delivery(1), order_delivery(2), order_delivery(3)
    SendGridAdapter().deliver([alone])
    SendGridAdapter().deliver([first, second])

    single, *batched = sendgrid_sandbox.messages()

    assert single["request"]["personalizations"] == 1
    assert single["body"]["content"][0]["value"] == single["text"]  # sent as the content itself
    for message, request in zip(batched, [first, second], strict=True):
        expected = build_email(request)
        assert (message["subject"], message["text"], message["html"]) == (
            expected.personalization["subject"],
            expected.text,
            expected.html,
        )


def test_sandbox_mode_validates_a_batch_without_sending(
    sendgrid_sandbox: SendGridSandbox, settings: Any
) -> None:
    settings.SENDGRID_SANDBOX_MODE = True
    batch = [order_delivery(n) for n in range(1, 4)]

    outcomes = SendGridAdapter().deliver(batch)

    assert [o.external_id for o in outcomes] == [f"sandbox-mode:{r.idempotency_key}" for r in batch]
    assert sendgrid_sandbox.stats()["sandbox_mode"] == 1
    assert sendgrid_sandbox.messages() == []


def test_an_email_that_cannot_be_rendered_fails_alone(sendgrid_sandbox: SendGridSandbox) -> None:
    good, bad, also_good = (
        order_delivery(1),
        order_delivery(2, event_type="order.teleported"),
        order_delivery(3),
    )

    outcomes = {o.delivery_id: o for o in SendGridAdapter().deliver([good, bad, also_good])}

    assert outcomes[good.delivery_id].ok and outcomes[also_good.delivery_id].ok
    error = outcomes[bad.delivery_id].error
    assert error is not None and not error.transient and error.error_class == "RenderError"
    assert sendgrid_sandbox.stats()["calls"] == 1
    assert set(by_order(sendgrid_sandbox.messages())) == {str(good.order_id), str(also_good.order_id)}


# --- failures of a batch --------------------------------------------------------------------


def test_a_bad_address_fails_only_its_own_delivery(sendgrid_sandbox: SendGridSandbox) -> None:
    batch = [order_delivery(1), order_delivery(2, email="buyer-at-example"), order_delivery(3)]

    outcomes = SendGridAdapter().deliver(batch)

    first, bad, third = outcomes
    assert first.ok and third.ok
    assert bad.error is not None and not bad.error.transient and bad.error.provider_status == 400
    assert "personalizations.0.to.0.email" in bad.error.message  # from its own call, alone
    # The refused batch, then each email alone.
    assert sendgrid_sandbox.stats()["by_status"] == {"400": 2, "202": 2}
    assert set(by_order(sendgrid_sandbox.messages())) == {str(batch[0].order_id), str(batch[2].order_id)}


def test_a_429_for_a_batch_backs_off_the_whole_batch(
    sendgrid_sandbox: SendGridSandbox, settings: Any
) -> None:
    settings.SENDGRID_BATCH_SIZE = 2  # two calls: the second is not tried once told to slow down
    sendgrid_sandbox.set_faults(burst_429=1)
    batch = [order_delivery(n) for n in range(1, 5)]

    outcomes = SendGridAdapter().deliver(batch)

    assert {o.delivery_id for o in outcomes} == {r.delivery_id for r in batch}
    for outcome in outcomes:
        assert outcome.error is not None and outcome.error.transient
        assert outcome.error.provider_status == 429
        assert 1 <= outcome.backoff_seconds <= 60
    assert sendgrid_sandbox.stats()["calls"] == 1
    assert sendgrid_sandbox.messages() == []


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_for_a_batch_is_transient_for_the_whole_batch(
    sendgrid_sandbox: SendGridSandbox, settings: Any, status: int
) -> None:
    settings.SENDGRID_BATCH_SIZE = 2
    sendgrid_sandbox.set_faults(fail_next=1, status=status)
    batch = [order_delivery(n) for n in range(1, 5)]

    outcomes = SendGridAdapter().deliver(batch)

    assert len(outcomes) == 4
    assert all(
        o.error is not None and o.error.transient and o.error.provider_status == status for o in outcomes
    )
    assert sendgrid_sandbox.stats()["calls"] == 1  # the rest waits for the next attempt
    assert sendgrid_sandbox.messages() == []


def test_no_answer_for_a_batch_is_transient_for_the_whole_batch(sendgrid_sandbox: SendGridSandbox) -> None:
    sendgrid_sandbox.set_faults(latency_ms=400)
    batch = [order_delivery(n) for n in range(1, 4)]

    outcomes = SendGridAdapter(timeout=0.1).deliver(batch)

    assert all(
        o.error is not None and o.error.transient and o.error.error_class == "Timeout" for o in outcomes
    )


def test_a_wrong_key_fails_the_batch_permanently_in_one_call(
    sendgrid_sandbox: SendGridSandbox, settings: Any
) -> None:
    settings.SENDGRID_API_KEY = "SG.revoked"

    outcomes = SendGridAdapter().deliver([order_delivery(1), order_delivery(2)])

    assert all(
        o.error is not None and not o.error.transient and o.error.provider_status == 401 for o in outcomes
    )
    assert sendgrid_sandbox.stats()["calls"] == 1


# --- SendGrid's limits: a batch is split ----------------------------------------------------


def test_a_batch_over_the_batch_size_is_split(sendgrid_sandbox: SendGridSandbox, settings: Any) -> None:
    settings.SENDGRID_BATCH_SIZE = 2
    batch = [order_delivery(n) for n in range(1, 6)]

    outcomes = SendGridAdapter().deliver(batch)

    assert all(o.ok for o in outcomes)
    assert sendgrid_sandbox.stats()["calls"] == 3
    assert sorted(m["request"]["personalizations"] for m in sendgrid_sandbox.messages()) == [1, 2, 2, 2, 2]


def test_one_address_twice_goes_in_two_calls(sendgrid_sandbox: SendGridSandbox) -> None:
    """SendGrid refuses an address in two personalizations of one request."""
    batch = [order_delivery(1), order_delivery(2, email="Buyer1@Example.com"), order_delivery(3)]

    outcomes = SendGridAdapter().deliver(batch)

    assert all(o.ok for o in outcomes)
    assert sendgrid_sandbox.stats()["by_status"] == {"202": 2}
    assert len(sendgrid_sandbox.messages()) == 3


def test_an_email_over_the_substitutions_limit_goes_alone(sendgrid_sandbox: SendGridSandbox) -> None:
    big = order_delivery(2, lines=60)
    assert build_email(big).substitutions_bytes > MAX_SUBSTITUTIONS_BYTES
    batch = [order_delivery(1), big, order_delivery(3)]

    outcomes = SendGridAdapter().deliver(batch)

    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert sendgrid_sandbox.stats()["by_status"] == {"202": 2}
    messages = by_order(sendgrid_sandbox.messages())
    assert messages[str(big.order_id)]["request"]["personalizations"] == 1
    assert "SKU-2-59" in messages[str(big.order_id)]["html"]
    assert messages[str(batch[0].order_id)]["request"]["personalizations"] == 2


def test_plan_calls_keeps_every_call_within_sendgrids_limits() -> None:
    emails = [
        build_email(order_delivery(n % 1500 + 1, email=f"b{n % 1200}@example.com")) for n in range(2500)
    ]

    calls = plan_calls(emails, per_call=5000)

    assert sorted(id(e) for call in calls for e in call) == sorted(id(e) for e in emails)
    for call in calls:
        assert len(call) <= MAX_PERSONALIZATIONS
        assert len({e.address for e in call}) == len(call)
    assert len(calls) == 3  # 2,500 emails, each address at most 3 times


# --- the request body against SendGrid's published schema -----------------------------------


@pytest.mark.parametrize("size", [1, 3])
@pytest.mark.parametrize("sandbox_mode", [False, True])
def test_the_adapters_request_body_fits_sendgrids_published_schema(size: int, sandbox_mode: bool) -> None:
    emails = [build_email(order_delivery(n)) for n in range(1, size + 1)]
    body = mail_body(emails, from_email="shop@example.com", sandbox_mode=sandbox_mode)

    # The schema exactly as published (no corrections), checked by jsonschema directly.
    validator = Draft4Validator(published_schema(), format_checker=FormatChecker())
    assert [error.message[:200] for error in validator.iter_errors(body)] == []
    assert schema_errors(body, published=True) == []
    assert len(body["personalizations"]) == size
    for personalization in body["personalizations"]:
        substitutions = personalization.get("substitutions", {})
        assert (
            sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())
            <= MAX_SUBSTITUTIONS_BYTES
        )
        assert len(json.dumps(personalization["custom_args"]).encode()) <= 10_000


def test_the_vendored_schema_says_where_it_comes_from() -> None:
    schema = published_schema()

    assert SOURCE_REPO in schema["$comment"] and SOURCE_COMMIT in schema["$comment"]
    assert schema["properties"]["personalizations"]["maxItems"] == MAX_PERSONALIZATIONS
    assert (
        "10,000 bytes"
        in schema["properties"]["personalizations"]["items"]["properties"]["substitutions"]["description"]
    )
