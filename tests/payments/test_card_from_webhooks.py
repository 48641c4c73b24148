"""The card that paid is recorded when a payment settles only through Stripe's webhooks (the
customer closed the page after 3-D Secure): from `payment_intent.succeeded`, whose intent names
its latest charge by id only (so the card is read from Stripe), and from `charge.succeeded`,
whose charge carries payment_method_details.card.

The shapes are Stripe's published examples for the pinned API version (stripe_objects) and what
the localstripe stand-in sends; webhooks are signed and posted to the real endpoint.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from orders.domain import Order, OrderStatus
from orders.repositories import OrderRepository
from payments import services
from payments.gateways.base import IntentRequest, PaymentGateway
from payments.gateways.stripe import StripeGateway, _charge_result
from payments.models import Payment, PaymentStatus, WebhookEvent, WebhookResult
from tests.payments import stripe_objects
from tests.payments.test_pay_page import (
    authenticate_in_browser,
    closed_port,
    post_json,
    three_d_secure_method,
)
from tests.polling import eventually

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.e2e,
    pytest.mark.usefixtures("repository", "stripe_js"),
]


def order_page(client: Client, order: Order) -> str:
    return client.get(reverse("orders:order_detail", args=[order.id])).content.decode()


def awaiting_3ds(order: Order, *, intent_id: str) -> Payment:
    """Our payment as the confirm call left it: 3-D Secure asked, no card known yet."""
    return Payment.objects.create(
        order_id=order.id,
        attempt=1,
        intent_id=intent_id,
        amount_minor=order.total_minor,
        currency=order.currency,
        status=PaymentStatus.REQUIRES_ACTION,
    )


def card_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == "payment.card_unknown"]


# --- the shapes -------------------------------------------------------------------------------
def test_a_succeeded_event_names_the_charge_by_id_and_a_charge_carries_the_card() -> None:
    intent = stripe_objects.payment_intent(order_id="o", charge_id="ch_1")
    event = stripe_objects.event("payment_intent.succeeded", intent)
    parsed = StripeGateway().parse_event(event)
    assert parsed.intent is not None
    assert (parsed.intent.charge_id, parsed.intent.card_last4) == ("ch_1", "")  # only an id

    charge = _charge_result(stripe_objects.charge(intent))  # Stripe's example: visa 4242
    assert (charge.intent_id, charge.card_brand, charge.card_last4) == (intent["id"], "visa", "4242")


def test_charge_succeeded_is_among_the_events_the_endpoint_asks_for() -> None:
    assert "charge.succeeded" in services.HANDLED_EVENTS
    assert "payment_intent.succeeded" in services.HANDLED_EVENTS


# --- through the stand-in's own webhooks ------------------------------------------------------
def test_a_payment_settled_only_by_webhook_ends_with_its_card(
    stripe_api: str, stripe_webhooks: str, owner: Client, order: Order, repository: OrderRepository
) -> None:
    """3-D Secure answered, then the page closed: no sync, only the stand-in's signed event."""
    response = post_json(
        owner,
        reverse("payments:pay_confirm", args=[order.id]),
        {"payment_method": three_d_secure_method(stripe_api)},
    )
    assert response.json()["status"] == "requires_action", response.content
    authenticate_in_browser(stripe_api, response.json()["client_secret"], success=True)

    payment = eventually(
        lambda: Payment.objects.filter(order_id=order.id, status=PaymentStatus.SUCCEEDED).first(),
        what="the succeeded webhook to settle the payment",
    )
    assert (payment.card_brand, payment.card_last4) == ("visa", "3155")
    assert repository.get(order.id).status == OrderStatus.PAID
    event = WebhookEvent.objects.get(type="payment_intent.succeeded")
    assert event.result == WebhookResult.PROCESSED
    # What the stand-in sent: the pinned API version's shape, the charge as an id.
    assert event.payload["data"]["object"]["latest_charge"].startswith("ch_")
    assert "ending in 3155" in order_page(owner, order)

    # Stripe delivers it again: stored once, nothing changes (and nothing is asked of Stripe).
    before = Payment.objects.get(id=payment.id)
    again = stripe_objects.deliver(Client(), event.payload)
    assert again.status_code == 200 and again.json()["result"] == WebhookResult.PROCESSED
    after = Payment.objects.get(id=payment.id)
    assert (after.updated_at, after.card_last4, after.status) == (before.updated_at, "3155", "succeeded")
    assert WebhookEvent.objects.get(id=event.id).deliveries == 2
    assert repository.get(order.id).status == OrderStatus.PAID


# --- a lookup that fails ------------------------------------------------------------------------
@pytest.mark.parametrize("trouble", ["unknown_at_stripe", "stripe_unreachable"])
def test_a_failed_card_lookup_leaves_the_card_blank_logs_it_and_settles_the_payment(
    trouble: str,
    stripe_api: str,
    order: Order,
    repository: OrderRepository,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    intent = stripe_objects.payment_intent(order_id=str(order.id), amount=order.total_minor)
    payment = awaiting_3ds(order, intent_id=intent["id"])  # an intent the stand-in never made
    if trouble == "stripe_unreachable":
        settings.STRIPE_API_BASE = f"http://127.0.0.1:{closed_port()}"
    caplog.set_level(logging.WARNING, logger="payments")

    response = stripe_objects.deliver(Client(), stripe_objects.event("payment_intent.succeeded", intent))

    assert response.status_code == 200, response.content
    assert response.json()["result"] == WebhookResult.PROCESSED
    payment.refresh_from_db()
    assert (payment.status, payment.card_brand, payment.card_last4) == (PaymentStatus.SUCCEEDED, "", "")
    assert repository.get(order.id).status == OrderStatus.PAID
    (warning,) = card_warnings(caplog)
    assert intent["id"] in warning.getMessage() and warning.order_id == order.id


def test_a_replay_after_a_failed_lookup_records_the_card(
    stripe_api: str, gateway: PaymentGateway, order: Order, settings: Any
) -> None:
    """The lookup failed while Stripe was unreachable; a replay of the event fills the card in."""
    made = gateway.create_intent(
        IntentRequest(
            order_id=str(order.id),
            attempt=1,
            amount_minor=order.total_minor,
            currency=order.currency,
            payment_method="pm_card_visa",
            idempotency_key="replay",
        )
    )
    payment = awaiting_3ds(order, intent_id=made.intent_id)
    intent = stripe_objects.payment_intent(
        order_id=str(order.id), amount=order.total_minor, intent_id=made.intent_id, charge_id=made.charge_id
    )
    up = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{closed_port()}"
    assert (
        stripe_objects.deliver(Client(), stripe_objects.event("payment_intent.succeeded", intent)).status_code
        == 200
    )
    assert Payment.objects.get(id=payment.id).card_last4 == ""

    settings.STRIPE_API_BASE = up
    stored = WebhookEvent.objects.get(type="payment_intent.succeeded")
    services.webhook_process(event_pk=stored.pk, again=True)
    payment.refresh_from_db()
    assert (payment.status, payment.card_brand, payment.card_last4) == (
        PaymentStatus.SUCCEEDED,
        "visa",
        "4242",
    )


# --- charge.succeeded -------------------------------------------------------------------------
def test_charge_succeeded_records_the_card_once(
    stripe_api: str, order: Order, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    intent = stripe_objects.payment_intent(order_id=str(order.id), amount=order.total_minor)
    payment = awaiting_3ds(order, intent_id=intent["id"])
    charge = stripe_objects.charge(intent)  # Stripe's example card: visa 4242
    event = stripe_objects.event("charge.succeeded", charge)

    first = stripe_objects.deliver(Client(), event)
    assert first.status_code == 200 and first.json()["result"] == WebhookResult.PROCESSED
    payment.refresh_from_db()
    assert (payment.card_brand, payment.card_last4) == ("visa", "4242")
    assert payment.status == PaymentStatus.REQUIRES_ACTION  # the status is the intent events' to set

    # The same event again, then another charge's report: the first card recorded stands.
    assert stripe_objects.deliver(Client(), event).status_code == 200
    other = stripe_objects.charge(intent, charge_id="ch_other")
    other["payment_method_details"]["card"].update(brand="amex", last4="8431")
    assert (
        stripe_objects.deliver(Client(), stripe_objects.event("charge.succeeded", other)).status_code == 200
    )
    payment.refresh_from_db()
    assert (payment.card_brand, payment.card_last4) == ("visa", "4242")

    # The intent's success that follows asks Stripe nothing (here it could not be reached).
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{closed_port()}"
    caplog.set_level(logging.WARNING, logger="payments")
    succeeded = stripe_objects.event("payment_intent.succeeded", intent)
    assert stripe_objects.deliver(Client(), succeeded).json()["result"] == WebhookResult.PROCESSED
    payment.refresh_from_db()
    assert (payment.status, payment.card_last4) == (PaymentStatus.SUCCEEDED, "4242")
    assert card_warnings(caplog) == []


def test_charge_succeeded_for_a_payment_we_do_not_know(stripe_api: str, order: Order) -> None:
    intent = stripe_objects.payment_intent(order_id=str(order.id), amount=order.total_minor)
    response = stripe_objects.deliver(
        Client(), stripe_objects.event("charge.succeeded", stripe_objects.charge(intent))
    )
    assert response.status_code == 200
    assert response.json()["result"] == WebhookResult.UNKNOWN_PAYMENT
    assert not Payment.objects.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"payment_method_details": None},
        {"payment_method_details": {"type": "sepa_debit", "sepa_debit": {"last4": "3000"}}},
        {"status": "failed"},
    ],
)
def test_a_charge_without_a_card_or_not_succeeded_records_nothing(
    stripe_api: str, order: Order, change: dict[str, Any]
) -> None:
    intent = stripe_objects.payment_intent(order_id=str(order.id), amount=order.total_minor)
    payment = awaiting_3ds(order, intent_id=intent["id"])
    charge = stripe_objects.charge(intent) | change
    response = stripe_objects.deliver(Client(), stripe_objects.event("charge.succeeded", charge))
    assert response.status_code == 200, response.content
    payment.refresh_from_db()
    assert (payment.card_brand, payment.card_last4) == ("", "")
