"""The order admin: orders with lines and a read-only timeline, search, filters, transition
actions on the selected orders, on every order store (this module runs on both)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from orders.admin.forms import MoneyField, parse_money
from orders.domain import Actor, EventType, Order, OrderStatus, ShippingAddress
from orders.models import OrderEvent, Product
from orders.repositories import OrderRepository
from orders.services import order_update

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _order_store(repository: OrderRepository) -> None:
    """Every test here uses the configured order store (the DynamoDB pass's too)."""


def test_order_list_search_and_filters(
    admin_client: Client, place: Callable[..., Order], customer: Any
) -> None:
    mine = place(customer=customer)
    guest = place(email="someone.else@example.com")
    page = admin_client.get("/admin/orders/order/")
    assert page.status_code == 200
    assert str(mine.id) in page.content.decode() and str(guest.id) in page.content.decode()

    by_email = admin_client.get("/admin/orders/order/", {"q": "someone.else@example.com"}).content.decode()
    assert str(guest.id) in by_email and str(mine.id) not in by_email
    by_id = admin_client.get("/admin/orders/order/", {"q": str(mine.id)}).content.decode()
    assert str(mine.id) in by_id and str(guest.id) not in by_id
    by_reference = admin_client.get("/admin/orders/order/", {"q": str(mine.id)[:8].upper()}).content.decode()
    assert str(mine.id) in by_reference and str(guest.id) not in by_reference

    filtered = admin_client.get("/admin/orders/order/", {"status": "paid"}).content.decode()
    assert str(mine.id) not in filtered
    assert admin_client.get("/admin/orders/order/", {"created_from": "2000-01-01"}).status_code == 200


def test_order_page_shows_lines_and_timeline_read_only(
    admin_client: Client, place: Callable[..., Order]
) -> None:
    order = place(lines={"MUG-1": 2})
    page = admin_client.get(f"/admin/orders/order/{order.id}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "MUG-1" in html and "Event timeline" in html and "created" in html
    assert 'name="events-0-type"' not in html  # not editable
    # Orders are placed through the shop or the API, which price them: the admin has no add page.
    assert admin_client.get("/admin/orders/order/add/").status_code == 404


def test_the_order_page_writes_the_address_as_a_label_with_the_countrys_name(
    admin_client: Client, place: Callable[..., Order], repository: OrderRepository
) -> None:
    """The shared address include (templates/orders/_address.html): the region and the
    country's name, not its bare code."""
    order = place()
    order_update(
        repository=repository,
        order_id=order.id,
        actor=Actor.system("t"),
        shipping_address=ShippingAddress(
            name="Grace Hopper",
            line1="1 Navy Way",
            city="Arlington",
            postal_code="22202",
            country="US",
            region="VA",
        ),
    )
    page = admin_client.get(f"/admin/orders/order/{order.id}/change/")
    assert page.status_code == 200
    ship_to = page.content.decode().split('id="order-ship-to"', 1)[1].split("</address>", 1)[0]
    assert '<span class="address-region">VA</span>' in ship_to
    assert '<span class="address-country">United States</span>' in ship_to
    assert ">US<" not in ship_to


def test_transition_actions_go_through_the_service(
    admin_client: Client, place: Callable[..., Order], repository: Any, staff: Any
) -> None:
    order = place(lines={"MUG-1": 2})
    response = admin_client.post(
        "/admin/orders/order/", {"action": "mark_cancelled", "_selected_action": [str(order.id)]}, follow=True
    )
    assert "1 order marked cancelled" in response.content.decode()
    assert repository.get(order.id).status == OrderStatus.CANCELLED
    assert Product.objects.get(sku="MUG-1").stock == 10  # released, as through the API
    event = repository.events(order.id)[-1]
    assert (event.to_status, event.actor, event.data) == (
        OrderStatus.CANCELLED,
        f"staff:{staff.pk}",
        {"via": "admin"},
    )


def test_an_illegal_action_is_reported_and_changes_nothing(
    admin_client: Client, place: Callable[..., Order], repository: Any
) -> None:
    order = place()
    response = admin_client.post(
        "/admin/orders/order/", {"action": "mark_fulfilled", "_selected_action": [str(order.id)]}, follow=True
    )
    assert "cannot become fulfilled" in response.content.decode()
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT


def test_editing_in_the_admin_is_audited(
    admin_client: Client, place: Callable[..., Order], repository: Any
) -> None:
    order = place()
    address = order.shipping_address.as_dict() | {"city": "Leeds"}

    response = admin_client.post(
        f"/admin/orders/order/{order.id}/change/",
        {"_op": "edit", **address, "notes": "Fragile", "version": order.version},
    )
    assert response.status_code == 302, response.context["edit_form"].errors
    stored = repository.get(order.id)
    assert (stored.shipping_address.city, stored.notes, stored.version) == ("Leeds", "Fragile", 2)
    assert repository.events(order.id)[-1].type == EventType.EDITED


def test_orders_cannot_be_deleted_in_the_admin(admin_client: Client, place: Callable[..., Order]) -> None:
    order = place()
    # Orders are cancelled, never deleted: the admin has no delete page nor action.
    assert admin_client.get(f"/admin/orders/order/{order.id}/delete/").status_code == 404
    listing = admin_client.get("/admin/orders/order/").content.decode()
    assert "delete_selected" not in listing and "mark_cancelled" in listing


@pytest.mark.orm_only
def test_the_orm_adapters_events_cannot_be_deleted_or_changed(place: Callable[..., Order]) -> None:
    order = place()
    event = OrderEvent.objects.get(order_id=order.id)
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        OrderEvent.objects.filter(order_id=order.id).delete()
    with pytest.raises(TypeError):
        OrderEvent.objects.filter(order_id=order.id).update(actor="someone else")
    event.actor = "someone else"
    with pytest.raises(TypeError):
        event.save()


# --- money as money, and statuses that follow money ------------------------------------------
@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "USD", 1250),
        ("12.5", "USD", 1250),
        ("12", "usd", 1200),
        ("$1,234.50", "USD", 123450),
        ("12.50 USD", "USD", 1250),
        ("1200", "JPY", 1200),
        ("1,200 JPY", "JPY", 1200),
        ("1.250", "KWD", 1250),
        ("0.01", "EUR", 1),
    ],
)
def test_staff_type_money_as_money(text: str, currency: str, minor: int) -> None:
    assert parse_money(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "error"),
    [
        ("12.505", "USD", "USD has 2 decimals."),
        ("12.5", "JPY", "JPY has no decimals."),
        ("1.2345", "KWD", "KWD has 3 decimals."),
        ("0", "USD", "The amount must be more than zero."),
        ("-1.00", "USD", "The amount must be more than zero."),
        ("abc", "JPY", "Enter an amount of JPY, such as 12."),
        ("inf", "USD", "Enter an amount of USD."),
        ("1e999999999", "USD", "The amount is too large."),
        ("1000000000000", "JPY", "The amount is too large."),
    ],
)
def test_money_that_is_not_an_amount_of_the_currency_is_refused(text: str, currency: str, error: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_money(text, currency)
    assert refused.value.messages == [error]


def test_the_money_field_names_its_maximum() -> None:
    field = MoneyField(currency="JPY", maximum=1200, maximum_message="At most {maximum} can be refunded.")
    assert field.clean("1200") == 1200
    with pytest.raises(ValidationError) as refused:
        field.clean("1201")
    assert refused.value.messages == ["At most 1,200 JPY can be refunded."]
    assert MoneyField(required=False).clean("") is None


def test_products_are_priced_in_money(admin_client: Client, mug: Any) -> None:
    assert "$14.50" in admin_client.get("/admin/orders/product/").content.decode()
    form = {
        "sku": "CUP-JP",
        "name": "Cup",
        "description": "",
        "currency": "jpy",
        "stock": "3",
        "active": "on",
    }
    refused = admin_client.post("/admin/orders/product/add/", {**form, "price": "12.5"})
    assert refused.status_code == 200 and "JPY has no decimals." in refused.content.decode()
    added = admin_client.post("/admin/orders/product/add/", {**form, "price": "1,200"})
    assert added.status_code == 302
    cup = Product.objects.get(sku="CUP-JP")
    assert (cup.price_minor, cup.currency) == (1200, "JPY")
    page = admin_client.get(f"/admin/orders/product/{cup.pk}/change/").content.decode()
    assert 'value="1200"' in page and "Price minor" not in page
    assert "1,200 JPY" in admin_client.get("/admin/orders/product/").content.decode()


def test_statuses_that_follow_money_are_no_status_edits(
    admin_client: Client, place: Callable[..., Order], repository: Any
) -> None:
    order = place()
    page = admin_client.get(f"/admin/orders/order/{order.id}/change/").content.decode()
    assert "Mark paid" not in page and 'value="paid"' not in page
    assert 'value="cancelled"' in page and 'data-confirm="Cancel order' in page  # asks first
    listing = admin_client.get("/admin/orders/order/").content.decode()
    for name in ("mark_paid", "mark_refunded", "mark_partially_refunded"):
        assert f'value="{name}"' not in listing
    assert 'value="mark_cancelled" data-confirm="Cancel the selected orders?' in listing
    assert 'value="refund_in_full" data-confirm="' in listing and 'data-confirm-option="action"' in listing

    # Forged forms are refused with a message, and change nothing.
    refused = [
        "Nothing was done: an order becomes paid only when money moves (a payment settling, a refund"
        " through the payment actions), never by a status change."
    ]
    forged = admin_client.post(
        f"/admin/orders/order/{order.id}/change/", {"_op": "transition", "to_status": "paid"}, follow=True
    )
    assert forged.status_code == 200
    assert [str(m) for m in forged.context["messages"]] == refused
    forged = admin_client.post(
        "/admin/orders/order/", {"action": "mark_paid", "_selected_action": [str(order.id)]}, follow=True
    )
    assert forged.status_code == 200
    assert [str(m) for m in forged.context["messages"]] == refused
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT
    assert len(repository.events(order.id)) == 1


def test_the_list_shows_short_references_linking_to_orders(
    admin_client: Client, place: Callable[..., Order]
) -> None:
    order = place()
    listing = admin_client.get("/admin/orders/order/").content.decode()
    link = f'<a class="order-ref" href="/admin/orders/order/{order.id}/change/" title="{order.id}">{order.reference}</a>'
    assert link in listing
    assert f">{order.id}<" not in listing  # the whole id is not a column: it wrapped over four lines
    assert "css/admin-order.css" in listing
