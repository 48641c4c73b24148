"""The customer's order page: refunds and what they leave paid, only the customer's own words in
the history, the cancel button that asks first, and the region the live updates swap."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from orders import services as order_services
from orders.domain import Actor, Order, OrderStatus
from orders.money import format_money
from orders.repositories import OrderRepository
from payments import services as payment_services
from tests.payments.fakes import FakeGateway

pytestmark = pytest.mark.django_db

PAYER = Actor.system("test")
INTERNAL_REASON = "Goodwill: customer threatened a chargeback"
STAFF_NOTE = "Checked with the warehouse: box crushed"


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def paid(place: Callable[..., Order], customer: Any, fake: FakeGateway) -> Order:
    order = place(customer=customer, lines={"MUG-1": 2})
    payment_services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=PAYER, gateway=fake
    )
    return order


def refund(order: Order, staff: Any, fake: FakeGateway, amount_minor: int | None = None) -> None:
    payment_services.payment_refund(
        order_id=order.id,
        amount_minor=amount_minor,
        reason=INTERNAL_REASON,
        actor=Actor(kind="staff", user_id=staff.pk),
        requested_by=staff,
        gateway=fake,
    )


def order_page(client: Client, order: Order) -> str:
    response = client.get(reverse("orders:order_detail", args=[order.id]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_partial_refund_shows_amount_date_net_and_next_step_but_not_the_reason(
    client: Client,
    customer: Any,
    staff: Any,
    paid: Order,
    fake: FakeGateway,
    repository: OrderRepository,
) -> None:
    refund(paid, staff, fake, amount_minor=1250)
    order_services.order_add_note(
        repository=repository, order_id=paid.id, actor=Actor(kind="staff", user_id=staff.pk), text=STAFF_NOTE
    )
    assert repository.get(paid.id).status == OrderStatus.PARTIALLY_REFUNDED
    client.force_login(customer)

    html = order_page(client, paid)

    usd = lambda minor: format_money(minor, "USD")  # noqa: E731
    assert 'id="status-title">Status: <span class="status status-partially_refunded">' in html
    assert f'<span class="paid-amount">{usd(2900)}</span>' in html
    assert re.search(r'class="refund-amount">&minus;' + re.escape(usd(1250)), html)
    assert f'<strong class="net-paid">{usd(1650)}</strong>' in html
    assert f"Paid {usd(2900)}, refunded {usd(1250)}, net {usd(1650)}." in html
    assert 'Your bank shows a refund within <span class="nowrap">5&ndash;10 business days</span>' in html
    # The refund's date, and its line in the history with the amount.
    assert re.search(r'Refunded on <time datetime="\d{4}-\d\d-\d\dT[^"]+">\d{1,2} \w{3} \d{4}</time>', html)
    assert "<strong>Refunded</strong>" in html
    # Staff's words stay internal.
    assert INTERNAL_REASON not in html
    assert STAFF_NOTE not in html
    assert "Goodwill" not in html


def test_a_full_refund_leaves_nothing_paid(
    client: Client, customer: Any, staff: Any, paid: Order, fake: FakeGateway, repository: OrderRepository
) -> None:
    refund(paid, staff, fake)
    assert repository.get(paid.id).status == OrderStatus.REFUNDED
    client.force_login(customer)

    html = order_page(client, paid)

    usd = lambda minor: format_money(minor, "USD")  # noqa: E731
    assert "Your payment is refunded in full." in html
    assert f"Paid {usd(2900)}, refunded {usd(2900)}, net {usd(0)}." in html
    assert 'Your bank shows a refund within <span class="nowrap">5&ndash;10 business days</span>' in html
    assert INTERNAL_REASON not in html


def test_a_paid_order_says_what_happens_next_and_shows_no_refund_lines(
    client: Client, customer: Any, paid: Order
) -> None:
    client.force_login(customer)

    html = order_page(client, paid)

    # One "what happens next", from the payment part; no promise of a shipping email there is none of.
    assert html.count("What happens next") == 1
    assert "We pack your order and ship it to the address below." in html
    assert "email you when it is on its way" not in html
    assert f'<span class="paid-amount">{format_money(2900, "USD")}</span>' in html
    assert "refund-line" not in html and "net-paid" not in html and "Your bank shows" not in html


def test_an_unpaid_order_shows_no_payment(client: Client, customer: Any, place: Callable[..., Order]) -> None:
    order = place(customer=customer)
    client.force_login(customer)

    html = order_page(client, order)

    assert "payment-card" not in html


def test_the_history_shows_the_customers_own_note_but_not_staffs(
    client: Client, customer: Any, staff: Any, place: Callable[..., Order], repository: OrderRepository
) -> None:
    order = place(customer=customer)
    order_services.order_add_note(
        repository=repository,
        order_id=order.id,
        actor=Actor(kind="customer", user_id=customer.pk),
        text="Please gift wrap it",
    )
    order_services.order_add_note(
        repository=repository, order_id=order.id, actor=Actor(kind="staff", user_id=staff.pk), text=STAFF_NOTE
    )
    order_services.order_cancel(
        repository=repository,
        order_id=order.id,
        actor=Actor(kind="staff", user_id=staff.pk),
        reason="Suspected fraud, see ticket 12",
    )
    client.force_login(customer)

    html = order_page(client, order)

    assert "Please gift wrap it" in html
    assert STAFF_NOTE not in html
    assert "Suspected fraud" not in html
    assert "This order is cancelled. Nothing was charged." in html


def test_cancel_asks_first_and_stands_apart_from_pay_now(
    client: Client, customer: Any, place: Callable[..., Order]
) -> None:
    order = place(customer=customer)
    client.force_login(customer)

    html = order_page(client, order)

    # confirm-buttons.js (a static file: the CSP runs no inline script) asks before the submit.
    assert re.search(r'<script src="/static/js/confirm-buttons(\.[0-9a-f]+)?\.js" defer></script>', html)
    form = re.search(r'<form class="cancel-order".*?</form>', html, re.S)
    assert form, "the cancel form"
    assert f'action="{reverse("orders:order_cancel", args=[order.id])}"' in form.group(0)
    assert re.search(
        r'<button type="submit" class="button danger-outline"\s+data-confirm="Cancel order '
        + str(order.id)[:8].upper()
        + r'\? Your items are released and this cannot be undone.">Cancel order</button>',
        form.group(0),
    )
    assert "Pay now" not in form.group(0)
    # Asking is the browser's part; a GET still does nothing (POST only).
    assert client.get(reverse("orders:order_cancel", args=[order.id])).status_code == 405


def test_the_live_region_holds_status_payment_actions_and_history(
    client: Client, customer: Any, paid: Order
) -> None:
    client.force_login(customer)

    html = order_page(client, paid)

    assert html.count("data-live-region") == 1
    region = html[html.index('<div id="order-live" data-live-region>') :]
    for part in ('id="status-title"', 'id="payment-title"', 'id="history-title"'):
        assert part in region
    assert html.index('id="order-live"') < html.index('id="status-title"')
