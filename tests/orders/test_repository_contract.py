"""The `OrderRepository` contract: one suite, run against every adapter.

An adapter is added to `ADAPTERS` with a factory that returns a fresh, empty repository; the
tests themselves must not change for it. They use only the port's methods and the domain types.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from orders.domain import (
    Actor,
    ConcurrentUpdate,
    DuplicateOrder,
    EventType,
    Order,
    OrderLine,
    OrderNotFound,
    OrderQuery,
    OrderStatus,
    OrderValidationError,
    OutboxMessage,
    ShippingAddress,
    utcnow,
)
from orders.repositories import OrderRepository
from orders.repositories.dynamodb import DynamoDbOrderRepository
from orders.repositories.orm import DjangoOrderRepository
from tests.orders.factories import ProductFactory, UserFactory

ADAPTERS: dict[str, Callable[[], OrderRepository]] = {
    "orm": DjangoOrderRepository,
    "dynamodb": DynamoDbOrderRepository,
}
# The fixtures an adapter needs (its stand-in server, wiped), requested for its tests only.
ADAPTER_FIXTURES: dict[str, list[str]] = {
    "dynamodb": ["dynamodb"],
}

pytestmark = pytest.mark.django_db(transaction=True)


# The ORM's cases are about that adapter itself: left out of the DynamoDB pass (orm_only).
@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.orm_only] if name == "orm" else []) for name in sorted(ADAPTERS)
    ]
)
def repo(request: pytest.FixtureRequest) -> OrderRepository:
    for fixture in ADAPTER_FIXTURES.get(request.param, []):
        request.getfixturevalue(fixture)
    return ADAPTERS[request.param]()


@pytest.fixture
def product_id(db: None) -> int:
    # The catalog lives in the project's database whatever the order backend is.
    return ProductFactory(sku="CONTRACT-1", price_minor=250).pk


@pytest.fixture
def cid(db: None) -> list[int]:
    """Ids of four customers (the users table is the project's database's, whatever the backend)."""
    return [UserFactory(username=f"contract{i}").pk for i in range(4)]


@pytest.fixture
def new_order(product_id: int) -> Callable[..., Order]:
    def make(
        *,
        customer_id: int | None = None,
        status: OrderStatus = OrderStatus.PENDING_PAYMENT,
        created_at: Any = None,
        quantity: int = 2,
        idempotency_key: str = "",
    ) -> Order:
        at = created_at or utcnow()
        line = OrderLine(
            product_id=product_id, sku="CONTRACT-1", name="Thing", unit_price_minor=250, quantity=quantity
        )
        order = Order(
            id=uuid.uuid4(),
            status=status,
            currency="EUR",
            lines=[line],
            subtotal_minor=line.line_total_minor,
            shipping_minor=100,
            total_minor=line.line_total_minor + 100,
            email="buyer@example.com",
            shipping_address=ShippingAddress(
                name="Émile Zola",
                line1="1 Rue X",
                line2="Bât. B",
                city="Paris",
                postal_code="75001",
                country="FR",
            ),
            notes="Leave at the door ☂",
            customer_id=customer_id,
            created_at=at,
            updated_at=at,
            idempotency_scope="user:1" if idempotency_key else "",
            idempotency_key=idempotency_key,
            request_fingerprint="f" * 64 if idempotency_key else "",
        )
        order.record(type=EventType.CREATED, actor=Actor.system("test"), to_status=status, at=at)
        return order

    return make


def outbox_for(order: Order, event_type: str = "order.test") -> OutboxMessage:
    return OutboxMessage(
        order_id=order.id, event_type=event_type, order_version=order.version, payload={"n": 1, "s": "ü"}
    )


def test_add_then_get_returns_the_same_order(repo: OrderRepository, new_order: Callable[..., Order]) -> None:
    order = new_order(customer_id=None)
    repo.add(order)
    loaded = repo.get(order.id)
    for name in [
        "id",
        "status",
        "currency",
        "lines",
        "subtotal_minor",
        "shipping_minor",
        "total_minor",
        "email",
        "shipping_address",
        "notes",
        "customer_id",
        "version",
        "last_event_sequence",
    ]:
        assert getattr(loaded, name) == getattr(order, name), name
    assert loaded.created_at == order.created_at
    assert loaded.pending_events == []
    assert isinstance(loaded.total_minor, int)


def test_add_stores_events_and_outbox_and_clears_pending(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    message = outbox_for(order)
    repo.add(order, outbox=[message])
    assert order.pending_events == []
    events = repo.events(order.id)
    assert [(e.sequence, e.type, e.to_status, e.actor) for e in events] == [
        (1, EventType.CREATED, OrderStatus.PENDING_PAYMENT, "system:test")
    ]
    stored = repo.outbox(order.id)
    assert [(m.id, m.event_type, m.order_version, m.payload) for m in stored] == [
        (message.id, "order.test", 1, {"n": 1, "s": "ü"})
    ]


def test_get_of_a_missing_order_raises_not_found(repo: OrderRepository) -> None:
    with pytest.raises(OrderNotFound):
        repo.get(uuid.uuid4())


def test_add_twice_raises_duplicate_and_keeps_the_first(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    repo.add(order)
    again = new_order()
    again.id = order.id
    again.email = "other@example.com"
    with pytest.raises(DuplicateOrder):
        repo.add(again, outbox=[outbox_for(again)])
    assert repo.get(order.id).email == "buyer@example.com"
    assert repo.outbox(order.id) == []


def test_idempotency_key_is_unique_per_scope(repo: OrderRepository, new_order: Callable[..., Order]) -> None:
    first = new_order(idempotency_key="key-1")
    repo.add(first)
    assert repo.get_by_idempotency_key(scope="user:1", key="key-1").id == first.id
    assert repo.get_by_idempotency_key(scope="user:2", key="key-1") is None
    assert repo.get_by_idempotency_key(scope="user:1", key="key-2") is None
    second = new_order(idempotency_key="key-1")
    with pytest.raises(DuplicateOrder):
        repo.add(second)
    with pytest.raises(OrderNotFound):
        repo.get(second.id)


def test_save_bumps_the_version_and_appends_events_and_outbox(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    repo.add(order)
    order.transition_to(OrderStatus.PAID, actor=Actor.system())
    message = outbox_for(order, "order.paid")
    repo.save(order, outbox=[message])
    assert order.version == 2
    loaded = repo.get(order.id)
    assert (loaded.status, loaded.version, loaded.last_event_sequence) == (OrderStatus.PAID, 2, 2)
    assert [e.type for e in repo.events(order.id)] == [EventType.CREATED, EventType.STATUS_CHANGED]
    assert [m.event_type for m in repo.outbox(order.id)] == ["order.paid"]


def test_stale_save_raises_concurrent_update_and_writes_nothing(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    repo.add(order)
    first, second = repo.get(order.id), repo.get(order.id)
    first.transition_to(OrderStatus.PAID, actor=Actor.system())
    repo.save(first, outbox=[outbox_for(first, "order.paid")])

    second.transition_to(OrderStatus.CANCELLED, actor=Actor.system())
    with pytest.raises(ConcurrentUpdate):
        repo.save(second, outbox=[outbox_for(second, "order.cancelled")])

    loaded = repo.get(order.id)
    assert (loaded.status, loaded.version) == (OrderStatus.PAID, 2)
    assert [e.to_status for e in repo.events(order.id)] == [OrderStatus.PENDING_PAYMENT, OrderStatus.PAID]
    assert [m.event_type for m in repo.outbox(order.id)] == ["order.paid"]


def test_save_of_a_missing_order_raises_not_found(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    with pytest.raises(OrderNotFound):
        repo.save(new_order())


def test_a_failed_add_leaves_no_order_and_no_event(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    order = new_order()
    broken = OutboxMessage(
        order_id=order.id, event_type="order.broken", order_version=1, payload={"x": object()}
    )
    with pytest.raises((TypeError, ValueError)):
        repo.add(order, outbox=[outbox_for(order), broken])
    with pytest.raises(OrderNotFound):
        repo.get(order.id)
    assert repo.events(order.id) == []
    assert repo.outbox(order.id) == []


def test_list_filters_by_customer_status_and_dates(
    repo: OrderRepository, new_order: Callable[..., Order], cid: list[int]
) -> None:
    base = utcnow() - timedelta(days=10)
    mine_old = new_order(customer_id=cid[0], created_at=base)
    mine_new = new_order(customer_id=cid[0], created_at=base + timedelta(days=5))
    mine_paid = new_order(customer_id=cid[0], created_at=base + timedelta(days=6), status=OrderStatus.PAID)
    theirs = new_order(customer_id=cid[1], created_at=base + timedelta(days=5, hours=1))
    guest = new_order(customer_id=None, created_at=base + timedelta(days=7))
    for order in [mine_old, mine_new, mine_paid, theirs, guest]:
        repo.add(order)

    def ids(**filters: Any) -> list[uuid.UUID]:
        return [o.id for o in repo.list(OrderQuery(limit=50, **filters)).orders]

    assert ids(customer_id=cid[0]) == [mine_paid.id, mine_new.id, mine_old.id]
    assert ids() == [guest.id, mine_paid.id, theirs.id, mine_new.id, mine_old.id]
    assert ids(status=OrderStatus.PAID) == [mine_paid.id]
    assert ids(customer_id=cid[0], status=OrderStatus.PENDING_PAYMENT) == [mine_new.id, mine_old.id]
    assert set(ids(created_from=base + timedelta(days=5), created_to=base + timedelta(days=7))) == {
        mine_new.id,
        theirs.id,
        mine_paid.id,
    }
    assert ids(customer_id=cid[0], newest_first=False) == [mine_old.id, mine_new.id, mine_paid.id]
    assert ids(customer_id=cid[2]) == []


@pytest.mark.parametrize("newest_first", [True, False])
def test_cursor_pages_cover_every_order_once(
    repo: OrderRepository, new_order: Callable[..., Order], newest_first: bool, cid: list[int]
) -> None:
    base = utcnow()
    orders = [new_order(customer_id=cid[0], created_at=base + timedelta(seconds=i // 2)) for i in range(11)]
    for order in orders:  # pairs share a timestamp: the id breaks the tie
        repo.add(order)
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = repo.list(OrderQuery(customer_id=cid[0], limit=4, cursor=cursor, newest_first=newest_first))
        pages += 1
        seen += [o.id for o in page.orders]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(o.id for o in orders)
    assert len(seen) == len(set(seen))
    times = [repo.get(i).created_at for i in seen]
    assert times == sorted(times, reverse=newest_first)


def test_a_tampered_or_foreign_cursor_is_refused(
    repo: OrderRepository, new_order: Callable[..., Order], cid: list[int]
) -> None:
    for _ in range(3):
        repo.add(new_order(customer_id=cid[0]))
    cursor = repo.list(OrderQuery(customer_id=cid[0], limit=1)).next_cursor
    assert cursor
    with pytest.raises(OrderValidationError):
        repo.list(OrderQuery(customer_id=cid[0], limit=1, cursor=cursor[:-2] + "xx"))
    with pytest.raises(OrderValidationError):  # a cursor of one customer's list on another's
        repo.list(OrderQuery(customer_id=cid[1], limit=1, cursor=cursor))


def test_list_finds_orders_by_email_and_reference_with_the_other_filters(
    repo: OrderRepository, new_order: Callable[..., Order], cid: list[int]
) -> None:
    base = utcnow() - timedelta(days=3)
    ada_old = new_order(customer_id=cid[0], created_at=base)
    ada_new = new_order(customer_id=cid[0], created_at=base + timedelta(days=1))
    ada_paid = new_order(customer_id=None, created_at=base + timedelta(days=2), status=OrderStatus.PAID)
    other = new_order(customer_id=cid[1], created_at=base + timedelta(days=1, hours=1))
    ada_old.email = "Ada@Example.com"
    ada_new.email = "ada@example.com"
    ada_paid.email = "ADA@EXAMPLE.COM"
    other.email = "grace@example.com"
    for order in [ada_old, ada_new, ada_paid, other]:
        repo.add(order)

    def ids(**filters: Any) -> list[uuid.UUID]:
        return [o.id for o in repo.list(OrderQuery(limit=50, **filters)).orders]

    assert ids(email="ada@example.com") == [ada_paid.id, ada_new.id, ada_old.id]
    assert ids(email=" ADA@example.COM ") == [ada_paid.id, ada_new.id, ada_old.id]
    assert ids(email="ada@example.com", newest_first=False) == [ada_old.id, ada_new.id, ada_paid.id]
    assert ids(email="ada@example.com", status=OrderStatus.PAID) == [ada_paid.id]
    assert ids(email="ada@example.com", customer_id=cid[0]) == [ada_new.id, ada_old.id]
    assert ids(email="ada@example.com", created_from=base + timedelta(hours=1)) == [ada_paid.id, ada_new.id]
    assert ids(email="ada@example") == []
    assert ids(email="grace@example.com", customer_id=cid[0]) == []

    assert ada_new.reference == ada_new.id.hex[:8].upper()
    assert ids(reference=ada_new.reference) == [ada_new.id]
    assert ids(reference=ada_new.reference.lower()) == [ada_new.id]
    assert ids(reference=ada_new.reference, email="ada@example.com", customer_id=cid[0]) == [ada_new.id]
    assert ids(reference=ada_new.reference, status=OrderStatus.PAID) == []
    assert ids(reference=other.reference, email="ada@example.com") == []
    unused = next(
        f"{n:08x}"
        for n in range(16)
        if f"{n:08x}" not in {o.reference.lower() for o in [ada_old, ada_new, ada_paid, other]}
    )
    assert ids(reference=unused) == []
    with pytest.raises(OrderValidationError):
        OrderQuery(reference="not-hex!")


def test_email_and_reference_listings_page_with_their_own_cursors(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    base = utcnow()
    orders = [new_order(created_at=base + timedelta(seconds=i)) for i in range(5)]
    for order in orders:
        repo.add(order)
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = repo.list(OrderQuery(email="buyer@example.com", limit=2, cursor=cursor))
        seen += [o.id for o in page.orders]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [o.id for o in reversed(orders)]
    first = repo.list(OrderQuery(email="buyer@example.com", limit=2)).next_cursor
    with pytest.raises(OrderValidationError):  # a cursor of one email's listing on another's
        repo.list(OrderQuery(email="other@example.com", limit=2, cursor=first))


def test_pending_outbox_is_read_oldest_first_and_marked_relayed(
    repo: OrderRepository, new_order: Callable[..., Order]
) -> None:
    first, second = new_order(), new_order()
    early = outbox_for(first, "order.early")
    repo.add(first, outbox=[early])
    late = OutboxMessage(
        order_id=second.id,
        event_type="order.late",
        order_version=1,
        payload={},
        created_at=utcnow() + timedelta(seconds=1),
    )
    repo.add(second, outbox=[late])
    assert [m.id for m in repo.outbox_pending(limit=10)] == [early.id, late.id]
    assert [m.id for m in repo.outbox_pending(limit=1)] == [early.id]
    assert [m.id for m in repo.outbox_pending(limit=10, order_ids=[second.id])] == [late.id]
    [pending_early, _] = repo.outbox_pending(limit=10)
    repo.outbox_mark_relayed([pending_early])
    repo.outbox_mark_relayed([pending_early])  # twice is harmless
    assert [m.id for m in repo.outbox_pending(limit=10)] == [late.id]
    assert [m.id for m in repo.outbox(first.id)] == [early.id]  # still part of the order's history


# --- DynamoDB's own contract that the adapter relies on -------------------------------------
def test_dynamodb_request_tokens_make_a_repeat_harmless_and_refuse_another_request(dynamodb: Any) -> None:
    """The adapter retries a transaction with its ClientRequestToken after a timeout. DynamoDB
    (and so its stand-in; pass 4 checks this against DynamoDB Local) answers a repeat of an
    applied transaction with success and no change, and the same token with another request
    with IdempotentParameterMismatchException."""
    from django.conf import settings

    def put(sort_key: str) -> list[dict[str, Any]]:
        item = {"pk": {"S": "TOKENTEST"}, "sk": {"S": sort_key}}
        return [
            {
                "Put": {
                    "TableName": settings.DYNAMODB_TABLE,
                    "Item": item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]

    token = uuid.uuid4().hex
    dynamodb.transact_write_items(TransactItems=put("a"), ClientRequestToken=token)
    dynamodb.transact_write_items(TransactItems=put("a"), ClientRequestToken=token)  # the repeat
    with pytest.raises(dynamodb.exceptions.IdempotentParameterMismatchException):
        dynamodb.transact_write_items(TransactItems=put("b"), ClientRequestToken=token)
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException):  # a new request is checked
        dynamodb.transact_write_items(TransactItems=put("a"), ClientRequestToken=uuid.uuid4().hex)
    stored = dynamodb.query(
        TableName=settings.DYNAMODB_TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "TOKENTEST"}},
    )["Items"]
    assert [item["sk"]["S"] for item in stored] == ["a"]
