"""The email adapter against the SendGrid stand-in, through the real sendgrid library."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from integrations.adapters.base import DeliveryOutcome, DeliveryRequest, IntegrationAdapter
from integrations.adapters.sendgrid import IDEMPOTENCY_HEADER, SendGridAdapter
from sandbox.sendgrid import SendGridSandbox
from tests.integrations.conftest import SENDGRID_TEST_KEY
from tests.polling import eventually

ORDER_ID = uuid.UUID("1f2e3d4c-5b6a-4789-8abc-def012345678")
REF = "1F2E3D4C"


def order_snapshot(**changes: Any) -> dict[str, Any]:
    """An order as `Order.snapshot()` gives it: two lines, $54.30 with shipping."""
    order = {
        "id": str(ORDER_ID),
        "status": "paid",
        "email": "ada@example.com",
        "customer_name": "Ada Lovelace",
        "currency": "USD",
        "subtotal_minor": 5300,
        "shipping_minor": 130,
        "total_minor": 5430,
        "lines": [
            {
                "sku": "MUG-1",
                "name": "Mug",
                "quantity": 2,
                "unit_price_minor": 1450,
                "line_total_minor": 2900,
            },
            {
                "sku": "TEE-1",
                "name": "Tee",
                "quantity": 1,
                "unit_price_minor": 2400,
                "line_total_minor": 2400,
            },
        ],
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "12 Analytical Row",
            "line2": "Flat 3",
            "city": "London",
            "postal_code": "N1 9GU",
            "country": "GB",
        },
        "created_at": "2025-03-04T10:20:30+00:00",
        "updated_at": "2025-03-04T10:25:00+00:00",
        "version": 3,
    }
    order.update(changes)
    return order


def delivery(
    event_type: str = "order.paid", *, order: dict[str, Any] | None = None, **data: Any
) -> DeliveryRequest:
    delivery_id = uuid.uuid4()
    return DeliveryRequest(
        delivery_id=delivery_id,
        idempotency_key=f"{ORDER_ID}:email:3:{delivery_id.hex[:6]}",
        event_type=event_type,
        order_id=ORDER_ID,
        order_version=3,
        payload={
            "order": order or order_snapshot(),
            "event": {
                "from_status": "pending_payment",
                "to_status": "paid",
                "actor": "system:stripe",
                "at": "2025-03-04T10:25:00+00:00",
                "data": data,
            },
        },
    )


def deliver_one(request: DeliveryRequest, adapter: SendGridAdapter | None = None) -> DeliveryOutcome:
    [outcome] = (adapter or SendGridAdapter()).deliver([request])
    assert outcome.delivery_id == request.delivery_id
    return outcome


def test_the_adapter_fits_the_port() -> None:
    adapter = SendGridAdapter()

    assert isinstance(adapter, IntegrationAdapter)
    assert adapter.name == "email"
    assert adapter.max_batch >= 1


EVENTS = [
    (
        "order.paid",
        {"intent_id": "pi_123"},
        f"Order {REF} confirmed: $54.30 paid",
        "We received your payment",
    ),
    (
        "order.payment_failed",
        {"failure_message": "Your card was declined."},
        f"Order {REF}: your payment did not go through",
        "Your card was declined.",
    ),
    ("order.refunded", {"refunded_minor": 5430}, f"Order {REF} refunded: $54.30", "We refunded order"),
    (
        "order.partially_refunded",
        {"refunded_minor": 1450},
        f"Order {REF} partly refunded: $14.50",
        "We refunded part of order",
    ),
    ("order.cancelled", {}, f"Order {REF} has been cancelled", "has been cancelled"),
]


@pytest.mark.parametrize(("event_type", "data", "subject", "phrase"), EVENTS, ids=[e[0] for e in EVENTS])
def test_each_event_type_is_rendered_and_sent(
    sendgrid_sandbox: SendGridSandbox, event_type: str, data: dict[str, Any], subject: str, phrase: str
) -> None:
    request = delivery(event_type, **data)

    outcome = deliver_one(request)

    assert outcome.ok, outcome.error
    [message] = sendgrid_sandbox.messages()
    assert outcome.external_id == message["id"]
    assert message["subject"] == subject
    assert message["to"] == ["ada@example.com"]
    assert message["body"]["personalizations"][0]["to"][0]["name"] == "Ada Lovelace"
    assert message["from"]["email"] == "shop@example.com"
    for body in (message["text"], message["html"]):
        assert str(ORDER_ID) in body
        assert REF in body
        assert phrase in body
        assert "$54.30" in body  # total
        for expected in ("Mug", "MUG-1", "$14.50", "$29.00", "Tee", "$24.00", "$53.00", "$1.30"):
            assert expected in body
        assert "12 Analytical Row" in body
        assert "N1 9GU London" in body
    assert [block["type"] for block in message["body"]["content"]] == ["text/plain", "text/html"]
    assert message["html"].lstrip().startswith("<!doctype html>")
    assert "<" not in message["text"]


def test_custom_args_and_a_header_carry_the_delivery_identity(sendgrid_sandbox: SendGridSandbox) -> None:
    request = delivery("order.paid")

    deliver_one(request)

    [message] = sendgrid_sandbox.messages()
    assert message["custom_args"] == {
        "order_id": str(ORDER_ID),
        "event_type": "order.paid",
        "idempotency_key": request.idempotency_key,
        "delivery_id": str(request.delivery_id),
    }
    assert message["mail_headers"] == {IDEMPOTENCY_HEADER: request.idempotency_key}


def test_customer_text_is_escaped_in_html_and_kept_in_plain_text(sendgrid_sandbox: SendGridSandbox) -> None:
    order = order_snapshot(customer_name="Ada <b>Lovelace</b> & Co")

    deliver_one(delivery("order.paid", order=order))

    [message] = sendgrid_sandbox.messages()
    assert "Ada &lt;b&gt;Lovelace&lt;/b&gt; &amp; Co" in message["html"]
    assert "Hi Ada <b>Lovelace</b> & Co," in message["text"]


def test_a_batch_sends_one_message_per_delivery(sendgrid_sandbox: SendGridSandbox) -> None:
    batch = [delivery("order.paid"), delivery("order.cancelled")]

    outcomes = SendGridAdapter().deliver(batch)

    assert [o.delivery_id for o in outcomes] == [r.delivery_id for r in batch]
    assert all(o.ok for o in outcomes)
    assert [o.external_id for o in outcomes] == [m["id"] for m in sendgrid_sandbox.messages()]


def test_sandbox_mode_validates_without_sending(sendgrid_sandbox: SendGridSandbox, settings: Any) -> None:
    settings.SENDGRID_SANDBOX_MODE = True
    request = delivery("order.paid")

    outcome = deliver_one(request)

    assert outcome.ok
    assert outcome.external_id == f"sandbox-mode:{request.idempotency_key}"
    assert sendgrid_sandbox.messages() == []
    assert sendgrid_sandbox.stats()["sandbox_mode"] == 1


# --- failures -------------------------------------------------------------------------------


def test_a_503_is_a_transient_failure(sendgrid_sandbox: SendGridSandbox) -> None:
    sendgrid_sandbox.set_faults(fail_next=1, status=503)

    outcome = deliver_one(delivery())

    assert outcome.error is not None
    assert outcome.error.transient
    assert outcome.error.provider_status == 503
    assert outcome.error.error_class == "ServiceUnavailableError"
    assert "Service Unavailable" in outcome.error.message
    assert sendgrid_sandbox.messages() == []
    assert deliver_one(delivery()).ok  # the fault was for one call only


def test_a_429_is_transient_and_asks_the_adapter_to_back_off(sendgrid_sandbox: SendGridSandbox) -> None:
    sendgrid_sandbox.set_faults(burst_429=1)
    first, second = delivery(), delivery()

    outcomes = SendGridAdapter().deliver([first, second])

    assert all(o.error is not None and o.error.transient for o in outcomes)
    assert all(o.error is not None and o.error.provider_status == 429 for o in outcomes)
    assert all(1 <= o.backoff_seconds <= 60 for o in outcomes)
    # The rest of the batch is not tried once SendGrid says slow down.
    assert sendgrid_sandbox.stats()["calls"] == 1


def test_a_400_is_permanent_and_says_why(sendgrid_sandbox: SendGridSandbox, settings: Any) -> None:
    settings.SENDGRID_FROM_EMAIL = "shop-at-example"

    outcome = deliver_one(delivery())

    assert outcome.error is not None
    assert not outcome.error.transient
    assert outcome.error.provider_status == 400
    assert outcome.error.error_class == "BadRequestsError"
    assert "from.email" in outcome.error.message
    assert sendgrid_sandbox.messages() == []


def test_a_bad_recipient_address_is_permanent(sendgrid_sandbox: SendGridSandbox) -> None:
    outcome = deliver_one(delivery(order=order_snapshot(email="ada-at-example")))

    assert outcome.error is not None
    assert not outcome.error.transient
    assert "personalizations.0.to.0.email" in outcome.error.message


def test_a_wrong_api_key_is_permanent(sendgrid_sandbox: SendGridSandbox, settings: Any) -> None:
    settings.SENDGRID_API_KEY = "SG.revoked"

    outcome = deliver_one(delivery())

    assert outcome.error is not None
    assert not outcome.error.transient
    assert outcome.error.provider_status == 401


def test_connection_refused_is_transient(sendgrid_sandbox: SendGridSandbox, settings: Any) -> None:
    stopped = SendGridSandbox(api_key=SENDGRID_TEST_KEY)
    settings.SENDGRID_API_BASE = stopped.start()
    stopped.stop()

    outcome = deliver_one(delivery())

    assert outcome.error is not None
    assert outcome.error.transient
    assert outcome.error.error_class == "ConnectionError"
    assert outcome.error.provider_status is None


def test_no_answer_in_time_is_transient(sendgrid_sandbox: SendGridSandbox) -> None:
    sendgrid_sandbox.set_faults(latency_ms=400)

    outcome = deliver_one(delivery(), SendGridAdapter(timeout=0.1))

    assert outcome.error is not None
    assert outcome.error.transient
    assert outcome.error.error_class == "Timeout"
    # The answer was lost, not the message: SendGrid (and the sandbox) send it anyway, which is
    # why every message carries its idempotency key.
    eventually(lambda: len(sendgrid_sandbox.messages()) == 1, what="the late message")


def test_an_unknown_event_type_is_permanent_and_sends_nothing(sendgrid_sandbox: SendGridSandbox) -> None:
    outcome = deliver_one(delivery("order.teleported"))

    assert outcome.error is not None
    assert not outcome.error.transient
    assert outcome.error.error_class == "RenderError"
    assert sendgrid_sandbox.stats()["calls"] == 0


def test_a_malformed_order_payload_is_permanent(sendgrid_sandbox: SendGridSandbox) -> None:
    order = order_snapshot()
    del order["total_minor"]

    outcome = deliver_one(delivery(order=order))

    assert outcome.error is not None
    assert not outcome.error.transient
    assert outcome.error.error_class == "RenderError"
    assert sendgrid_sandbox.stats()["calls"] == 0
