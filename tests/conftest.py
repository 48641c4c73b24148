"""Fixtures shared by every test: users, API clients, the catalog and the order repository."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from orders.domain import Actor, Order, ShippingAddress
from orders.repositories import OrderRepository, get_order_repository
from orders.services import LineRequest, order_place
from tests.orders.factories import ProductFactory, UserFactory
from tests.polling import eventually

# The Chromium fixtures (`browser`, `page`) of the browser tests.
pytest_plugins = ["tests.browser"]

ADDRESS = ShippingAddress(
    name="Ada Lovelace", line1="12 Analytical Row", city="London", postal_code="N1 9GU", country="GB"
)
ADDRESS_JSON = ADDRESS.as_dict()


def pytest_sessionstart(session: pytest.Session) -> None:
    """A run killed mid-way (Ctrl-C twice, SIGKILL) leaves SQLite's -wal and -shm files beside the
    test database; Django would make the next run's database afresh but keep them, and every test
    would then fail with "disk I/O error". Start from nothing instead."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        name = database.get("TEST", {}).get("NAME")
        if name and name != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{name}{suffix}").unlink(missing_ok=True)


DB_FIXTURES = frozenset({"db", "transactional_db", "live_server", "django_db_reset_sequences"})


@pytest.fixture(autouse=True)
def _empty_shared_cache(request: pytest.FixtureRequest, django_db_blocker: Any) -> None:
    """Rate-limit windows, login lockouts, held units and locks live in the shared cache: the
    database cache table (which the database flush between tests leaves alone) or Redis. Every
    test that touches the database starts with none, so budgets never carry over between tests."""
    if request.node.get_closest_marker("django_db") is None and not DB_FIXTURES & set(request.fixturenames):
        return
    request.getfixturevalue("django_db_setup")  # the test database, never the real one
    from django.core.cache import caches

    with django_db_blocker.unblock():
        caches["shared"].clear()


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Figures are written through at once (no flush thread writing beside the test's transaction).
    settings.MONITORING_FLUSH_SECONDS = 0


@pytest.fixture
def repository(db: None, request: pytest.FixtureRequest) -> Iterator[OrderRepository]:
    """The configured adapter (`settings.ORDER_REPOSITORY`), a fresh instance for each test.

    When that is DynamoDB (ORDER_REPOSITORY=dynamodb, CI's third pass), the test gets the wiped
    table of the `dynamodb` fixture, and so does everything in the app that stores orders.
    """
    from django.conf import settings as django_settings
    from django.utils.module_loading import import_string

    from orders.repositories.base import _load
    from orders.repositories.dynamodb import DynamoDbOrderRepository

    adapter = import_string(django_settings.ORDER_REPOSITORY)
    if isinstance(adapter, type) and issubclass(adapter, DynamoDbOrderRepository):
        request.getfixturevalue("dynamodb")
    _load.cache_clear()  # no adapter instance carries over between tests
    yield get_order_repository()
    _load.cache_clear()


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


# --- DynamoDB (moto) --------------------------------------------------------------------------
# One moto server per session for the DynamoDB order repository (the integrations tests start
# their own for SNS); each test that asks for `dynamodb` gets it wiped, the settings pointed at
# it and the orders table created.
# DYNAMODB_TEST_ENDPOINT=http://127.0.0.1:PORT uses that DynamoDB instead of starting moto
# (DynamoDB Local, whose validation is the real service's: bin/test-dynamodb-local); there is no
# reset endpoint there, so each test deletes and re-creates the table.


@pytest.fixture(scope="session")
def dynamodb_server() -> Iterator[str]:
    import os

    if endpoint := os.environ.get("DYNAMODB_TEST_ENDPOINT", ""):
        yield endpoint
        return
    from sandbox.moto import SerialMotoServer

    server = SerialMotoServer()
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def dynamodb(dynamodb_server: str, settings: Any) -> Any:
    """A wiped DynamoDB (moto, or DYNAMODB_TEST_ENDPOINT) with the orders table.

    Returns a client of its own for raw reads.
    """
    import contextlib
    import os

    import requests

    from orders.repositories.dynamodb import create_tables, dynamodb_client

    external = bool(os.environ.get("DYNAMODB_TEST_ENDPOINT"))
    if not external:
        requests.post(f"{dynamodb_server}/moto-api/reset", timeout=60).raise_for_status()
    # DynamoDB's own endpoint setting: AWS_ENDPOINT_URL stays free for `aws_sandbox` (SNS...).
    settings.DYNAMODB_ENDPOINT_URL = dynamodb_server
    settings.AWS_REGION = "us-east-1"
    settings.AWS_ACCESS_KEY_ID = "testing"
    settings.AWS_SECRET_ACCESS_KEY = "testing"
    settings.DYNAMODB_TABLE = "cis-orders-test"
    client = dynamodb_client()
    if external:
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=settings.DYNAMODB_TABLE)
        eventually(
            lambda: settings.DYNAMODB_TABLE not in client.list_tables()["TableNames"],
            what=f"{settings.DYNAMODB_TABLE} to be deleted",
        )
    create_tables(client)
    return client


# --- end DynamoDB -----------------------------------------------------------------------------
