"""Staff refund part of a paid order in a real browser: headless Chromium through Playwright,
against the live server and the localstripe stand-in. The refund form speaks money ("12.50" of
the order's currency), states the refundable balance, refuses more than that with a form error,
and asks before the money moves (static/js/confirm-buttons.js: the CSP runs no inline script).

Needs Debian's `chromium` at /usr/bin/chromium (`make test` installs it when it can).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from payments import services
from payments.models import PaymentStatus, Refund, RefundStatus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in_to_the_admin(page: Page, base: str, user: Any, next_url: str) -> None:
    page.goto(f"{base}/admin/login/?next={next_url}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{next_url}")


def test_staff_refund_an_amount_in_money_after_confirming(
    page: Page,
    stripe_api: str,
    live_server: Any,
    staff: Any,
    customer: Any,
    place: Callable[..., Order],
    repository: OrderRepository,
) -> None:
    staff.is_superuser = True
    staff.save()
    order = place(customer=customer, lines={"MUG-1": 2})  # two mugs at 14.50 USD
    payment = services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("t")
    )
    assert payment.status == PaymentStatus.SUCCEEDED
    base = live_server.url
    order_page = f"/admin/orders/order/{order.id}/change/"
    questions: list[str] = []

    def answer(accept: bool) -> Callable[[Dialog], None]:
        def handle(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        return handle

    # The order's page: its payment in money, the balance, and the way to the refund form.
    log_in_to_the_admin(page, base, staff, order_page)
    payments = page.locator("#panel-payments")
    expect(payments).to_contain_text("Refundable: $29.00 of $29.00 paid.")
    expect(page.get_by_role("button", name="Mark refunded")).to_have_count(0)
    expect(page.get_by_role("button", name="Mark partially refunded")).to_have_count(0)
    payments.get_by_role("link", name="Refund…").click()

    # The refund form: the balance in money, an amount in money, no minor units.
    expect(page.locator("h1")).to_have_text(f"Refund order {order.reference}")
    expect(page.locator("#refund-balance")).to_have_text("Refundable: $29.00 of $29.00 paid.")
    expect(page.get_by_text("Amount (minor units)")).to_have_count(0)
    amount = page.get_by_label("Amount (USD)")
    refund_button = page.get_by_role("button", name="Refund", exact=True)

    # More than the balance: a form error on the amount, nothing refunded.
    amount.fill("29.01")
    page.once("dialog", answer(True))
    refund_button.click()
    expect(page.locator(".errorlist")).to_have_text("At most $29.00 can be refunded.")
    assert not Refund.objects.exists()

    # The question comes first; saying no sends nothing.
    amount.fill("12.50")
    page.once("dialog", answer(False))
    refund_button.click()
    expect(amount).to_have_value("12.50")
    assert questions[-1] == (
        f"Refund order {order.reference} now? The money goes back to the customer's card; this cannot be undone."
    )
    assert not Refund.objects.exists()

    # Confirmed: back on the order's page, the refund recorded as money.
    page.once("dialog", answer(True))
    refund_button.click()
    page.wait_for_url(f"{base}{order_page}")
    expect(page.locator(".messagelist")).to_contain_text(
        f"Order {order.reference}: refund of $12.50 succeeded."
    )
    expect(page.locator("#order-status")).to_have_text("Partially refunded")
    expect(payments.locator("table.payments-refunds")).to_contain_text("$12.50")
    expect(payments).to_contain_text("Refundable: $16.50 of $29.00 paid.")
    refund = Refund.objects.get()
    assert (refund.amount_minor, refund.status) == (1250, RefundStatus.SUCCEEDED)
    assert repository.get(order.id).status == OrderStatus.PARTIALLY_REFUNDED
    assert len(questions) == 3


def test_staff_confirm_before_cancelling_an_order(
    page: Page, live_server: Any, staff: Any, place: Callable[..., Order], repository: OrderRepository
) -> None:
    staff.is_superuser = True
    staff.save()
    order = place()
    order_page = f"/admin/orders/order/{order.id}/change/"
    log_in_to_the_admin(page, live_server.url, staff, order_page)
    expect(page.get_by_role("button", name="Mark paid")).to_have_count(0)
    cancel = page.get_by_role("button", name="Mark cancelled")

    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    cancel.click()
    expect(cancel).to_be_visible()
    assert questions == [
        f"Cancel order {order.reference}? The stock held is released and no payment can be taken any more."
        " This cannot be undone."
    ]
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    page.once("dialog", lambda dialog: dialog.accept())
    cancel.click()
    expect(page.locator("#order-status")).to_have_text("Cancelled")
    assert repository.get(order.id).status == OrderStatus.CANCELLED


def test_staff_confirm_before_cancelling_the_selected_orders(
    page: Page, live_server: Any, staff: Any, place: Callable[..., Order], repository: OrderRepository
) -> None:
    staff.is_superuser = True
    staff.save()
    order = place()
    log_in_to_the_admin(page, live_server.url, staff, "/admin/orders/order/")
    actions = page.get_by_label("Action:")
    expect(
        actions.locator("option", has_text=re.compile(r": (paid|refunded|partially refunded)$"))
    ).to_have_count(0)
    page.get_by_label(f"Select order {order.reference}").check()
    actions.select_option(label="Mark selected orders: cancelled")

    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_label(f"Select order {order.reference}")).to_be_checked()
    assert questions == [
        "Cancel the selected orders? The stock held is released and no payment can be taken any more."
        " This cannot be undone."
    ]
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_contain_text("1 order marked cancelled.")
    assert repository.get(order.id).status == OrderStatus.CANCELLED
