"""The admin's order page on a phone, in a real browser (headless Chromium): at 390 px wide the
page does not scroll sideways. Its wide tables (lines, payments, deliveries, the event timeline)
scroll inside their own boxes and long ids and texts wrap; at 1280 px the tables need no scroll.

Needs Debian's `chromium` at /usr/bin/chromium (`make test` installs it when it can).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from integrations import services as integration_services
from integrations.adapters.base import DeliveryError
from orders import services as order_services
from orders.domain import Actor, Order
from orders.repositories import OrderRepository
from payments import services
from payments.models import PaymentStatus
from tests.browser import TIMEOUT_MS
from tests.integrations.fakes import FakeAdapter
from tests.payments.test_admin_browser import log_in_to_the_admin

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_ERROR = DeliveryError(
    transient=False,
    error_class="HTTPError",
    message="400 The from address does not match a verified Sender Identity. " * 4,
    provider_status=400,
)
# One long word (an id, a URL): it must wrap too, not push the page wider.
LONG_NOTE = "Customer wrote back: " + "x" * 120 + " and https://example.com/" + "a-long-path/" * 12


def page_at(browser: Browser, width: int) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    yield from page_at(browser, 390)


@pytest.fixture
def desktop(browser: Browser) -> Iterator[Page]:
    yield from page_at(browser, 1280)


def page_scrolls_sideways(page: Page) -> bool:
    return bool(
        page.evaluate("() => document.documentElement.scrollWidth > document.documentElement.clientWidth")
    )


def tables_scrolling_sideways(page: Page) -> list[str]:
    """The ids of the order page's table boxes that scroll sideways (wider inside than on screen)."""
    return list(
        page.evaluate(
            """() => Array.from(document.querySelectorAll(".order-store .table-scroll"))
                 .filter((box) => box.scrollWidth > box.clientWidth)
                 .map((box) => box.closest(".module").id)"""
        )
    )


@pytest.fixture
def busy_order(
    stripe_api: str, staff: Any, customer: Any, place: Callable[..., Order], repository: OrderRepository
) -> Order:
    """A paid order with every panel filled: a payment, deliveries with a long last error, a
    long note in the timeline."""
    staff.is_superuser = True
    staff.save()
    order = place(customer=customer, lines={"MUG-1": 2})
    payment = services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("t")
    )
    assert payment.status == PaymentStatus.SUCCEEDED
    order_services.order_add_note(
        repository=repository, order_id=order.id, actor=Actor.system("t"), text=LONG_NOTE
    )
    integration_services.outbox_relay(dispatch=False)
    integration_services.deliveries_dispatch(
        integration="email", adapter=FakeAdapter(name="email", script=[LONG_ERROR] * 3)
    )
    return order


def test_the_order_page_fits_a_phone(phone: Page, live_server: Any, staff: Any, busy_order: Order) -> None:
    page = phone
    log_in_to_the_admin(page, live_server.url, staff, f"/admin/orders/order/{busy_order.id}/change/")
    expect(page.locator("#panel-deliveries")).to_contain_text("HTTPError")
    expect(page.locator("#order-timeline")).to_contain_text("a-long-path/")
    expect(page.locator("#order-summary")).to_contain_text("United Kingdom")
    assert not page_scrolls_sideways(page)
    # Every table is reachable: a table wider than the phone scrolls inside its own box.
    tables = page.locator(".order-store table").count()
    assert tables == 4  # the lines, the payments, the deliveries, the timeline
    assert page.locator(".order-store .table-scroll table").count() == tables
    assert "order-timeline" in tables_scrolling_sideways(page)


def test_the_order_page_tables_need_no_scroll_at_1280_pixels(
    desktop: Page, live_server: Any, staff: Any, busy_order: Order
) -> None:
    page = desktop
    log_in_to_the_admin(page, live_server.url, staff, f"/admin/orders/order/{busy_order.id}/change/")
    expect(page.locator("#panel-deliveries")).to_contain_text("HTTPError")
    assert not page_scrolls_sideways(page)
    assert tables_scrolling_sideways(page) == []
