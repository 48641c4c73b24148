"""The order lookup on /ops/: by the short reference customers see, by email address, by full id.

Runs on the configured order store (the ORM, or DynamoDB on its CI pass): the lookup goes through
`OrderRepository.list` with `OrderQuery`'s reference and email filters.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from django.test import Client

from monitoring import selectors
from orders.domain import Order
from tests.monitoring.test_ops_page import text_of


@pytest.fixture
def orders(place: Callable[..., Order]) -> list[Order]:
    """Three orders of ada@example.com, oldest first, and one of someone else."""
    return [
        place(email=email)
        for email in ("ada@example.com", "Ada@Example.com", "ada@example.com", "grace@example.com")
    ]


def lookup(client: Client, text: str) -> str:
    response = client.get("/ops/", {"order": text})
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_a_short_reference_in_any_case_with_or_without_a_hash_shows_the_story(
    ops_client: Client, orders: list[Order]
) -> None:
    order = orders[1]
    assert re.fullmatch(r"[0-9A-F]{8}", order.reference)
    for text in (
        order.reference,
        order.reference.lower(),
        f"#{order.reference}",
        f"  # {order.reference.lower()} ",
    ):
        html = lookup(ops_client, text)
        story = text_of(html, "story")
        assert f"Order {order.reference}" in story and str(order.id) in story, text
        assert 'id="lookup-error"' not in html and 'id="lookup-results"' not in html


@pytest.mark.django_db
def test_an_email_address_lists_that_customers_orders_newest_first_each_linking_to_its_story(
    ops_client: Client, orders: list[Order]
) -> None:
    html = lookup(ops_client, " ADA@example.COM ")
    results = text_of(html, "lookup-results")
    assert results.startswith("3 orders of ada@example.com, newest first")
    newest_first = [orders[2], orders[1], orders[0]]
    rows = re.findall(r'<tr class="lookup-order" data-order="([0-9a-f-]+)">', html)
    assert rows == [str(order.id) for order in newest_first]
    for order in newest_first:
        assert f'href="?window=1h&amp;order={order.id}#story"' in html
        assert order.reference in results
    assert orders[3].reference not in results  # grace's order
    assert "Pending payment" in results
    assert 'id="story"' not in html

    # The link opens that order's story.
    story = text_of(lookup(ops_client, str(orders[2].id)), "story")
    assert str(orders[2].id) in story


@pytest.mark.django_db
def test_an_unknown_or_malformed_reference_or_email_says_so(ops_client: Client, orders: list[Order]) -> None:
    taken = {order.reference for order in orders}
    unknown = next(ref for ref in ("ABCDEF12", "0BADC0DE", "12345678") if ref not in taken)
    assert (
        text_of(lookup(ops_client, unknown.lower()), "lookup-error")
        == f"No order has the reference {unknown}."
    )
    assert (
        text_of(lookup(ops_client, "nobody@example.com"), "lookup-error")
        == "No orders were placed with the email address nobody@example.com."
    )
    for text in ("ada@", "@example.com", "a@b@c", "ada@example.com\x00"):
        message = text_of(lookup(ops_client, text), "lookup-error")
        assert "is not an email address" in message, text
    for text in ("90385D9", "90385D94X", "#", "ada example.com", "x" * 5000, "名前", "9038-5D94"):
        message = text_of(lookup(ops_client, text), "lookup-error")
        assert "is not an order id, a reference or an email address" in message, text
    assert text_of(lookup(ops_client, str(uuid.UUID(int=7))), "lookup-error") == (
        f"No order {uuid.UUID(int=7)} was found."
    )


@pytest.mark.django_db
def test_the_lookup_selector_never_raises_for_what_was_typed(orders: list[Order]) -> None:
    assert selectors.order_lookup("   ") == selectors.OrderLookup(text="")
    found = selectors.order_lookup(orders[0].reference.lower())
    assert found.story is not None and found.story["order"].id == orders[0].id
    by_email = selectors.order_lookup("grace@example.com")
    assert [o.id for o in by_email.orders] == [orders[3].id] and not by_email.more
    assert by_email.heading == "1 order of grace@example.com, newest first"
