"""The order-placing path made cheaper for issue 15 still answers and stores what it did before.

- the API's answer to a new order shows the audit trail it wrote, exactly as reading it back does;
- the stock is taken in the same transaction as the order: a shortage stores no order;
- a duplicate idempotency key inside a caller's transaction leaves that transaction usable;
- the anonymous hold reads no order while the units remembered leave room;
- the Redis cache reuses one client per connection pool.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from core.cache import RedisCacheClient
from orders import selectors, services
from orders.domain import Actor, DuplicateOrder, Order, ShippingAddress
from orders.models import Product
from orders.repositories import OrderRepository
from orders.serializers import OrderDetailOutputSerializer, OrderEventOutputSerializer
from tests.conftest import ADDRESS_JSON

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("repository")]


def order_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lines": [{"sku": "MUG-1", "quantity": 2}, {"sku": "TEE-1", "quantity": 1}],
        "shipping_address": dict(ADDRESS_JSON),
        "email": "guest@example.com",
    }
    body.update(overrides)
    return body


def test_the_answer_to_a_new_order_shows_the_trail_as_read_back(
    api_as: Any, customer: Any, mug: Any, tee: Any, repository: OrderRepository
) -> None:
    client = api_as(customer)
    created = client.post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert created.status_code == 201, created.content
    read = client.get(f"/api/orders/{created.json()['id']}")
    assert read.status_code == 200
    assert created.json() == read.json()
    assert [event["type"] for event in created.json()["events"]] == ["created"]
    # The shape is OrderDetailOutputSerializer's, field for field and in the same order.
    stored = repository.get(uuid.UUID(created.json()["id"]))
    events = selectors.order_events_for(repository=repository, order=stored, user=customer)
    expected = JSONRenderer().render(OrderDetailOutputSerializer(stored, context={"events": events}).data)
    assert created.content == expected
    # A replay reads the trail back and answers the same.
    replay = client.post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert replay.status_code == 200
    assert replay.json() == read.json()


def test_a_guest_answer_shows_the_trail_a_guest_may_read(
    api: APIClient, mug: Any, tee: Any, repository: OrderRepository
) -> None:
    created = api.post("/api/orders", order_body(), format="json")
    assert created.status_code == 201, created.content
    stored = repository.get(uuid.UUID(created.json()["id"]))
    as_read = selectors.order_events_for(repository=repository, order=stored, user=AnonymousUser())
    assert created.json()["events"] == OrderEventOutputSerializer(as_read, many=True).data
    assert [event["type"] for event in created.json()["events"]] == ["created"]


def test_a_shortage_stores_no_order_and_takes_no_stock(
    api: APIClient, mug: Any, tee: Any, repository: OrderRepository
) -> None:
    # TEE-1 has 5: the mugs would be taken first (lower id or not), then the tees refused.
    refused = api.post(
        "/api/orders",
        order_body(lines=[{"sku": "MUG-1", "quantity": 1}, {"sku": "TEE-1", "quantity": 6}]),
        format="json",
        HTTP_IDEMPOTENCY_KEY="short-1",
    )
    assert refused.status_code == 400, refused.content
    assert refused.json()["fields"]["lines"] == ["Only 5 of TEE-1 left in stock; 6 asked for."]
    assert dict(Product.objects.values_list("sku", "stock")) == {"MUG-1": 10, "TEE-1": 5}
    assert repository.get_by_idempotency_key(scope="anonymous", key="short-1") is None
    # The same key then places the order once there is stock.
    Product.objects.filter(sku="TEE-1").update(stock=6)
    placed = api.post(
        "/api/orders",
        order_body(lines=[{"sku": "MUG-1", "quantity": 1}, {"sku": "TEE-1", "quantity": 6}]),
        format="json",
        HTTP_IDEMPOTENCY_KEY="short-1",
    )
    assert placed.status_code == 201, placed.content
    assert dict(Product.objects.values_list("sku", "stock")) == {"MUG-1": 9, "TEE-1": 0}


@pytest.mark.orm_only
def test_a_duplicate_inside_a_transaction_leaves_it_usable(mug: Any, repository: OrderRepository) -> None:
    def place(key: str) -> Order:
        order, _ = services.order_place(
            repository=repository,
            actor=Actor(kind="guest", label="g@example.com"),
            customer_id=None,
            email="g@example.com",
            lines=[services.LineRequest(sku="MUG-1", quantity=1)],
            shipping_address=ShippingAddress.from_dict(dict(ADDRESS_JSON)),
            idempotency_scope="anonymous",
            idempotency_key=key,
        )
        return order

    first = place("dup-1")
    with transaction.atomic():
        with pytest.raises(DuplicateOrder):
            repository.add(first)
        # Still usable: the refused insert was rolled back to its savepoint only.
        assert Product.objects.get(sku="MUG-1").stock == 9
        assert repository.get(first.id).id == first.id


class CountingRepository:
    """The configured repository, counting the orders read by id."""

    def __init__(self, inner: OrderRepository) -> None:
        self.inner = inner
        self.reads = 0
        self.shares_database_transaction = inner.shares_database_transaction

    def get(self, order_id: uuid.UUID) -> Order:
        self.reads += 1
        return self.inner.get(order_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_anonymous_hold_reads_orders_only_near_the_limit(
    mug: Any, repository: OrderRepository, settings: Any
) -> None:
    settings.ORDER_ANON_HOLD_MAX_UNITS = 5
    Product.objects.filter(sku="MUG-1").update(stock=100)
    counting = CountingRepository(repository)

    address = f"192.0.2.{uuid.uuid4().int % 200 + 1}"

    def place_from(quantity: int) -> None:
        services.order_place(
            repository=counting,  # type: ignore[arg-type]
            actor=Actor(kind="guest", label="g@example.com"),
            customer_id=None,
            email="g@example.com",
            lines=[services.LineRequest(sku="MUG-1", quantity=quantity)],
            shipping_address=ShippingAddress.from_dict(dict(ADDRESS_JSON)),
            client_address=address,
        )

    place_from(2)
    place_from(2)
    assert counting.reads == 0  # 4 of 5: room without looking at the orders
    with pytest.raises(services.HoldLimitExceeded):
        place_from(2)
    assert counting.reads == 2  # near the limit: both orders read, both still hold
    place_from(1)  # 4 + 1: room again, nothing read
    assert counting.reads == 2
    with pytest.raises(services.HoldLimitExceeded):
        place_from(1)
    assert counting.reads == 5  # the three orders read


def test_the_redis_cache_keeps_one_client_per_pool() -> None:
    # redis-py connects lazily: no server is needed to build clients.
    client = RedisCacheClient(["redis://127.0.0.1:6379/15"])
    assert client.get_client() is client.get_client(write=True)
