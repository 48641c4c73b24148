"""Fixtures shared by every test: users, API clients, the catalog and the order repository."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from orders.domain import Actor, Order, ShippingAddress
from orders.repositories import OrderRepository, get_order_repository
from orders.services import LineRequest, order_place
from tests.orders.factories import ProductFactory, UserFactory

ADDRESS = ShippingAddress(
    name="Ada Lovelace", line1="12 Analytical Row", city="London", postal_code="N1 9GU", country="GB"
)
ADDRESS_JSON = ADDRESS.as_dict()


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def repository(db: None) -> OrderRepository:
    return get_order_repository()


@pytest.fixture
def customer(db: None) -> Any:
    return UserFactory(username="ada")


@pytest.fixture
def other_customer(db: None) -> Any:
    return UserFactory(username="grace")


@pytest.fixture
def staff(db: None) -> Any:
    return UserFactory(username="staffer", is_staff=True)


@pytest.fixture
def admin_client(staff: Any) -> Client:
    """A browser session of a superuser, for the admin."""
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def api_as() -> Callable[[Any], APIClient]:
    """An API client logged in as the given user with a real JWT from /api/auth/token."""

    def make(user: Any) -> APIClient:
        client = APIClient()
        response = client.post(
            "/api/auth/token", {"username": user.username, "password": "pw-for-tests"}, format="json"
        )
        assert response.status_code == 200, response.content
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
        return client

    return make


@pytest.fixture
def mug(db: None) -> Any:
    return ProductFactory(sku="MUG-1", name="Mug", price_minor=1450, stock=10)


@pytest.fixture
def tee(db: None) -> Any:
    return ProductFactory(sku="TEE-1", name="Tee", price_minor=2400, stock=5)


@pytest.fixture
def place(repository: OrderRepository, mug: Any) -> Callable[..., Order]:
    """Place an order through the real service: `place(customer=user, lines={"MUG-1": 2})`."""

    def make(
        *, customer: Any = None, lines: dict[str, int] | None = None, email: str = "", **kwargs: Any
    ) -> Order:
        order, _ = order_place(
            repository=repository,
            actor=Actor(kind="customer", user_id=customer.pk) if customer else Actor(kind="guest"),
            customer_id=customer.pk if customer else None,
            email=email or (customer.email if customer else "guest@example.com"),
            lines=[LineRequest(sku=sku, quantity=q) for sku, q in (lines or {"MUG-1": 1}).items()],
            shipping_address=ADDRESS,
            **kwargs,
        )
        return order

    return make
