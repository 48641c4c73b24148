"""Real threads, each with its own database connection, racing over the same rows."""

from __future__ import annotations

from typing import Any

import pytest

from orders import services
from orders.domain import Actor, ConcurrentUpdate, IllegalTransition, OrderStatus, OrderValidationError
from orders.models import Order as OrderRow
from orders.models import Product
from orders.repositories.orm import DjangoOrderRepository
from orders.services import LineRequest
from tests.concurrency import race
from tests.conftest import ADDRESS

pytestmark = pytest.mark.django_db(transaction=True)


def place(quantity: int, key: str = "") -> Any:
    return services.order_place(
        repository=DjangoOrderRepository(),
        actor=Actor(kind="guest"),
        customer_id=None,
        email="race@example.com",
        lines=[LineRequest("LAST-1", quantity)],
        shipping_address=ADDRESS,
        idempotency_scope="anonymous" if key else "",
        idempotency_key=key,
    )


def test_the_last_items_are_sold_once() -> None:
    Product.objects.create(sku="LAST-1", name="Last", price_minor=100, stock=3)
    results = race(4, lambda i: place(2))
    placed = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, OrderValidationError)]
    assert (len(placed), len(refused)) == (1, 3), results
    assert Product.objects.get(sku="LAST-1").stock == 1
    assert OrderRow.objects.count() == 1


def test_one_idempotency_key_makes_one_order() -> None:
    Product.objects.create(sku="LAST-1", name="Last", price_minor=100, stock=50)
    results = race(4, lambda i: place(1, key="same-key"))
    assert all(isinstance(r, tuple) for r in results), results
    assert len({order.id for order, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert Product.objects.get(sku="LAST-1").stock == 49


def test_racing_transitions_apply_once() -> None:
    Product.objects.create(sku="LAST-1", name="Last", price_minor=100, stock=5)
    order, _ = place(1)
    repository = DjangoOrderRepository()
    results = race(
        4,
        lambda i: services.order_transition(
            repository=DjangoOrderRepository(),
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
