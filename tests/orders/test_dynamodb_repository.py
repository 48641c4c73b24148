"""The DynamoDB order repository beyond the shared contract: races, atomicity, the relay, costs.

Runs against moto (the `dynamodb` fixture in tests/conftest.py serializes its requests, as real
DynamoDB makes each request atomic); the threads here are real and race between requests.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from botocore.stub import Stubber
from django.core.management import call_command

from integrations.models import Delivery
from integrations.services import outbox_relay
from orders import services
from orders.domain import (
    Actor,
    ConcurrentUpdate,
    DuplicateOrder,
    EventType,
    IllegalTransition,
    Order,
    OrderLine,
    OrderQuery,
    OrderStatus,
    OrderValidationError,
    OutboxMessage,
    ShippingAddress,
    utcnow,
)
from orders.repositories import dynamodb as dynamodb_module
from orders.repositories.dynamodb import DynamoDbOrderRepository, create_tables, describe_tables
from orders.services import LineRequest
from tests.concurrency import race
from tests.conftest import ADDRESS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("dynamodb")]


# --- helpers --------------------------------------------------------------------------------


def make_order(
    *,
    customer_id: int | None = 7,
    created_at: datetime | None = None,
    lines: int = 1,
    idempotency_key: str = "",
    status: OrderStatus = OrderStatus.PENDING_PAYMENT,
) -> Order:
    at = created_at or utcnow()
    order_lines = [
        OrderLine(product_id=n, sku=f"SKU-{n}", name=f"Thing {n}", unit_price_minor=1999, quantity=3)
        for n in range(1, lines + 1)
    ]
    subtotal = sum(line.line_total_minor for line in order_lines)
    order = Order(
        id=uuid.uuid4(),
        status=status,
        currency="EUR",
        lines=order_lines,
        subtotal_minor=subtotal,
        shipping_minor=495,
        total_minor=subtotal + 495,
        email="buyer@example.com",
        shipping_address=ADDRESS,
        customer_id=customer_id,
        created_at=at,
        updated_at=at,
        idempotency_scope="user:7" if idempotency_key else "",
        idempotency_key=idempotency_key,
        request_fingerprint="f" * 64 if idempotency_key else "",
    )
    order.record(type=EventType.CREATED, actor=Actor.system("test"), to_status=status, at=at)
    return order


def message(order: Order, event_type: str = "order.paid", **payload: Any) -> OutboxMessage:
    return OutboxMessage(
        order_id=order.id,
        event_type=event_type,
        order_version=order.version + 1,
        payload={"order": {"id": str(order.id), "total_minor": order.total_minor}, **payload},
    )


def partition(client: Any, order_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every raw item stored under the order's partition key."""
    return client.query(
        TableName="cis-orders-test",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"ORDER#{order_id}"}},
        ConsistentRead=True,
    )["Items"]


class CallCounter:
    """Counts the API calls a boto3 client makes, by operation name."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb", self._count)

    def _count(self, model: Any, **kwargs: Any) -> None:
        self.calls[model.name] += 1

    def take(self) -> dict[str, int]:
        calls, self.calls = dict(self.calls), Counter()
        return calls


@pytest.fixture
def repo() -> DynamoDbOrderRepository:
    return DynamoDbOrderRepository()


# --- races ----------------------------------------------------------------------------------
def test_two_writers_of_one_order_exactly_one_wins(repo: DynamoDbOrderRepository, dynamodb: Any) -> None:
    order = make_order()
    repo.add(order)
    first, second = repo.get(order.id), repo.get(order.id)
    first.transition_to(OrderStatus.PAID, actor=Actor.system())
    second.transition_to(OrderStatus.CANCELLED, actor=Actor.system())
    writers = [(first, message(first, "order.paid")), (second, message(second, "order.cancelled"))]

    results = race(2, lambda i: DynamoDbOrderRepository().save(writers[i][0], outbox=[writers[i][1]]))

    won = [i for i, result in enumerate(results) if result is None]
    lost = [result for result in results if isinstance(result, ConcurrentUpdate)]
    assert (len(won), len(lost)) == (1, 1), results
    winner, winning_message = writers[won[0]]
    stored = repo.get(order.id)
    assert (stored.status, stored.version) == (winner.status, 2)
    assert [e.to_status for e in repo.events(order.id)] == [OrderStatus.PENDING_PAYMENT, winner.status]
    assert [m.id for m in repo.outbox(order.id)] == [winning_message.id]


def test_concurrent_notes_through_the_service_retry_loop_are_all_kept(
    repo: DynamoDbOrderRepository,
) -> None:
    order = make_order()
    repo.add(order)
    # services.CONCURRENT_UPDATE_ATTEMPTS is 5: each of 5 writers loses at most 4 times.
    writers = services.CONCURRENT_UPDATE_ATTEMPTS

    results = race(
        writers,
        lambda i: services.order_add_note(
            repository=DynamoDbOrderRepository(), order_id=order.id, actor=Actor.system(), text=f"note {i}"
        ),
    )

    assert not [r for r in results if isinstance(r, Exception)], results
    stored = repo.get(order.id)
    assert (stored.version, stored.last_event_sequence) == (1 + writers, 1 + writers)
    events = repo.events(order.id)
    assert [e.sequence for e in events] == list(range(1, writers + 2))
    assert sorted(e.data["text"] for e in events if e.type == EventType.NOTE_ADDED) == [
        f"note {i}" for i in range(writers)
    ]


def test_racing_transitions_store_one_change_and_one_outbox_entry(repo: DynamoDbOrderRepository) -> None:
    order = make_order()
    repo.add(order)

    results = race(
        4,
        lambda i: services.order_transition(
            repository=DynamoDbOrderRepository(),
            order_id=order.id,
            to_status=OrderStatus.PAID,
            actor=Actor.system(),
        ),
    )

    won = [r for r in results if isinstance(r, Order)]
    assert len(won) == 1, results
    assert all(isinstance(r, (IllegalTransition, ConcurrentUpdate)) for r in results if r not in won)
    assert [e.to_status for e in repo.events(order.id)] == [OrderStatus.PENDING_PAYMENT, OrderStatus.PAID]
    assert [(m.event_type, m.order_version) for m in repo.outbox(order.id)] == [("order.paid", 2)]


# --- atomicity ------------------------------------------------------------------------------
def test_a_stale_save_writes_neither_the_order_nor_its_outbox(
    repo: DynamoDbOrderRepository, dynamodb: Any
) -> None:
    order = make_order()
    repo.add(order)
    stale = repo.get(order.id)
    order.transition_to(OrderStatus.PAID, actor=Actor.system())
    repo.save(order, outbox=[message(order)])
    before = partition(dynamodb, order.id)

    stale.transition_to(OrderStatus.CANCELLED, actor=Actor.system())
    stale.notes = "changed"
    with pytest.raises(ConcurrentUpdate):
        repo.save(stale, outbox=[message(stale, "order.cancelled")])

    assert partition(dynamodb, order.id) == before
    assert len(stale.pending_events) == 1  # nothing stored, so nothing cleared
    assert stale.version == 1


def test_an_add_whose_idempotency_key_is_taken_writes_no_order_lines_or_events(
    repo: DynamoDbOrderRepository, dynamodb: Any
) -> None:
    first = make_order(idempotency_key="key-1")
    repo.add(first)
    second = make_order(idempotency_key="key-1", lines=3)

    with pytest.raises(DuplicateOrder):
        repo.add(second, outbox=[message(second)])

    assert partition(dynamodb, second.id) == []
    assert repo.get_by_idempotency_key(scope="user:7", key="key-1").id == first.id
    assert repo.outbox_pending(limit=10) == []


def test_an_order_beyond_one_transaction_is_refused_before_any_call(fresh_dynamodb_client: Any) -> None:
    client = fresh_dynamodb_client
    counter = CallCounter(client)
    order = make_order(lines=99)  # order + 99 lines + 1 event = 101 writes

    with pytest.raises(OrderValidationError) as refused:
        DynamoDbOrderRepository(client=client).add(order)

    assert "at most 100" in str(refused.value.fields)
    assert counter.take() == {}


def test_floats_are_refused_before_any_call(repo: DynamoDbOrderRepository, dynamodb: Any) -> None:
    order = make_order()
    with pytest.raises(TypeError):
        repo.add(order, outbox=[message(order, amount=12.5)])
    assert partition(dynamodb, order.id) == []


# --- the relay ------------------------------------------------------------------------------
def test_two_relays_racing_make_each_delivery_once(repo: DynamoDbOrderRepository, settings: Any) -> None:
    # 40 orders with one entry per notified event each: 200 entries. (moto deep-copies the table
    # on every transaction, so 200 single-entry orders would take ~15 s here for the same test.)
    event_types = settings.ORDER_EVENTS
    assert len(event_types) == 5
    for _ in range(40):
        order = make_order()
        repo.add(order, outbox=[message(order, event_type) for event_type in event_types])
    assert len(repo.outbox_pending(limit=500)) == 200

    results = race(2, lambda i: outbox_relay(dispatch=False, repository=DynamoDbOrderRepository(), limit=500))

    assert all(isinstance(r, int) for r in results), results
    integrations = len(settings.INTEGRATIONS)
    assert Delivery.objects.count() == 200 * integrations
    assert Delivery.objects.values("outbox_id", "integration").distinct().count() == 200 * integrations
    assert repo.outbox_pending(limit=500) == []


def test_marking_relayed_rebuilds_the_key_from_the_entry_and_is_harmless_twice(
    repo: DynamoDbOrderRepository, dynamodb: Any
) -> None:
    order = make_order()
    entry = message(order)
    repo.add(order, outbox=[entry])
    [pending] = repo.outbox_pending(limit=10)
    never_stored = message(make_order())
    fresh = DynamoDbOrderRepository()  # has read nothing: needs nothing but the entries

    fresh.outbox_mark_relayed([pending, never_stored])
    fresh.outbox_mark_relayed([pending])

    assert repo.outbox_pending(limit=10) == []
    [item] = [i for i in partition(dynamodb, order.id) if i["entity"]["S"] == "outbox"]
    assert "relayed_at" in item
    assert "gsi4pk" not in item
    assert [m.id for m in repo.outbox(order.id)] == [entry.id]
    assert partition(dynamodb, never_stored.order_id) == []  # nothing was created for it


# --- values ---------------------------------------------------------------------------------
def test_money_is_int_and_times_are_aware_utc(repo: DynamoDbOrderRepository, dynamodb: Any) -> None:
    at = datetime(2025, 3, 30, 1, 30, 0, 5, tzinfo=UTC)
    order = make_order(created_at=at, lines=2)
    entry = message(order, big=10**20, nested={"list": [1, "two", None, True]})
    repo.add(order, outbox=[entry])

    loaded = repo.get(order.id)
    for name in ["subtotal_minor", "shipping_minor", "total_minor", "version", "customer_id"]:
        assert type(getattr(loaded, name)) is int, name
    assert all(type(line.unit_price_minor) is int for line in loaded.lines)
    assert loaded.created_at == at
    assert loaded.created_at.utcoffset() == timedelta(0)
    [stored] = repo.outbox(order.id)
    assert stored.payload == entry.payload
    assert type(stored.payload["big"]) is int
    raw = next(i for i in partition(dynamodb, order.id) if i["sk"]["S"] == "ORDER")
    assert raw["total_minor"] == {"N": str(order.total_minor)}
    assert raw["created_at"] == {"S": "2025-03-30T01:30:00.000005+00:00"}


def test_customer_and_status_listing_reads_on_when_the_filter_drops_a_page(
    repo: DynamoDbOrderRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dynamodb_module, "FILTERED_PAGE_SIZE", 2)
    base = utcnow() - timedelta(hours=1)
    pending = [make_order(created_at=base + timedelta(minutes=i)) for i in range(3)]
    paid = [
        make_order(created_at=base + timedelta(minutes=10 + i), status=OrderStatus.PAID) for i in range(5)
    ]
    for order in [*pending, *paid]:
        repo.add(order)

    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = repo.list(
            OrderQuery(customer_id=7, status=OrderStatus.PENDING_PAYMENT, limit=2, cursor=cursor)
        )
        seen += [o.id for o in page.orders]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == [o.id for o in reversed(pending)]
    assert [len(o.lines) for o in repo.list(OrderQuery(customer_id=7, limit=3)).orders] == [1, 1, 1]


def test_a_tampered_cursor_is_refused(repo: DynamoDbOrderRepository) -> None:
    for _ in range(3):
        repo.add(make_order(status=OrderStatus.PAID))
    cursor = repo.list(OrderQuery(status=OrderStatus.PAID, limit=1)).next_cursor
    assert cursor
    with pytest.raises(OrderValidationError):
        repo.list(OrderQuery(status=OrderStatus.PAID, limit=1, cursor=cursor[:-3] + "abc"))
    with pytest.raises(OrderValidationError):  # a cursor of another listing
        repo.list(OrderQuery(status=OrderStatus.PENDING_PAYMENT, limit=1, cursor=cursor))


# --- request counts -------------------------------------------------------------------------
def test_placing_and_changing_an_order_cost_one_transaction_each(
    mug: Any, fresh_dynamodb_client: Any
) -> None:
    client = fresh_dynamodb_client
    counter = CallCounter(client)
    repo = DynamoDbOrderRepository(client=client)

    def place(**kwargs: Any) -> Order:
        order, _ = services.order_place(
            repository=repo,
            actor=Actor(kind="guest"),
            customer_id=None,
            email="guest@example.com",
            lines=[LineRequest(sku="MUG-1", quantity=2)],
            shipping_address=ADDRESS,
            **kwargs,
        )
        return order

    order = place()
    assert counter.take() == {"TransactWriteItems": 1}
    place(idempotency_scope="anonymous", idempotency_key="k-1")
    assert counter.take() == {"GetItem": 1, "TransactWriteItems": 1}

    services.order_transition(
        repository=repo, order_id=order.id, to_status=OrderStatus.PAID, actor=Actor.system()
    )
    assert counter.take() == {"Query": 1, "TransactWriteItems": 1}

    repo.get(order.id)
    assert counter.take() == {"Query": 1}
    repo.list(OrderQuery(limit=20))
    assert counter.take() == {"Query": 1, "BatchGetItem": 1}
    # Searches read an index of their own (no Scan), whatever else filters them.
    repo.list(OrderQuery(email="GUEST@example.com", status=OrderStatus.PAID))
    assert counter.take() == {"Query": 1, "BatchGetItem": 1}
    repo.list(OrderQuery(reference=order.reference, email="guest@example.com"))
    assert counter.take() == {"Query": 1, "BatchGetItem": 1}


# --- error mapping (botocore's Stubber: answers moto does not give) -------------------------
def stubbed(repo_client: Any) -> tuple[DynamoDbOrderRepository, Stubber]:
    stubber = Stubber(repo_client)
    stubber.activate()
    return DynamoDbOrderRepository(client=repo_client, table="stubbed"), stubber


def test_a_reused_request_token_means_someone_else_wrote_that_version(fresh_dynamodb_client: Any) -> None:
    repo, stubber = stubbed(fresh_dynamodb_client)
    order = make_order()
    for _ in range(2):
        stubber.add_client_error(
            "transact_write_items", service_error_code="IdempotentParameterMismatchException"
        )
    with pytest.raises(ConcurrentUpdate):
        repo.save(order)
    with pytest.raises(DuplicateOrder):
        repo.add(order)
    stubber.assert_no_pending_responses()


def test_a_transaction_conflict_is_retried_with_the_same_token(fresh_dynamodb_client: Any) -> None:
    client = fresh_dynamodb_client
    repo, stubber = stubbed(client)
    tokens: list[str] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.TransactWriteItems",
        lambda params, **kwargs: tokens.append(params["ClientRequestToken"]),
    )
    order = make_order()
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        modeled_fields={"CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}]},
    )
    stubber.add_response("transact_write_items", {})

    repo.save(order)

    assert order.version == 2
    assert len(tokens) == 2
    assert tokens[0] == tokens[1]
    assert len(tokens[0]) <= 36


# --- tables and the command -----------------------------------------------------------------
def test_create_tables_is_idempotent_and_the_command_describes_them(dynamodb: Any) -> None:
    [again] = create_tables(dynamodb)
    assert (again["created"], again["status"], again["missing_indexes"]) == (False, "ACTIVE", [])
    [described] = describe_tables(dynamodb)
    assert [index["name"] for index in described["indexes"]] == [
        "gsi1",
        "gsi2",
        "gsi3",
        "gsi4",
        "gsi6",
        "gsi7",
    ]
    assert described["billing_mode"] == "PAY_PER_REQUEST"

    out = StringIO()
    call_command("dynamodb", "create-tables", stdout=out)
    call_command("dynamodb", "describe", stdout=out)
    assert "cis-orders-test" in out.getvalue()
    assert "ACTIVE" in out.getvalue()


def test_shipping_address_round_trips_unicode(repo: DynamoDbOrderRepository) -> None:
    order = make_order()
    order.shipping_address = ShippingAddress(
        name="Émile Zola", line1="1 Rue X", line2="Bât. B", city="Paris", postal_code="75001", country="FR"
    )
    repo.add(order)
    assert repo.get(order.id).shipping_address == order.shipping_address
