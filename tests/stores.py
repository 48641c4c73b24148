"""Order storage in tests, whichever adapter `settings.ORDER_REPOSITORY` names (the ORM, or DynamoDB
on CI's DynamoDB pass): read what is stored through the repository, fail a write the way a crash
would, point a subprocess or a moto reset at the store of the running test."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.conf import settings
from django.utils.module_loading import import_string

from orders.domain import Order, OrderQuery
from orders.repositories import OrderRepository


def orders_in_dynamodb() -> bool:
    """Whether the configured adapter stores orders in DynamoDB."""
    from orders.repositories.dynamodb import DynamoDbOrderRepository

    adapter = import_string(settings.ORDER_REPOSITORY)
    return isinstance(adapter, type) and issubclass(adapter, DynamoDbOrderRepository)


def stored_orders(repository: OrderRepository) -> list[Order]:
    """Every stored order, oldest first, read page by page through the repository."""
    orders: list[Order] = []
    cursor: str | None = None
    while True:
        page = repository.list(OrderQuery(newest_first=False, limit=100, cursor=cursor))
        orders.extend(page.orders)
        if not page.next_cursor:
            return orders
        cursor = page.next_cursor


class CrashingWrites:
    """Mixed into the configured adapter by `crashing`: `add` and `save` die mid-write.

    With the ORM the rows are written, then the error rises inside the service's transaction,
    which rolls them back; DynamoDB's one TransactWriteItems call is all or nothing, so there
    the failed write writes nothing. `attempted` is the last order it was asked to write.
    """

    writes_before_failing = True
    attempted: Order | None = None

    def add(self, order: Order, *, outbox: Any = ()) -> None:
        self.attempted = order
        if self.writes_before_failing:
            super().add(order, outbox=outbox)
        raise RuntimeError("the process died here")

    def save(self, order: Order, *, outbox: Any = ()) -> None:
        self.attempted = order
        if self.writes_before_failing:
            super().save(order, outbox=outbox)
        raise RuntimeError("the process died here")


def crashing(repository: OrderRepository) -> Any:
    """A fresh instance of `repository`'s adapter whose writes die mid-way (`CrashingWrites`)."""
    adapter = type(repository)
    crashing_adapter = type(f"Crashing{adapter.__name__}", (CrashingWrites, adapter), {})
    crashing_adapter.writes_before_failing = not orders_in_dynamodb()
    return crashing_adapter()


def store_env() -> dict[str, str]:
    """The variables that point a subprocess at this test's order store (none for the ORM, whose
    database the caller passes)."""
    if not orders_in_dynamodb():
        return {}
    return {
        "DYNAMODB_ENDPOINT_URL": settings.DYNAMODB_ENDPOINT_URL,
        "DYNAMODB_TABLE": settings.DYNAMODB_TABLE,
        "AWS_REGION": settings.AWS_REGION,
        "AWS_ACCESS_KEY_ID": settings.AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": settings.AWS_SECRET_ACCESS_KEY,
    }


def reset_moto(url: str, request: pytest.FixtureRequest) -> None:
    """Wipe the moto server at `url`, keeping the test's orders table.

    moto keeps every service's state once per process, whichever of its servers is asked, so a
    reset for SNS also drops the table of the `dynamodb` fixture (and that fixture's reset drops
    the SNS topic). When the test stores orders in DynamoDB, its table is set up first and made
    again after the reset.
    """
    from orders.repositories.dynamodb import create_tables, dynamodb_client

    keep_orders = orders_in_dynamodb() and "repository" in request.fixturenames
    if keep_orders:
        request.getfixturevalue("repository")
    requests.post(f"{url}/moto-api/reset", timeout=60).raise_for_status()
    if keep_orders:
        create_tables(dynamodb_client())
