"""The admin's long lists stay readable at 1280 px wide, in a real browser (headless Chromium):
the order list and the delivery ledger show each order's short reference on one line, and the
ledger's last-error column is on screen (when above what, "before it was delivered" once
the delivery succeeded), its long text cut with the whole of it in a title.

Needs Debian's `chromium` at /usr/bin/chromium (`make test` installs it when it can).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from integrations import services
from integrations.adapters.base import DeliveryError
from integrations.models import Delivery
from orders import services as order_services
from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from tests.browser import TIMEOUT_MS
from tests.integrations.fakes import FakeAdapter

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 1280
LONG_ERROR = DeliveryError(
    transient=False,
    error_class="HTTPError",
    message="400 The from address does not match a verified Sender Identity. " * 6,
    provider_status=400,
)


@pytest.fixture
def narrow_page(browser: Browser) -> Page:
    context = browser.new_context(viewport={"width": WIDTH, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def fits_the_width(page: Page) -> bool:
    """Neither the page nor the results table scrolls sideways: every column is on screen."""
    return bool(
        page.evaluate(
            """() => {
              const results = document.querySelector(".results");
              return document.documentElement.scrollWidth <= window.innerWidth
                && results.scrollWidth <= results.clientWidth;
            }"""
        )
    )


def right_edge(page: Page, selector: str) -> float:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, selector
    return box["x"] + box["width"]


def test_the_order_list_and_the_ledger_fit_1280_pixels(
    narrow_page: Page,
    live_server: Any,
    staff: Any,
    place: Callable[..., Order],
    repository: OrderRepository,
) -> None:
    page = narrow_page
    staff.is_superuser = True
    staff.save()
    orders = [place(email=f"a-rather-long-customer-address-{n}@example.com") for n in range(3)]
    for order in orders:
        order_services.order_transition(
            repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=Actor.system("t")
        )
    services.outbox_relay(dispatch=False)
    services.deliveries_dispatch(
        integration="email", adapter=FakeAdapter(name="email", script=[LONG_ERROR] * 3)
    )
    assert Delivery.objects.filter(integration="email", state="dead").count() == 3
    # One retried by staff and then delivered: its last error is history, its attempts two series.
    retried = Delivery.objects.get(integration="email", order_id=orders[0].id)
    services.delivery_retry(delivery_id=retried.id, actor=Actor.system("t"))
    services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email"))
    retried.refresh_from_db()
    assert (retried.state, retried.total_attempts) == ("succeeded", 2)

    base = live_server.url
    page.goto(f"{base}/admin/login/?next=/admin/orders/order/")
    page.fill("#id_username", staff.username)
    page.fill("#id_password", "pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/admin/orders/order/")

    # The order list: the short reference, one line, linking to the order; nothing off-screen.
    first = page.get_by_role("link", name=orders[0].reference, exact=True)
    expect(first).to_have_attribute("href", f"/admin/orders/order/{orders[0].id}/change/")
    box = first.bounding_box()
    assert box is not None and box["height"] < 30  # one line, not an id wrapped over four
    assert right_edge(page, "#result_list th:last-child") <= WIDTH
    assert fits_the_width(page)

    # The ledger's dead letters: the last error is on screen, cut short, whole in its title.
    page.goto(f"{base}/admin/integrations/delivery/?state__exact=dead")
    error = page.locator("td.field-last_error_short .truncate").first
    expect(error).to_have_attribute("title", re.compile(rf"^HTTPError: .*{re.escape(LONG_ERROR.message)}$"))
    expect(error).to_have_text(re.compile(r"…$"))
    assert right_edge(page, "td.field-last_error_short") <= WIDTH
    assert right_edge(page, "#result_list thead th:last-child") <= WIDTH
    assert fits_the_width(page)
    expect(page.locator("td.field-last_error_short .error-when").first).to_have_text(
        re.compile(r"^\d\d-\d\d \d\d:\d\d$")
    )

    # The whole ledger, with the delivered one: its last error marked as history, still in the width.
    page.goto(f"{base}/admin/integrations/delivery/?integration__exact=email")
    history = page.locator("td.field-last_error_short .error-history")
    expect(history).to_have_count(1)
    expect(history).to_contain_text("before it was delivered")
    expect(page.locator("td.field-attempts_total .attempts-split")).to_have_text("2")
    assert right_edge(page, "td.field-last_error_short") <= WIDTH
    assert right_edge(page, "#result_list thead th:last-child") <= WIDTH
    assert fits_the_width(page)
    reference = page.locator("td.field-order_link a").first
    box = reference.bounding_box()
    assert box is not None and box["height"] < 30
