"""Issue 14, point 7 in a real browser (headless Chromium through Playwright, against the live
server): the country is chosen by name from a select, and the state field appears, and is
required, for the United States only when it is chosen."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from orders.domain import OrderQuery
from orders.repositories import OrderRepository

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def to_checkout(page: Page, base: str, sku: str) -> None:
    page.goto(f"{base}/products/{sku}/")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_text("to your cart.")).to_be_visible()
    page.goto(f"{base}/checkout/")
    page.fill("#id_name", "Ada Lovelace")
    page.fill("#id_line1", "12 Analytical Row")
    page.fill("#id_city", "Berlin")
    page.fill("#id_postal_code", "10115")
    page.fill("#id_email", "guest@example.com")


def test_country_by_name_and_a_state_for_the_united_states(
    page: Page, live_server: Any, mug: Any, repository: OrderRepository
) -> None:
    base = live_server.url
    to_checkout(page, base, mug.sku)
    country, region = page.locator("#id_country"), page.locator("#id_region")

    # No country chosen yet: no state field.
    expect(country).to_have_value("")
    expect(region).to_be_hidden()

    # The United States: the state field appears, under its word, and is required.
    country.select_option(label="United States")
    expect(region).to_be_visible()
    expect(page.locator("label[for=id_region]")).to_have_text("State:")
    expect(region).to_have_attribute("required", "")
    # Only the states of the United States to choose from.
    offered = "select => [...select.querySelectorAll('optgroup')].filter(g => !g.disabled).map(g => g.label)"
    assert region.evaluate(offered) == ["United States"]
    page.get_by_role("button", name="Place order").click()
    # The browser refuses the form without a state: still on the checkout page, nothing placed.
    assert region.evaluate("element => element.validity.valueMissing")
    expect(page).to_have_url(f"{base}/checkout/")
    assert repository.list(OrderQuery(limit=10)).orders == []

    # Canada: provinces, under their own word.
    country.select_option(label="Canada")
    expect(page.locator("label[for=id_region]")).to_have_text("Province or territory:")
    assert region.evaluate(offered) == ["Canada"]

    # Germany, chosen by its name: no state field; the order is stored with "DE" (not "GE").
    country.select_option(label="Germany")
    expect(region).to_be_hidden()
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_text("Thank you! Your order is placed.")).to_be_visible()
    expect(page.locator(".address-country")).to_have_text("Germany")
    [order] = repository.list(OrderQuery(limit=10)).orders
    assert (order.shipping_address.country, order.shipping_address.region) == ("DE", "")


def test_a_us_order_keeps_its_state(
    page: Page, live_server: Any, mug: Any, repository: OrderRepository
) -> None:
    to_checkout(page, live_server.url, mug.sku)
    page.locator("#id_country").select_option(label="United States")
    page.locator("#id_region").select_option(label="California")
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_text("Thank you! Your order is placed.")).to_be_visible()
    expect(page.locator(".address-region")).to_have_text("CA")
    [order] = repository.list(OrderQuery(limit=10)).orders
    assert (order.shipping_address.country, order.shipping_address.region) == ("US", "CA")
