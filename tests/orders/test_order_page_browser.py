"""A customer on their order page in a real browser (headless Chromium through Playwright against
the live server): "Cancel order" asks before it acts, and a partial refund shows its amount, the
net paid and what happens next, without staff's reason.

Needs Debian's `chromium` at /usr/bin/chromium (`make test` installs it when it can).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from orders.domain import Order, OrderStatus
from orders.money import format_money
from orders.repositories import OrderRepository
from tests.orders.refunds import INTERNAL_REASON, STAFF_NOTE, partly_refunded

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def open_order_as(page: Page, base: str, user: Any, order: Order) -> None:
    target = f"/orders/{order.id}/"
    page.goto(f"{base}/accounts/login/?next={target}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw-for-tests")
    page.locator("main").get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{target}")


def test_cancel_order_asks_first_dismissing_keeps_the_order_and_accepting_cancels_it(
    page: Page,
    live_server: Any,
    customer: Any,
    place: Callable[..., Order],
    repository: OrderRepository,
) -> None:
    order = place(customer=customer)
    open_order_as(page, live_server.url, customer, order)
    status = page.locator("#status-title .status")
    expect(status).to_have_text("Pending payment")
    cancel = page.get_by_role("button", name="Cancel order")
    # Set apart from "Pay now": not in the same row.
    expect(page.locator(".cancel-order .pay-now")).to_have_count(0)

    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    cancel.click()
    expected_question = (
        f"Cancel order {str(order.id)[:8].upper()}? Your items are released and this cannot be undone."
    )
    assert asked == [expected_question]
    # Nothing was sent: the page is as it was, and so is the order.
    page.reload()
    expect(status).to_have_text("Pending payment")
    expect(cancel).to_be_visible()
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    cancel.click()
    expect(page.get_by_text("Your order is cancelled.", exact=True)).to_be_visible()
    expect(status).to_have_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel order")).to_have_count(0)
    assert asked == [expected_question, expected_question]
    assert repository.get(order.id).status == OrderStatus.CANCELLED


def test_a_customer_sees_a_partial_refund_the_net_paid_and_the_next_step_but_not_staffs_reason(
    page: Page,
    live_server: Any,
    customer: Any,
    staff: Any,
    place: Callable[..., Order],
    repository: OrderRepository,
) -> None:
    order = partly_refunded(
        order=place(customer=customer, lines={"MUG-1": 2}), staff=staff, repository=repository
    )
    open_order_as(page, live_server.url, customer, order)

    usd = lambda minor: format_money(minor, "USD")  # noqa: E731
    expect(page.locator("#status-title .status")).to_have_text("Partially refunded")
    payment = page.locator(".payment-card")
    expect(payment.locator(".paid-amount")).to_have_text(usd(2900))
    expect(payment.locator(".refund-line")).to_have_count(1)
    expect(payment.locator(".refund-amount")).to_have_text(f"\N{MINUS SIGN}{usd(1250)}")
    expect(payment.locator(".refund-line time")).to_be_visible()
    expect(payment.locator(".net-paid")).to_have_text(usd(1650))
    expect(payment).to_contain_text(f"Paid {usd(2900)}, refunded {usd(1250)}, net {usd(1650)}.")
    expect(payment).to_contain_text("Your bank shows a refund within 5\N{EN DASH}10 business days")
    body = page.locator("body")
    expect(body).not_to_contain_text(INTERNAL_REASON)
    expect(body).not_to_contain_text(STAFF_NOTE)
