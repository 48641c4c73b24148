"""A guest pays in a real browser: headless Chromium through Playwright, against the live server,
the localstripe stand-in of Stripe.js and its signed webhooks.

Needs Debian's `chromium` at /usr/bin/chromium (`make test` installs it when it can).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from orders.domain import OrderQuery, OrderStatus
from orders.repositories import OrderRepository
from payments.models import Payment, PaymentStatus, WebhookEvent
from tests.conftest import ADDRESS_JSON
from tests.polling import eventually

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Typed as the pay page prints them, with spaces, the way a customer copies them.
DECLINED_CARD = "4000 0000 0000 0341"
GOOD_CARD = "4242 4242 4242 4242"


def fill_card(page: Page, number: str) -> None:
    """The stand-in card element, field by field as on Stripe's: Card number, MM / YY, CVC, ZIP."""
    card = page.locator("#card-element")
    for label, placeholder, value in (
        ("Card number", "Card number", number),
        ("Expiration date (MM / YY)", "MM / YY", "12 / 34"),
        ("CVC", "CVC", "123"),
        ("ZIP/postal code", "ZIP/postal code", "75001"),
    ):
        field = card.get_by_label(label, exact=True)
        expect(field).to_have_attribute("placeholder", placeholder)
        field.fill(value)


def test_a_guest_pays_after_a_declined_card(
    page: Page,
    stripe_api: str,
    stripe_webhooks: str,
    settings: Any,
    mug: Any,
    repository: OrderRepository,
) -> None:
    settings.STRIPE_JS_URL = f"{stripe_api}/js.stripe.com/v3/"
    base = stripe_webhooks  # the live server's URL

    # Shop and check out as a guest.
    page.goto(f"{base}/products/{mug.sku}/")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_text(f"Added {mug.name} to your cart.")).to_be_visible()
    page.goto(f"{base}/checkout/")
    for field in ("name", "line1", "city", "postal_code"):
        page.fill(f"#id_{field}", ADDRESS_JSON[field])
    page.select_option("#id_country", label="United Kingdom")  # ADDRESS_JSON's GB, by name
    page.fill("#id_email", "guest@example.com")
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_text("Thank you! Your order is placed.")).to_be_visible()

    # To the payment page.
    page.get_by_role("link", name="Pay now").click()
    expect(page.locator("h1")).to_contain_text("Pay order")
    expect(page.locator("#pay-form[data-ready=true]")).to_have_count(1)
    pay_button = page.locator("#pay-button")

    # A declined card: the message, and the form stays for another try.
    fill_card(page, DECLINED_CARD)
    pay_button.click()
    expect(page.locator("#pay-error")).to_have_text("Your card was declined.")
    expect(pay_button).to_be_enabled()
    expect(page.locator("#pay-attempts")).to_contain_text("Attempt 1: Failed")

    # A good card on the same order: the order page, paid.
    fill_card(page, GOOD_CARD)
    pay_button.click()
    page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}/$"))
    expect(page.locator("#status-title .status")).to_have_text("Paid")
    expect(page.get_by_text("Payment received. Thank you!")).to_be_visible()
    # Which card paid, and what happens next.
    expect(page.locator(".paid-with .card-used")).to_have_text("Visa ending in 4242")
    expect(page.get_by_role("heading", name="What happens next")).to_be_visible()

    orders = repository.list(OrderQuery(limit=10)).orders
    assert len(orders) == 1
    order = orders[0]
    assert repository.get(order.id).status == OrderStatus.PAID
    assert page.url.endswith(f"/orders/{order.id}/")
    payments = list(Payment.objects.filter(order_id=order.id).order_by("attempt"))
    assert [(p.attempt, p.status) for p in payments] == [
        (1, PaymentStatus.FAILED),
        (2, PaymentStatus.SUCCEEDED),
    ]
    assert payments[0].failure_message == "Your card was declined."
    assert all(p.payment_method.startswith("pm_") for p in payments)
    # Stripe's signed webhooks reach the live server too, and change nothing more.
    eventually(
        lambda: WebhookEvent.objects.filter(
            type="payment_intent.succeeded", processed_at__isnull=False
        ).exists(),
        what="the succeeded webhook",
    )
    assert Payment.objects.count() == 2
