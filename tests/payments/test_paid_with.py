"""Issue 14, point 7: the order page after payment says which card paid ("Visa ending in 4242")
and what happens next. The card comes from Stripe's report of the payment (the PaymentIntent's
expanded latest charge, payment_method_details.card), checked against Stripe's published
example objects and against localstripe through the real pay endpoints."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from orders import services
from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from payments.gateways.stripe import _intent_result
from payments.models import Payment, PaymentStatus
from tests.payments.stripe_objects import published
from tests.payments.test_pay_page import authenticate_in_browser, post_json, three_d_secure_method

pytestmark = [pytest.mark.django_db, pytest.mark.e2e, pytest.mark.usefixtures("repository", "stripe_js")]

VISA = "pm_card_visa"


def confirm_url(order: Order, name: str = "pay_confirm") -> str:
    return reverse(f"payments:{name}", args=[order.id])


def order_page(client: Client, order: Order) -> str:
    return client.get(reverse("orders:order_detail", args=[order.id])).content.decode()


# --- the shapes -----------------------------------------------------------------------------
def test_the_card_is_read_from_an_expanded_latest_charge() -> None:
    intent = published("payment_intent")
    intent["latest_charge"] = published("charge")  # Stripe's example: a visa ending in 4242
    result = _intent_result(intent)
    assert (result.card_brand, result.card_last4) == ("visa", "4242")


def test_no_card_from_a_charge_id_or_no_charge() -> None:
    intent = published("payment_intent")
    for charge in (None, "ch_123"):
        intent["latest_charge"] = charge
        result = _intent_result(intent)
        assert (result.card_brand, result.card_last4) == ("", "")


@pytest.mark.parametrize(
    ("brand", "last4", "label"),
    [
        ("visa", "4242", "Visa ending in 4242"),
        ("amex", "8431", "American Express ending in 8431"),
        ("mastercard", "4444", "Mastercard ending in 4444"),
        ("new_brand", "0001", "New Brand ending in 0001"),
        ("visa", "", ""),
    ],
)
def test_card_label(brand: str, last4: str, label: str) -> None:
    assert Payment(card_brand=brand, card_last4=last4).card_label == label


# --- through localstripe ----------------------------------------------------------------------
def test_paying_records_the_card_and_the_order_page_says_so(
    stripe_api: str, owner: Client, order: Order, repository: OrderRepository
) -> None:
    response = post_json(owner, confirm_url(order), {"payment_method": VISA})
    assert response.json()["status"] == "succeeded", response.content

    payment = Payment.objects.get(order_id=order.id)
    assert (payment.status, payment.card_brand, payment.card_last4) == (
        PaymentStatus.SUCCEEDED,
        "visa",
        "4242",
    )
    html = order_page(owner, order)
    assert 'Paid with <strong class="card-used">Visa ending in 4242</strong>' in html
    assert "What happens next" in html
    assert f"A confirmation email is on its way to <strong>{order.email}</strong>." in html
    assert "When it ships, this page says so" in html


def test_the_card_of_a_3d_secure_payment_is_recorded_when_synced(
    stripe_api: str, owner: Client, order: Order, repository: OrderRepository
) -> None:
    response = post_json(owner, confirm_url(order), {"payment_method": three_d_secure_method(stripe_api)})
    assert response.json()["status"] == "requires_action"
    authenticate_in_browser(stripe_api, response.json()["client_secret"], success=True)
    assert post_json(owner, confirm_url(order, "pay_sync")).json()["status"] == "succeeded"

    payment = Payment.objects.get(order_id=order.id)
    assert payment.card_last4 == "3155"
    assert "ending in 3155" in order_page(owner, order)


def test_an_unpaid_order_says_nothing_of_a_card(owner: Client, order: Order) -> None:
    html = order_page(owner, order)
    assert "Paid with" not in html
    assert "What happens next" not in html


def test_a_shipped_order_keeps_the_card_and_says_it_shipped(
    stripe_api: str, owner: Client, order: Order, repository: OrderRepository
) -> None:
    post_json(owner, confirm_url(order), {"payment_method": VISA})
    services.order_transition(
        repository=repository, order_id=order.id, to_status=OrderStatus.FULFILLED, actor=Actor.system("test")
    )
    html = order_page(owner, order)
    assert "Visa ending in 4242" in html
    assert "Your order has shipped" in html
    assert "What happens next" not in html


def test_the_pay_page_says_what_happens_after_paying(owner: Client, order: Order) -> None:
    html = owner.get(confirm_url(order, "pay")).content.decode()
    assert "Once paid, you return to your order page" in html
    assert f"<strong>{order.email}</strong>" in html
