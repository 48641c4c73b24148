"""Issue 14, point 7: the checkout's country select, the region where a country uses one, the
returning customer's address, and the same checks of country and region in the orders API."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from orders import addresses
from orders.domain import ShippingAddress
from orders.forms import CheckoutForm
from orders.repositories import OrderRepository
from tests.conftest import ADDRESS_JSON
from tests.orders.test_api import error
from tests.orders.test_pages import all_orders, checkout_data, checkout_key, order_id_from, set_cart

pytestmark = [pytest.mark.django_db, pytest.mark.e2e, pytest.mark.usefixtures("repository")]

US_ADDRESS = {
    "name": "Grace Hopper",
    "line1": "1 Navy Way",
    "city": "Arlington",
    "postal_code": "22202",
    "country": "US",
    "region": "US-VA",
}


def place_from_form(client: Client, **overrides: str) -> Any:
    set_cart(client, {"MUG-1": 1})
    return client.post(reverse("orders:checkout"), checkout_data(checkout_key(client), **overrides))


# --- the tables -------------------------------------------------------------------------------
def test_countries_are_iso_3166_by_name() -> None:
    choices = dict(addresses.country_choices())
    assert choices["DE"] == "Germany"
    assert choices["GE"] == "Georgia"
    assert choices["US"] == "United States"
    assert len(choices) == 249
    names = [name for _, name in addresses.country_choices()]
    assert names.index("Åland Islands") < names.index("Albania")  # sorted as people look


@pytest.mark.parametrize("value", ["USA", "Germany", "XX", "", "U"])
def test_a_country_that_is_not_an_alpha_2_code_is_refused_never_truncated(value: str) -> None:
    with pytest.raises(addresses.AddressError):
        addresses.country_code(value)


@pytest.mark.parametrize(
    ("country", "value", "expected"),
    [
        ("US", "CA", "CA"),
        ("US", "us-ca", "CA"),
        ("US", "california", "CA"),
        ("AU", "WA", "WA"),
        ("CA", "Québec", "QC"),
        ("GB", "Scotland", "SCT"),
        ("US", "", ""),
    ],
)
def test_regions_are_read_as_code_iso_code_or_name(country: str, value: str, expected: str) -> None:
    assert addresses.region_code(country, value) == expected


@pytest.mark.parametrize(("country", "value"), [("US", "Narnia"), ("US", "AU-WA"), ("AU", "CA")])
def test_a_region_that_is_not_the_countrys_is_refused(country: str, value: str) -> None:
    with pytest.raises(addresses.AddressError):
        addresses.region_code(country, value)


# --- the checkout form ----------------------------------------------------------------------
def test_country_is_a_select_of_names_with_an_empty_choice_first(client: Client, mug: Any) -> None:
    set_cart(client, {"MUG-1": 1})
    html = client.get(reverse("orders:checkout")).content.decode()
    select = html.split('<select name="country"')[1].split("</select>")[0]
    assert '<option value="" selected>Choose…</option>' in select
    assert '<option value="DE">Germany</option>' in select
    assert '<option value="US">United States</option>' in select
    region = html.split('<select name="region"')[1].split("</select>")[0]
    assert '<optgroup label="United States">' in region
    assert '<option value="US-CA">California</option>' in region
    assert '<optgroup label="Canada">' in region
    assert '<optgroup label="Australia">' in region
    assert 'src="/static/js/checkout.js"' in html


@pytest.mark.parametrize("country", ["USA", "Germany", "XX"])
def test_checkout_refuses_a_country_that_is_not_in_the_list(
    client: Client, mug: Any, repository: OrderRepository, country: str
) -> None:
    response = place_from_form(client, country=country)
    assert response.status_code == 200
    assert response.context["form"].errors["country"] == ["Choose a country from the list."]
    assert all_orders(repository) == []


def test_checkout_stores_the_chosen_country_code(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    order = repository.get(order_id_from(place_from_form(client, country="DE")))
    assert order.shipping_address.country == "DE"
    assert order.shipping_address.region == ""


def test_a_region_is_required_for_the_united_states(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    response = place_from_form(client, **{**US_ADDRESS, "region": ""})
    assert response.status_code == 200
    assert response.context["form"].errors["region"] == ["Choose a state of United States."]
    assert all_orders(repository) == []

    order = repository.get(order_id_from(place_from_form(client, **US_ADDRESS)))
    assert order.shipping_address.country == "US"
    assert order.shipping_address.region == "VA"
    assert order.shipping_address.as_dict()["region"] == "VA"


def test_a_region_of_another_country_is_refused(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    response = place_from_form(client, **{**US_ADDRESS, "country": "AU"})
    assert response.context["form"].errors["region"] == ["That is not in Australia."]
    assert all_orders(repository) == []


def test_a_region_left_over_for_a_country_without_one_is_dropped(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    """Without JavaScript the region stays on screen: chosen, then the country changed."""
    order = repository.get(order_id_from(place_from_form(client, **{**US_ADDRESS, "country": "DE"})))
    assert (order.shipping_address.country, order.shipping_address.region) == ("DE", "")


def test_an_unknown_region_value_is_a_form_error(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    response = place_from_form(client, **{**US_ADDRESS, "region": "US-XX"})
    assert response.context["form"].errors["region"] == ["Choose a state or province from the list."]
    assert all_orders(repository) == []


def test_the_order_page_shows_the_country_by_name_and_the_region(
    client: Client, mug: Any, repository: OrderRepository
) -> None:
    order_id = order_id_from(place_from_form(client, **US_ADDRESS))
    html = client.get(reverse("orders:order_detail", args=[order_id])).content.decode()
    assert '22202 Arlington, <span class="address-region">VA</span>' in html
    assert '<span class="address-country">United States</span>' in html


# --- returning customers --------------------------------------------------------------------
def test_a_returning_customer_finds_their_last_address_filled_in(
    client: Client, customer: Any, mug: Any, repository: OrderRepository
) -> None:
    client.force_login(customer)
    set_cart(client, {"MUG-1": 1})
    first = client.get(reverse("orders:checkout"))
    assert "We filled in the address of your last order" not in first.content.decode()
    assert first.context["form"]["name"].value() is None

    order_id_from(place_from_form(client, **US_ADDRESS, line2="Suite 5", email=""))
    set_cart(client, {"MUG-1": 1})
    again = client.get(reverse("orders:checkout"))

    form = again.context["form"]
    values = {name: form[name].value() for name in ("name", "line1", "line2", "city", "postal_code")}
    assert values == {
        "name": "Grace Hopper",
        "line1": "1 Navy Way",
        "line2": "Suite 5",
        "city": "Arlington",
        "postal_code": "22202",
    }
    assert (form["country"].value(), form["region"].value()) == ("US", "US-VA")
    html = again.content.decode()
    assert '<option value="US" selected>United States</option>' in html
    assert '<option value="US-VA" selected>Virginia</option>' in html
    assert "We filled in the address of your last order" in html


def test_only_the_customers_own_last_address_is_offered(
    client: Client, customer: Any, staff: Any, mug: Any
) -> None:
    """Staff see every order in lists; their checkout still offers only their own address."""
    client.force_login(customer)
    place_from_form(client, **US_ADDRESS, email="")
    client.force_login(staff)
    set_cart(client, {"MUG-1": 1})
    assert client.get(reverse("orders:checkout")).context["form"]["name"].value() is None


def test_initial_for_an_address_without_region() -> None:
    initial = CheckoutForm.initial_for_address(ShippingAddress.from_dict(ADDRESS_JSON))
    assert initial["country"] == "GB"
    assert initial["region"] == ""


# --- the API ------------------------------------------------------------------------------------
@pytest.fixture
def api(customer: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(customer)
    return client


def order_body(**address: str) -> dict[str, Any]:
    return {"lines": [{"sku": "MUG-1", "quantity": 1}], "shipping_address": {**ADDRESS_JSON, **address}}


@pytest.mark.parametrize("country", ["USA", "Germany", "XX", "U"])
def test_the_api_refuses_a_country_that_is_not_iso_3166(
    api: APIClient, mug: Any, repository: OrderRepository, country: str
) -> None:
    body = error(api.post("/api/orders", order_body(country=country), format="json"), 400, "invalid")
    assert "country" in body["fields"]["shipping_address"]
    assert all_orders(repository) == []


def test_the_api_refuses_a_region_that_is_not_the_countrys(
    api: APIClient, mug: Any, repository: OrderRepository
) -> None:
    body = error(
        api.post("/api/orders", order_body(country="US", region="Narnia"), format="json"), 400, "invalid"
    )
    assert "region" in body["fields"]["shipping_address"]
    assert all_orders(repository) == []


def test_the_api_stores_the_region_code_and_shows_it(
    api: APIClient, mug: Any, repository: OrderRepository
) -> None:
    response = api.post("/api/orders", order_body(country="us", region="Virginia"), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["shipping_address"]["country"] == "US"
    assert response.json()["shipping_address"]["region"] == "VA"
    [order] = all_orders(repository)
    assert (order.shipping_address.country, order.shipping_address.region) == ("US", "VA")


def test_the_api_contract_is_kept_without_a_region(api: APIClient, mug: Any) -> None:
    """Clients that never sent a region (the old contract) still place orders, also in the US."""
    body = order_body(country="US")
    del body["shipping_address"]["region"]
    response = api.post("/api/orders", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["shipping_address"]["region"] == ""


# --- the admin's address edit keeps the region --------------------------------------------------
def test_staff_editing_an_address_keep_and_check_its_region(
    admin_client: Client, client: Client, mug: Any, repository: OrderRepository
) -> None:
    order = repository.get(order_id_from(place_from_form(client, **US_ADDRESS)))
    url = f"/admin/orders/order/{order.id}/change/"

    def edit(**changes: str) -> Any:
        data = {"_op": "edit", **order.shipping_address.as_dict(), "notes": "", "version": order.version}
        return admin_client.post(url, {**data, **changes})

    edit(city="Richmond")
    stored = repository.get(order.id)
    assert (stored.shipping_address.city, stored.shipping_address.region) == ("Richmond", "VA")

    order = stored
    bad = edit(region="Narnia", country="Germany")
    assert set(bad.context["edit_form"].errors) == {"country"}
    bad = edit(region="Narnia")
    assert bad.context["edit_form"].errors["region"] == ["“Narnia” is not a region of United States."]
    assert repository.get(order.id).shipping_address.region == "VA"
