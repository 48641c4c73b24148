"""Real threads, each with its own database connection, racing over the same rows, on every
order store (stock is in the database either way; the orders in it or in DynamoDB)."""

from __future__ import annotations

from typing import Any

import pytest

from orders import services
from orders.domain import (
    Actor,
    ConcurrentUpdate,
    IllegalTransition,
    OrderQuery,
    OrderStatus,
    OrderValidationError,
)
from orders.models import PendingStockChange, Product
from orders.repositories import OrderRepository
from orders.repositories.dynamodb import DynamoDbOrderRepository
from orders.repositories.orm import DjangoOrderRepository
from orders.services import LineRequest
from tests.concurrency import race
from tests.conftest import ADDRESS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["orm", "dynamodb"])
def store(request: pytest.FixtureRequest) -> OrderRepository:
    if request.param == "dynamodb":
        request.getfixturevalue("dynamodb")
        return DynamoDbOrderRepository()
    return DjangoOrderRepository()


def place(store: OrderRepository, quantity: int, key: str = "") -> Any:
    return services.order_place(
        repository=store,
        actor=Actor(kind="guest"),
        customer_id=None,
        email="race@example.com",
        lines=[LineRequest("LAST-1", quantity)],
        shipping_address=ADDRESS,
        idempotency_scope="anonymous" if key else "",
        idempotency_key=key,
    )


def test_the_last_items_are_sold_once(store: OrderRepository) -> None:
    Product.objects.create(sku="LAST-1", name="Last", price_minor=100, stock=3)
    results = race(4, lambda i: place(store, 2))
    placed = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, OrderValidationError)]
    assert (len(placed), len(refused)) == (1, 3), results
    assert Product.objects.get(sku="LAST-1").stock == 1
    assert len(store.list(OrderQuery()).orders) == 1
    assert not PendingStockChange.objects.exists()


def test_one_idempotency_key_makes_one_order(store: OrderRepository) -> None:
    Product.objects.create(sku="LAST-1", name="Last", price_minor=100, stock=50)
    results = race(4, lambda i: place(store, 1, key="same-key"))
    assert all(isinstance(r, tuple) for r in results), results
    assert len({order.id for order, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert Product.objects.get(sku="LAST-1").stock == 49


def test_racing_transitions_apply_once(store: OrderRepository) -> None:
    Product.objects.create(sku="LAST-1", name="Last", price_minor=100, stock=5)
    order, _ = place(store, 1)
    repository = store
    results = race(
        4,
        lambda i: services.order_transition(
            repository=type(store)(),
            order_id=order.id,
            to_status=OrderStatus.PAID,
            actor=Actor.system(),
        ),
    )
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1, results
    assert all(isinstance(r, (IllegalTransition, ConcurrentUpdate)) for r in results if r not in won)
    assert [e.to_status for e in repository.events(order.id)] == [
        OrderStatus.PENDING_PAYMENT,
        OrderStatus.PAID,
    ]


def test_racing_cancels_give_the_stock_back_once(store: OrderRepository) -> None:
    Product.objects.create(sku="LAST-1", name="Last", price_minor=100, stock=5)
    order, _ = place(store, 2)
    results = race(
        4,
        lambda i: services.order_cancel(repository=type(store)(), order_id=order.id, actor=Actor.system()),
    )
    won = [r for r in results if not isinstance(r, Exception)]
    assert len(won) == 1, results
    assert all(isinstance(r, (IllegalTransition, ConcurrentUpdate)) for r in results if r not in won)
    assert Product.objects.get(sku="LAST-1").stock == 5
    assert not PendingStockChange.objects.exists()
