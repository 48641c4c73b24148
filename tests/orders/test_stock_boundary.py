"""Stock (in the database) and orders in DynamoDB: no transaction spans both, so each stock move
is settled by the outcome of the order write it belongs to (`orders.services`, "Stock and the
order store"). Both failure orders, with real failures of moto's DynamoDB and of the database."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError
from django.db import connection, transaction

from orders import services
from orders.domain import Actor, ConcurrentUpdate, DuplicateOrder, Order, OrderQuery, OrderStatus, utcnow
from orders.models import PendingStockChange, Product
from orders.repositories.dynamodb import DynamoDbOrderRepository
from orders.repositories.orm import DjangoOrderRepository
from orders.services import STOCK_SETTLE_AFTER, LineRequest
from tests.conftest import ADDRESS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("dynamodb")]

LATER = STOCK_SETTLE_AFTER + timedelta(seconds=1)


@pytest.fixture
def repo() -> DynamoDbOrderRepository:
    return DynamoDbOrderRepository()


def place(repository: Any, quantity: int = 3, **kwargs: Any) -> Order:
    order, _ = services.order_place(
        repository=repository,
        actor=Actor(kind="guest"),
        customer_id=None,
        email="guest@example.com",
        lines=[LineRequest(sku="MUG-1", quantity=quantity)],
        shipping_address=ADDRESS,
        **kwargs,
    )
    return order


def stock() -> int:
    return Product.objects.get(sku="MUG-1").stock


def orders_in(repository: Any) -> list[Order]:
    return repository.list(OrderQuery()).orders


def sweep(repository: Any, *, after: timedelta = LATER) -> int:
    return services.stock_changes_settle(repository=repository, now=utcnow() + after)


@pytest.fixture
def database_refuses_settling() -> Iterator[Callable[[], None]]:
    """The database refuses to delete pending stock changes (a real error from the database, as
    when it is down or the connection breaks) until the returned function is called."""
    table = PendingStockChange._meta.db_table
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute(
                "CREATE FUNCTION refuse_settling() RETURNS trigger AS $$ BEGIN"
                " RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER refuse_settling BEFORE DELETE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION refuse_settling()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER refuse_settling BEFORE DELETE ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    refusing = [True]

    def settle_again() -> None:
        if refusing.pop(0) if refusing else False:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TRIGGER refuse_settling{f' ON {table}' if postgres else ''}")
                if postgres:
                    cursor.execute("DROP FUNCTION refuse_settling()")

    yield settle_again
    settle_again()


def test_a_placed_order_keeps_its_stock_and_leaves_nothing_pending(repo: Any, mug: Any) -> None:
    order = place(repo)
    assert stock() == 7
    assert not PendingStockChange.objects.exists()
    assert sweep(repo) == 0
    assert [o.id for o in orders_in(repo)] == [order.id]


# --- (a) the DynamoDB write fails after the stock was taken ---------------------------------
def test_a_refused_order_write_gives_the_stock_back_at_once(repo: Any, mug: Any, dynamodb: Any) -> None:
    # The idempotency key is already taken in the table (by an order that is gone): the write's
    # condition fails in DynamoDB after the stock was reserved in the database.
    dynamodb.put_item(
        TableName="cis-orders-test",
        Item={"pk": {"S": "IDEMP#anonymous#k-1"}, "sk": {"S": "IDEMP"}, "order_id": {"S": str(uuid.uuid4())}},
    )
    with pytest.raises(DuplicateOrder):
        place(repo, idempotency_scope="anonymous", idempotency_key="k-1")
    assert stock() == 10
    assert not PendingStockChange.objects.exists()
    assert orders_in(repo) == []


def test_an_unreachable_dynamodb_holds_the_stock_until_the_sweep_gives_it_back(
    repo: Any, mug: Any, settings: Any
) -> None:
    endpoint = settings.DYNAMODB_ENDPOINT_URL
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        settings.DYNAMODB_ENDPOINT_URL = f"http://127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(BotoCoreError):  # the write may or may not have landed: not settled yet
        place(repo)
    settings.DYNAMODB_ENDPOINT_URL = endpoint
    assert stock() == 7  # held, never oversold
    assert sweep(repo, after=timedelta(0)) == 0  # the write might still be under way
    assert stock() == 7

    assert sweep(repo) == 1  # no order holds it: given back
    assert stock() == 10
    assert orders_in(repo) == []
    assert sweep(repo) == 0


def test_a_crash_between_the_reservation_and_the_write_is_recovered_by_the_sweep(mug: Any) -> None:
    class DiesBeforeWriting(DynamoDbOrderRepository):
        def add(self, order: Order, *, outbox: Any = ()) -> None:
            raise RuntimeError("the process died here")

    with pytest.raises(RuntimeError):
        place(DiesBeforeWriting())
    assert stock() == 7
    assert sweep(DynamoDbOrderRepository()) == 1
    assert stock() == 10


# --- (b) the database fails after the DynamoDB write -----------------------------------------
def test_a_database_failure_after_the_write_keeps_the_orders_stock(
    repo: Any, mug: Any, database_refuses_settling: Callable[[], None]
) -> None:
    order = place(repo)  # stored; settling the reservation failed, and was left to the sweep
    assert [o.id for o in orders_in(repo)] == [order.id]
    assert stock() == 7
    assert PendingStockChange.objects.filter(order_id=order.id).exists()

    database_refuses_settling()  # the database is back
    assert sweep(repo) == 1  # the order holds it: kept
    assert stock() == 7
    assert not PendingStockChange.objects.exists()


def test_a_crash_after_the_write_keeps_the_orders_stock(mug: Any) -> None:
    class DiesAfterWriting(DynamoDbOrderRepository):
        def add(self, order: Order, *, outbox: Any = ()) -> None:
            super().add(order, outbox=outbox)
            raise RuntimeError("the process died here")

    with pytest.raises(RuntimeError):
        place(DiesAfterWriting())
    repo = DynamoDbOrderRepository()
    [order] = orders_in(repo)
    assert sweep(repo) == 1
    assert stock() == 7
    assert repo.get(order.id).status == OrderStatus.PENDING_PAYMENT


def test_a_wider_database_transaction_around_the_write_is_refused_before_anything(
    repo: Any, mug: Any
) -> None:
    # Its rollback would undo the reservation of an order already in DynamoDB.
    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        place(repo)
    assert stock() == 10
    assert orders_in(repo) == []
    assert not PendingStockChange.objects.exists()


# --- cancelling gives the stock back, settled the same way -----------------------------------
def test_a_cancel_the_store_refuses_gives_nothing_back(repo: Any, mug: Any) -> None:
    order = place(repo)

    class AlwaysStale(DynamoDbOrderRepository):
        def save(self, order: Order, *, outbox: Any = ()) -> None:
            order.version -= 1  # DynamoDB's version condition fails
            super().save(order, outbox=outbox)

    with pytest.raises(ConcurrentUpdate):
        services.order_cancel(repository=AlwaysStale(), order_id=order.id, actor=Actor.system())
    assert repo.get(order.id).status == OrderStatus.PENDING_PAYMENT
    assert stock() == 7
    assert not PendingStockChange.objects.exists()
    assert sweep(repo) == 0


def test_a_database_failure_after_a_cancel_is_written_gives_the_stock_back_once_later(
    repo: Any, mug: Any, database_refuses_settling: Callable[[], None]
) -> None:
    order = place(repo)
    # Placing settled nothing either (the database refuses): the reservation is still pending.
    cancelled = services.order_cancel(repository=repo, order_id=order.id, actor=Actor.system())
    assert cancelled.status == OrderStatus.CANCELLED
    assert stock() == 7

    database_refuses_settling()  # the database is back
    assert sweep(repo) == 2  # the reservation (kept: the order was stored) and the release
    assert stock() == 10
    assert sweep(repo) == 0
    assert stock() == 10


def test_the_orm_store_keeps_one_transaction_and_needs_no_settling(mug: Any) -> None:
    repository = DjangoOrderRepository()
    order = place(repository)
    services.order_cancel(repository=repository, order_id=order.id, actor=Actor.system())
    assert stock() == 10
    assert not PendingStockChange.objects.exists()
    with pytest.raises(RuntimeError), transaction.atomic():  # one unit: rolled back whole
        place(repository)
        raise RuntimeError("the caller's transaction fails")
    assert stock() == 10
    assert [o.id for o in orders_in(repository)] == [order.id]
