"""The customer-facing pages: catalog, cart, checkout, orders and accounts, through the test client."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.template import loader
from django.test import Client
from django.urls import resolve, reverse

from orders import services, views
from orders.domain import Actor, Order, OrderQuery, OrderStatus
from orders.models import Product
from orders.repositories import OrderRepository
from orders.templatetags.money import format_money, money
from tests.conftest import ADDRESS_JSON
from tests.orders.factories import ProductFactory

# End to end: CI runs these a second time with orders in DynamoDB (`make test-dynamodb`), so
# every order is read through the configured repository, never the ORM.
pytestmark = [pytest.mark.django_db, pytest.mark.e2e, pytest.mark.usefixtures("repository")]

PASSWORD = "pw-for-tests"


# --- helpers ----------------------------------------------------------------------------------
def all_orders(repository: OrderRepository) -> list[Order]:
    return repository.list(OrderQuery(limit=100)).orders


def set_cart(client: Client, items: dict[str, int]) -> None:
    session = client.session
    session["cart"] = items
    session.save()


def cart_of(client: Client) -> dict[str, int]:
    return dict(client.session.get("cart", {}))


def checkout_key(client: Client) -> str:
    """Open the checkout page and return the idempotency key its form carries."""
    response = client.get(reverse("orders:checkout"))
    assert response.status_code == 200
    match = re.search(r'name="idempotency_key" value="([0-9a-f-]{32,36})"', response.content.decode())
    assert match, "the checkout form has no hidden idempotency key"
    return match.group(1)


def checkout_data(key: str, **overrides: str) -> dict[str, str]:
    data = {**ADDRESS_JSON, "email": "guest@example.com", "notes": "", "idempotency_key": key}
    data.update(overrides)
    return data


def order_id_from(response: Any) -> uuid.UUID:
    assert response.status_code == 302, response.content
    match = resolve(response.url)
    assert match.view_name == "orders:order_detail", response.url
    return match.kwargs["order_id"]


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def product_card(html: str, name: str) -> str:
    """The HTML of one product's card on the product list."""
    cards = html.split('<li class="card product-card">')[1:]
    found = [card for card in cards if f'<h2 class="product-name">{name}</h2>' in card]
    assert len(found) == 1, f"expected one card for {name}"
    return found[0].split("</li>")[0]


# --- money filter -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1450, "USD", "$14.50"),
        (5, "USD", "$0.05"),
        (123456789, "USD", "$1,234,567.89"),
        (1450, "CHF", "14.50 CHF"),
        (1450, "eur", "€14.50"),
        (1200, "JPY", "1,200 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (-250, "GBP", "-£2.50"),
    ],
)
def test_format_money(amount: int, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


def test_money_filter_ignores_what_is_not_an_amount() -> None:
    assert money(None, "USD") == ""
    assert money("14.50", "USD") == ""
    assert money(1450, "USD") == "$14.50"


# --- catalog ----------------------------------------------------------------------------------
def test_product_list_shows_active_products_prices_and_stock(client: Client, mug: Any, tee: Any) -> None:
    ProductFactory(sku="OLD-1", name="Retired thing", active=False)
    ProductFactory(sku="NTB-1", name="Notebook", price_minor=1200, stock=0)
    ProductFactory(sku="CAP-1", name="Cap", price_minor=1900, stock=3)

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Cloud Integration System" in html
    assert "Retired thing" not in html
    mug_card = product_card(html, "Mug")
    assert "$14.50" in mug_card
    assert "In stock" in mug_card
    assert "disabled" not in mug_card
    assert 'name="csrfmiddlewaretoken"' in mug_card
    assert "$24.00" in product_card(html, "Tee")
    assert "Only 3 left" in product_card(html, "Cap")
    notebook = product_card(html, "Notebook")
    assert "Out of stock" in notebook
    assert "disabled" in notebook


def test_product_list_shows_the_image_when_set(client: Client, mug: Any) -> None:
    Product.objects.filter(pk=mug.pk).update(image="products/mug.png")
    html = client.get("/").content.decode()
    assert 'src="/media/products/mug.png"' in product_card(html, "Mug")


def test_product_detail_has_an_add_to_cart_form(client: Client, mug: Any) -> None:
    response = client.get(reverse("orders:product_detail", args=["MUG-1"]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Mug</h1>" in html
    assert "$14.50" in html
    assert f'action="{reverse("orders:cart_add", args=["MUG-1"])}"' in html
    assert 'name="quantity"' in html
    assert "Add to cart" in html


@pytest.mark.parametrize("sku", ["NOPE-1", "OLD-1"])
def test_product_detail_is_404_for_unknown_or_inactive_products(client: Client, sku: str) -> None:
    ProductFactory(sku="OLD-1", name="Retired thing", active=False)

    response = client.get(reverse("orders:product_detail", args=[sku]))

    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html
    assert "Retired thing" not in html
    assert "Cloud Integration System" in html  # the site's own 404 page, in the site's layout


def test_unknown_url_uses_the_site_404_page(client: Client) -> None:
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_500_page_renders_without_a_request() -> None:
    html = loader.get_template("500.html").render()
    assert "Something went wrong" in html
    assert "/static/css/site.css" in html


# --- cart -------------------------------------------------------------------------------------
def test_add_to_cart_and_see_the_cart_priced_from_the_catalog(client: Client, mug: Any, tee: Any) -> None:
    response = client.post(reverse("orders:cart_add", args=["MUG-1"]), {"quantity": 2})
    assert response.status_code == 302
    assert response.url == reverse("orders:cart")
    client.post(reverse("orders:cart_add", args=["TEE-1"]), {"quantity": 1, "next": "/"})
    assert cart_of(client) == {"MUG-1": 2, "TEE-1": 1}

    # The catalog price changes: the cart shows today's price, not the one seen when adding.
    Product.objects.filter(pk=mug.pk).update(price_minor=1500)
    response = client.get(reverse("orders:cart"))

    assert response.status_code == 200
    html = response.content.decode()
    assert "$15.00 each" in html
    assert "$30.00" in html  # 2 x mug
    assert '<strong class="subtotal">$54.00</strong>' in html
    assert 'href="/checkout/"' in html
    assert '<span class="badge" aria-label="3 items">3</span>' in html


def test_add_to_cart_goes_back_to_a_safe_next_url_only(client: Client, mug: Any) -> None:
    response = client.post(reverse("orders:cart_add", args=["MUG-1"]), {"quantity": 1, "next": "/"})
    assert response.url == "/"
    response = client.post(
        reverse("orders:cart_add", args=["MUG-1"]), {"quantity": 1, "next": "https://evil.example/"}
    )
    assert response.url == reverse("orders:cart")
    assert cart_of(client) == {"MUG-1": 2}


def test_adding_more_than_stock_keeps_what_is_in_stock_and_says_so(client: Client, tee: Any) -> None:
    response = client.post(reverse("orders:cart_add", args=["TEE-1"]), {"quantity": 7}, follow=True)

    assert response.status_code == 200
    assert cart_of(client) == {"TEE-1": 5}
    assert "Only 5 of Tee available in stock; your cart now holds 5." in messages_of(response)


def test_adding_an_out_of_stock_product_adds_nothing(client: Client) -> None:
    ProductFactory(sku="NTB-1", name="Notebook", stock=0)

    response = client.post(reverse("orders:cart_add", args=["NTB-1"]), {"quantity": 1}, follow=True)

    assert cart_of(client) == {}
    assert "Sorry, Notebook is out of stock." in messages_of(response)


def test_adding_an_invalid_quantity_or_unknown_product(client: Client, mug: Any) -> None:
    response = client.post(reverse("orders:cart_add", args=["MUG-1"]), {"quantity": 0}, follow=True)
    assert cart_of(client) == {}
    assert any(message.startswith("Quantity:") for message in messages_of(response))
    assert client.post(reverse("orders:cart_add", args=["NOPE"]), {"quantity": 1}).status_code == 404


def test_cart_actions_need_post(client: Client, mug: Any) -> None:
    assert client.get(reverse("orders:cart_add", args=["MUG-1"])).status_code == 405
    assert client.get(reverse("orders:cart_remove", args=["MUG-1"])).status_code == 405


def test_update_and_remove_cart_lines(client: Client, mug: Any, tee: Any) -> None:
    set_cart(client, {"MUG-1": 1, "TEE-1": 1})

    client.post(reverse("orders:cart_update", args=["MUG-1"]), {"quantity": 3})
    assert cart_of(client) == {"MUG-1": 3, "TEE-1": 1}

    response = client.post(reverse("orders:cart_update", args=["TEE-1"]), {"quantity": 9}, follow=True)
    assert cart_of(client) == {"MUG-1": 3, "TEE-1": 5}
    assert "Only 5 of Tee available in stock; your cart now holds 5." in messages_of(response)

    client.post(reverse("orders:cart_update", args=["TEE-1"]), {"quantity": 0})
    assert cart_of(client) == {"MUG-1": 3}

    response = client.post(reverse("orders:cart_remove", args=["MUG-1"]), follow=True)
    assert cart_of(client) == {}
    assert "Your cart is empty." in response.content.decode()


def test_cart_flags_lines_no_longer_for_sale(client: Client, mug: Any) -> None:
    ProductFactory(sku="OLD-1", name="Retired thing", active=False)
    set_cart(client, {"MUG-1": 1, "OLD-1": 2})

    html = client.get(reverse("orders:cart")).content.decode()

    assert "No longer for sale" in html
    assert '<strong class="subtotal">$14.50</strong>' in html  # the retired line is not counted


# --- checkout ---------------------------------------------------------------------------------
def test_checkout_with_an_empty_cart_goes_back_to_the_cart(client: Client) -> None:
    response = client.get(reverse("orders:checkout"))
    assert response.status_code == 302
    assert response.url == reverse("orders:cart")


def test_guest_checkout_places_one_order_priced_on_the_server(
    client: Client, mug: Any, tee: Any, repository: OrderRepository
) -> None:
    set_cart(client, {"MUG-1": 2, "TEE-1": 1})
    key = checkout_key(client)

    # Prices sent by the client are ignored: the form has no such fields and the service prices.
    response = client.post(
        reverse("orders:checkout"), {**checkout_data(key, notes="Ring twice"), "price_minor": "1"}
    )

    order_id = order_id_from(response)
    orders = all_orders(repository)
    assert [order.id for order in orders] == [order_id]
    order = repository.get(order_id)
    assert order.total_minor == 2 * 1450 + 2400
    assert order.subtotal_minor == 2 * 1450 + 2400
    assert [(line.sku, line.unit_price_minor, line.quantity) for line in order.lines] == [
        ("MUG-1", 1450, 2),
        ("TEE-1", 2400, 1),
    ]
    assert order.customer_id is None
    assert order.email == "guest@example.com"
    assert order.notes == "Ring twice"
    assert order.shipping_address.as_dict() == ADDRESS_JSON
    assert order.idempotency_key == key
    assert order.idempotency_scope == "anonymous"
    assert order.status == OrderStatus.PENDING_PAYMENT
    assert cart_of(client) == {}
    assert client.session["guest_orders"] == [str(order_id)]
    assert Product.objects.get(pk=mug.pk).stock == 8
    assert Product.objects.get(pk=tee.pk).stock == 4

    page = client.get(response.url)
    assert page.status_code == 200
    assert "Thank you! Your order is placed." in messages_of(page)
    assert "Your order is reserved and waiting for payment." in page.content.decode()


def test_guest_checkout_needs_an_email(client: Client, mug: Any, repository: OrderRepository) -> None:
    set_cart(client, {"MUG-1": 1})
    key = checkout_key(client)

    response = client.post(reverse("orders:checkout"), checkout_data(key, email=""))

    assert response.status_code == 200
    assert response.context["form"].errors["email"] == ["This field is required."]
    assert all_orders(repository) == []
    assert cart_of(client) == {"MUG-1": 1}


def test_checkout_checks_the_address_form(client: Client, mug: Any, repository: OrderRepository) -> None:
    set_cart(client, {"MUG-1": 1})
    key = checkout_key(client)

    response = client.post(reverse("orders:checkout"), checkout_data(key, country="GBR", city=""))

    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "city" in errors
    assert "country" in errors
    assert all_orders(repository) == []


def test_customer_checkout_uses_the_account_and_its_email(
    client: Client, customer: Any, mug: Any, repository: OrderRepository
) -> None:
    client.force_login(customer)
    set_cart(client, {"MUG-1": 3})
    response = client.get(reverse("orders:checkout"))
    assert f'value="{customer.email}"' in response.content.decode()
    key = response.context["form"]["idempotency_key"].value()

    response = client.post(reverse("orders:checkout"), checkout_data(str(key), country="gb", email=""))

    order = repository.get(order_id_from(response))
    assert [o.id for o in all_orders(repository)] == [order.id]
    assert order.customer_id == customer.pk
    assert order.email == customer.email
    assert order.total_minor == 3 * 1450
    assert order.shipping_address.country == "GB"
    assert order.idempotency_scope == f"user:{customer.pk}"
    assert "guest_orders" not in client.session
    assert cart_of(client) == {}


def test_double_submitted_checkout_places_one_order(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    set_cart(client, {"MUG-1": 2})
    key = checkout_key(client)
    data = checkout_data(key)

    first = client.post(reverse("orders:checkout"), data)
    # The second click arrives after the first finished: the cart is already empty.
    second = client.post(reverse("orders:checkout"), data)

    assert order_id_from(second) == order_id_from(first)
    assert len(all_orders(repository)) == 1
    assert Product.objects.get(pk=mug.pk).stock == 8


def test_concurrent_double_submit_is_answered_by_the_idempotency_key(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    set_cart(client, {"MUG-1": 2})
    key = checkout_key(client)
    data = checkout_data(key)
    first = client.post(reverse("orders:checkout"), data)

    # A second request that read the session before the first one saved it: the cart is still
    # full and the session does not know about the order yet. Only the service's key stops it.
    session = client.session
    session["cart"] = {"MUG-1": 2}
    del session["last_checkout"]
    session.save()
    second = client.post(reverse("orders:checkout"), data)

    assert order_id_from(second) == order_id_from(first)
    assert len(all_orders(repository)) == 1
    assert Product.objects.get(pk=mug.pk).stock == 8
    assert cart_of(client) == {}


def test_each_checkout_render_has_a_new_key(client: Client, mug: Any) -> None:
    set_cart(client, {"MUG-1": 1})
    assert checkout_key(client) != checkout_key(client)


def test_checkout_without_a_key_is_refused(client: Client, mug: Any, repository: OrderRepository) -> None:
    set_cart(client, {"MUG-1": 1})
    response = client.post(reverse("orders:checkout"), checkout_data(""))
    assert response.status_code == 200
    assert "This checkout form has expired" in response.content.decode()
    assert all_orders(repository) == []


def test_checkout_with_too_little_stock_shows_why_and_changes_nothing(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    set_cart(client, {"MUG-1": 3})
    key = checkout_key(client)
    Product.objects.filter(pk=mug.pk).update(stock=1)  # someone else bought the rest meanwhile

    response = client.post(reverse("orders:checkout"), checkout_data(key))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Not enough stock." in html
    assert "Only 1 of MUG-1 left in stock; 3 asked for." in html
    assert 'name="name" value="Ada Lovelace"' in html  # what was typed is kept
    assert f'value="{key}"' in html
    assert all_orders(repository) == []
    assert Product.objects.get(pk=mug.pk).stock == 1
    assert cart_of(client) == {"MUG-1": 3}


def test_checkout_with_a_product_no_longer_for_sale(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    set_cart(client, {"MUG-1": 1})
    key = checkout_key(client)
    Product.objects.filter(pk=mug.pk).update(active=False)

    response = client.post(reverse("orders:checkout"), checkout_data(key))

    assert response.status_code == 200
    assert "No product with sku &#x27;MUG-1&#x27; is for sale." in response.content.decode()
    assert all_orders(repository) == []
    assert cart_of(client) == {"MUG-1": 1}


# --- the order page ---------------------------------------------------------------------------
def guest_checkout(client: Client, lines: dict[str, int]) -> uuid.UUID:
    set_cart(client, lines)
    return order_id_from(client.post(reverse("orders:checkout"), checkout_data(checkout_key(client))))


def test_order_page_shows_lines_totals_address_and_history(
    client: Client, customer: Any, place: Callable[..., Order], tee: Any
) -> None:
    order = place(customer=customer, lines={"MUG-1": 2, "TEE-1": 1}, notes="Leave at the door")
    client.force_login(customer)

    response = client.get(reverse("orders:order_detail", args=[order.id]))

    assert response.status_code == 200
    html = response.content.decode()
    assert str(order.id) in html
    assert "2 \N{MULTIPLICATION SIGN} Mug" in html
    assert "1 \N{MULTIPLICATION SIGN} Tee" in html
    assert '<strong class="order-total">$53.00</strong>' in html
    assert "12 Analytical Row" in html
    assert "N1 9GU London" in html
    assert "Leave at the door" in html
    assert "Pending payment" in html
    assert "Your order is reserved and waiting for payment." in html and ">Pay now</a>" in html
    assert "Cancel order" in html
    assert "<strong>Created</strong>" in html
    assert "by You" in html


@pytest.mark.parametrize("viewer", ["owner", "staff"])
def test_order_page_is_visible_to_the_owner_and_to_staff(
    client: Client, customer: Any, staff: Any, place: Callable[..., Order], viewer: str
) -> None:
    order = place(customer=customer)
    client.force_login(customer if viewer == "owner" else staff)
    response = client.get(reverse("orders:order_detail", args=[order.id]))
    assert response.status_code == 200
    assert str(order.id) in response.content.decode()


def test_order_page_is_visible_to_the_guest_session_that_placed_it(client: Client, mug: Any) -> None:
    order_id = guest_checkout(client, {"MUG-1": 1})

    assert client.get(reverse("orders:order_detail", args=[order_id])).status_code == 200
    # Another browser, without that session, cannot see it.
    assert Client().get(reverse("orders:order_detail", args=[order_id])).status_code == 404


def test_order_page_is_404_for_another_customer_and_other_sessions(
    client: Client, customer: Any, other_customer: Any, place: Callable[..., Order]
) -> None:
    customers_order = place(customer=customer)
    guests_order = place()  # a guest order placed from some other browser

    client.force_login(other_customer)
    response = client.get(reverse("orders:order_detail", args=[customers_order.id]))
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()
    assert client.get(reverse("orders:order_detail", args=[guests_order.id])).status_code == 404
    anonymous = Client()
    assert anonymous.get(reverse("orders:order_detail", args=[customers_order.id])).status_code == 404
    assert anonymous.get(reverse("orders:order_detail", args=[guests_order.id])).status_code == 404
    assert anonymous.get(reverse("orders:order_detail", args=[uuid.uuid4()])).status_code == 404


def test_cancel_from_the_order_page(
    client: Client, customer: Any, place: Callable[..., Order], repository: OrderRepository, mug: Any
) -> None:
    order = place(customer=customer, lines={"MUG-1": 4})
    assert Product.objects.get(pk=mug.pk).stock == 6
    client.force_login(customer)

    response = client.post(reverse("orders:order_cancel", args=[order.id]), follow=True)

    assert response.status_code == 200
    assert repository.get(order.id).status == OrderStatus.CANCELLED
    assert Product.objects.get(pk=mug.pk).stock == 10
    assert "Your order is cancelled." in messages_of(response)
    html = response.content.decode()
    assert "Cancel order" not in html
    assert "<strong>Status changed</strong>" in html
    assert "Cancelled from the order page." in html
    events = repository.events(order.id)
    assert events[-1].actor == f"customer:{customer.pk}"

    # Cancelling again is refused with a message, not an error page.
    again = client.post(reverse("orders:order_cancel", args=[order.id]), follow=True)
    assert again.status_code == 200
    assert any("cannot become cancelled" in message for message in messages_of(again))
    assert len(repository.events(order.id)) == len(events)


def test_guest_cancels_own_order(client: Client, mug: Any, repository: OrderRepository) -> None:
    order_id = guest_checkout(client, {"MUG-1": 1})

    client.post(reverse("orders:order_cancel", args=[order_id]))

    assert repository.get(order_id).status == OrderStatus.CANCELLED
    assert repository.events(order_id)[-1].actor == "guest:guest@example.com"


def test_cancel_is_404_for_someone_else(
    client: Client,
    customer: Any,
    other_customer: Any,
    place: Callable[..., Order],
    repository: OrderRepository,
) -> None:
    order = place(customer=customer)
    client.force_login(other_customer)

    response = client.post(reverse("orders:order_cancel", args=[order.id]))

    assert response.status_code == 404
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT


def test_paid_order_has_no_cancel_button_and_no_payment_notice(
    client: Client, customer: Any, place: Callable[..., Order], repository: OrderRepository
) -> None:
    order = place(customer=customer)
    services.order_transition(
        repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=Actor.system("stripe")
    )
    client.force_login(customer)

    html = client.get(reverse("orders:order_detail", args=[order.id])).content.decode()

    assert "Cancel order" not in html
    assert "Pay now" not in html
    assert '<span class="status status-paid">Paid</span>' in html
    assert "by System (stripe)" in html


# --- my orders --------------------------------------------------------------------------------
def test_my_orders_for_a_guest_explains_where_guest_orders_are(client: Client, mug: Any) -> None:
    """Issue 14, point 7: no login page; how to find a guest order, and this browser's orders."""
    response = client.get(reverse("orders:order_list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Ordered as a guest?" in html
    assert "order confirmation email" in html
    assert f'href="{reverse("login")}?next=' in html
    assert f'href="{reverse("signup")}?next=' in html
    assert "No guest orders from this browser yet." in html

    order_id = guest_checkout(client, {"MUG-1": 1})
    html = client.get(reverse("orders:order_list")).content.decode()
    assert reverse("orders:order_detail", args=[order_id]) in html
    assert f"Order {str(order_id)[:8].upper()}" in html
    # Another browser (session) sees none of them.
    assert str(order_id) not in Client().get(reverse("orders:order_list")).content.decode()


def order_ref(order: Order) -> str:
    return str(order.id)[:8].upper()


def test_my_orders_lists_only_own_orders_and_filters_by_status(
    client: Client,
    customer: Any,
    other_customer: Any,
    place: Callable[..., Order],
    repository: OrderRepository,
) -> None:
    kept = place(customer=customer)
    cancelled = place(customer=customer)
    services.order_cancel(repository=repository, order_id=cancelled.id, actor=Actor.system())
    someone_elses = place(customer=other_customer)
    client.force_login(customer)

    html = client.get(reverse("orders:order_list")).content.decode()
    assert order_ref(kept) in html
    assert order_ref(cancelled) in html
    assert order_ref(someone_elses) not in html

    html = client.get(reverse("orders:order_list"), {"status": "cancelled"}).content.decode()
    assert order_ref(cancelled) in html
    assert order_ref(kept) not in html

    html = client.get(reverse("orders:order_list"), {"status": "paid"}).content.decode()
    assert "No orders with status “Paid”." in html

    # Not a status: every order is listed.
    response = client.get(reverse("orders:order_list"), {"status": "bogus"})
    assert response.status_code == 200
    assert order_ref(kept) in response.content.decode()


def test_staff_see_every_order(
    client: Client, customer: Any, staff: Any, place: Callable[..., Order]
) -> None:
    order = place(customer=customer)
    client.force_login(staff)
    html = client.get(reverse("orders:order_list")).content.decode()
    assert "All orders" in html
    assert order_ref(order) in html


def test_my_orders_pages_with_the_cursor(
    client: Client, customer: Any, place: Callable[..., Order], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "ORDERS_PAGE_SIZE", 2)
    orders = [place(customer=customer) for _ in range(3)]
    client.force_login(customer)

    first = client.get(reverse("orders:order_list"))
    page = first.context["page"]
    assert [o.id for o in page.orders] == [orders[2].id, orders[1].id]
    assert page.next_cursor
    assert f'href="?{urlencode({"cursor": page.next_cursor})}"' in first.content.decode()

    second = client.get(reverse("orders:order_list"), {"cursor": page.next_cursor})
    assert [o.id for o in second.context["page"].orders] == [orders[0].id]
    assert second.context["page"].next_cursor is None
    assert "First page" in second.content.decode()

    broken = client.get(reverse("orders:order_list"), {"cursor": "not-a-cursor"})
    assert broken.status_code == 200
    assert [o.id for o in broken.context["page"].orders] == [orders[2].id, orders[1].id]
    assert "That page link is no longer valid; here is the first page." in messages_of(broken)


# --- accounts ---------------------------------------------------------------------------------
def test_signup_creates_the_user_and_logs_them_in(client: Client, mug: Any) -> None:
    assert client.get(reverse("signup")).status_code == 200

    response = client.post(
        reverse("signup"),
        {
            "username": "newbie",
            "email": "newbie@example.com",
            "password1": "a-long-Secret-phrase-9",
            "password2": "a-long-Secret-phrase-9",
        },
    )

    assert response.status_code == 302
    assert response.url == "/"
    user = get_user_model().objects.get(username="newbie")
    assert user.email == "newbie@example.com"
    assert int(client.session["_auth_user_id"]) == user.pk
    html = client.get("/").content.decode()
    assert "Logout" in html
    assert "newbie" in html


def test_signup_rejects_bad_input(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "email": "", "password1": "a-long-Secret-phrase-9", "password2": "other"},
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "email" in errors
    assert "password2" in errors
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_login_and_logout(client: Client, customer: Any) -> None:
    html = client.get(reverse("login")).content.decode()
    assert 'name="username"' in html
    assert 'name="csrfmiddlewaretoken"' in html

    wrong = client.post(reverse("login"), {"username": "ada", "password": "nope"})
    assert wrong.status_code == 200
    assert "_auth_user_id" not in client.session

    response = client.post(reverse("login"), {"username": "ada", "password": PASSWORD})
    assert response.status_code == 302
    assert response.url == "/"
    assert int(client.session["_auth_user_id"]) == customer.pk
    assert f'action="{reverse("logout")}"' in client.get("/").content.decode()

    assert client.get(reverse("logout")).status_code == 405  # logging out takes a POST form
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    html = client.get("/").content.decode()
    assert f'href="{reverse("login")}"' in html
    assert f'href="{reverse("signup")}"' in html


def test_login_keeps_the_cart_and_follows_next(client: Client, customer: Any, mug: Any) -> None:
    set_cart(client, {"MUG-1": 2})
    response = client.post(
        reverse("login"), {"username": "ada", "password": PASSWORD, "next": reverse("orders:checkout")}
    )
    assert response.url == reverse("orders:checkout")
    assert cart_of(client) == {"MUG-1": 2}


def test_header_links_depend_on_who_is_looking(client: Client, customer: Any, staff: Any) -> None:
    admin_link = f'href="{reverse("admin:index")}"'
    assert admin_link not in client.get("/").content.decode()
    client.force_login(customer)
    assert admin_link not in client.get("/").content.decode()
    client.force_login(staff)
    html = client.get("/").content.decode()
    assert admin_link in html
    assert f'href="{reverse("orders:order_list")}"' in html


# --- CSRF -------------------------------------------------------------------------------------
def test_posts_without_a_csrf_token_are_rejected(mug: Any, repository: OrderRepository) -> None:
    client = Client(enforce_csrf_checks=True)
    set_cart(client, {"MUG-1": 1})
    key = checkout_key(client)

    assert client.post(reverse("orders:cart_add", args=["MUG-1"]), {"quantity": 1}).status_code == 403
    assert client.post(reverse("orders:checkout"), checkout_data(key)).status_code == 403
    assert cart_of(client) == {"MUG-1": 1}
    assert all_orders(repository) == []

    # With the token from the cookie the same post goes through.
    token = client.cookies["csrftoken"].value
    response = client.post(reverse("orders:checkout"), {**checkout_data(key), "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert len(all_orders(repository)) == 1
