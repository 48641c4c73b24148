"""The DynamoDB `OrderRepository`: one table, one `TransactWriteItems` per order write.

Table design (single table, `settings.DYNAMODB_TABLE`, default ``cis-orders``; on-demand billing)
--------------------------------------------------------------------------------------------------
Every item has a string partition key ``pk`` and sort key ``sk``, and an ``entity`` attribute
naming what it is. One order is one partition::

    pk                      sk                                   what
    ORDER#<order id>        ORDER                                the order (money as N, ISO times)
    ORDER#<order id>        LINE#<nnn>                           one line per item, 001.., fixed
    ORDER#<order id>        EVENT#<sequence, 8 digits>           the audit trail, append only
    ORDER#<order id>        OUTBOX#<created_at>#<message id>     outbox entries, kept when relayed
    IDEMP#<scope>#<key>     IDEMP                                idempotency key -> order id

Reading an order is one strongly consistent Query (``sk BETWEEN "LINE#" AND "ORDER"`` returns
its lines and the order item). Times are fixed-width ISO-8601 UTC strings
(``2025-01-31T09:30:00.000123+00:00``) so that they sort as text; money and counters are N,
read back as ``int``; event data and outbox payloads are maps holding JSON values (numbers as
N, never floats: boto3's `TypeSerializer`, which converts every item, refuses a float with
``TypeError``).

Global secondary indexes (all "sparse": only items carrying the key attributes are indexed):

- ``gsi1`` a customer's orders, newest first: ``gsi1pk = CUSTOMER#<id>``,
  ``gsi1sk = <created_at>#<order id>`` (guest orders have no gsi1 attributes).
- ``gsi2`` orders by status and date: ``gsi2pk = STATUS#<status>``, same sort key.
- ``gsi3`` every order by date, for staff: ``gsi3pk = ORDERS`` (one constant), same sort key.
- ``gsi4`` pending outbox entries, oldest first: ``gsi4pk = OUTBOX_PENDING``,
  ``gsi4sk = <created_at>#<message id>``; relaying REMOVEs both attributes, so the index only
  ever holds what is still to relay.
- ``gsi6`` orders by email (the admin's search): ``gsi6pk = EMAIL#<lower-cased email>``, same
  sort key as gsi1.
- ``gsi7`` orders by short reference: ``gsi7pk = REF#<first 8 hex digits of the id>``, same
  sort key (a reference is shared by one order in about four billion, so a partition is tiny).

A listing queries the most selective index its filters allow (reference, email, customer,
status, then all orders); the other filters are a FilterExpression on top of it. (``gsi5``, an
index of outbox entries by id, is gone: `outbox_mark_relayed` gets the entries, whose keys it
rebuilds. A table created before keeps it unused, and lacks gsi6 and gsi7, which
`create_tables` reports as missing but does not add: add them, and drop gsi5, with ``aws
dynamodb update-table --global-secondary-index-updates``. Orders stored before gsi6/gsi7
existed carry no keys for them until a one-off rewrite of their order items or their next save.)

Hot partitions: gsi3 (and gsi4, and gsi2 for a popular status) put every order in one
partition key value, and one partition takes about 1,000 writes/s (3,000 reads/s); a throttled
GSI throttles the table's writes too. That is far above this shop's volume. The way out, when
needed, is write sharding: ``gsi3pk = ORDERS#<n>`` with n = hash(order id) % N (likewise
``OUTBOX_PENDING#<n>``, ``STATUS#<status>#<n>``); a listing then queries the N shards, each
from the same cursor position (the sort key is global), and merges them by sort key.

Writes
------
`add` and `save` write the order item, new lines, new events and outbox entries in ONE
TransactWriteItems (at most 100 actions: more raises `OrderValidationError` before any call),
with a ClientRequestToken derived from the order id, the version written and a digest of the
write, so botocore's retry of a call whose answer was lost cannot apply it twice (DynamoDB keeps
tokens 10 minutes; without one, the retry of a save that did commit would fail its version check
and the service's retry loop would apply the change a second time).
`add` is guarded by ``attribute_not_exists`` on the order and the idempotency item (and on every
new line, event and outbox item) -> `DuplicateOrder`; `save` puts the whole order item back with
``version = expected`` -> `ConcurrentUpdate`, or `OrderNotFound` when the cancellation reason
carries no old item (``ReturnValuesOnConditionCheckFailure=ALL_OLD``). A TransactionConflict
(another transaction on the same item at that moment) is retried twice with the same token.
Lines are written once, by `add`; `save` never rewrites them.
Stock stays in the project's database, which shares no transaction with this table
(`shares_database_transaction = False`): the services settle each stock move by the outcome of
the write it belongs to (`orders.services`, "Stock and the order store").

Consistency
-----------
`get`, `events`, `outbox` and `get_by_idempotency_key` read the table with strong consistency.
Listings and `outbox_pending` read GSIs, which are eventually consistent (typically well under a
second behind): a just-placed order may be missing from a listing for a moment, and an entry
just marked relayed may be returned again, which the relay tolerates (deliveries are unique by
idempotency key).

Settings: ``DYNAMODB_TABLE``; ``DYNAMODB_ENDPOINT_URL`` (optional: DynamoDB's own endpoint,
e.g. DynamoDB Local next to moto for SNS; empty falls back to ``AWS_ENDPOINT_URL``, and that
empty means real AWS); the region and credentials of `core.aws`, which builds the client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from django.conf import settings
from django.utils import timezone

from core.aws import aws_client
from live import services as live
from orders.domain import (
    ConcurrentUpdate,
    DuplicateOrder,
    EventType,
    Order,
    OrderEvent,
    OrderLine,
    OrderNotFound,
    OrderPage,
    OrderQuery,
    OrderStatus,
    OrderValidationError,
    OutboxMessage,
    ShippingAddress,
    order_reference,
    utcnow,
)
from orders.repositories.base import decode_cursor, encode_cursor

logger = logging.getLogger(__name__)

# One retry at most; safe for transactions thanks to their ClientRequestToken.
TOTAL_MAX_ATTEMPTS = 2
CONNECTION_POOL_SIZE = 25

MAX_TRANSACTION_ACTIONS = 100  # DynamoDB's limit for one TransactWriteItems
MAX_BATCH_GET_KEYS = 100  # and for one BatchGetItem
TRANSACTION_CONFLICT_ATTEMPTS = 3  # a TransactionConflict is retried (same token) this often
BATCH_GET_ATTEMPTS = 8
# With a FilterExpression a Query page may match few items: read at least this many per call.
FILTERED_PAGE_SIZE = 100

# Keys and index names.
ORDER_SK = "ORDER"
LINE_PREFIX = "LINE#"
EVENT_PREFIX = "EVENT#"
OUTBOX_PREFIX = "OUTBOX#"
IDEMP_SK = "IDEMP"
ALL_ORDERS = "ORDERS"
OUTBOX_PENDING = "OUTBOX_PENDING"
CUSTOMER_INDEX = "gsi1"
STATUS_INDEX = "gsi2"
ALL_ORDERS_INDEX = "gsi3"
OUTBOX_PENDING_INDEX = "gsi4"
EMAIL_INDEX = "gsi6"
REFERENCE_INDEX = "gsi7"
# Every index of the table: gsi<n>pk is its partition key, gsi<n>sk its sort key.
INDEXES = [1, 2, 3, 4, 6, 7]

_TOKEN_NAMESPACE = uuid.UUID("5b0f6d53-4c52-4e3c-9f0e-6a1f4b7f2c11")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


# --- client and table ----------------------------------------------------------------------
def table_name() -> str:
    return settings.DYNAMODB_TABLE


def dynamodb_client() -> Any:
    """The shared low-level DynamoDB client for the current settings (`core.aws`)."""
    return aws_client(
        "dynamodb",
        endpoint_url=settings.DYNAMODB_ENDPOINT_URL,
        attempts=TOTAL_MAX_ATTEMPTS,
        pool=CONNECTION_POOL_SIZE,
    )


def _table_definition(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": attribute, "AttributeType": "S"}
            for attribute in ["pk", "sk", *(f"gsi{n}{part}" for n in INDEXES for part in ("pk", "sk"))]
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": f"gsi{n}",
                "KeySchema": [
                    {"AttributeName": f"gsi{n}pk", "KeyType": "HASH"},
                    {"AttributeName": f"gsi{n}sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for n in INDEXES
        ],
    }


def create_tables(client: Any = None, *, wait_seconds: int = 120) -> list[dict[str, Any]]:
    """Create the orders table if it is missing and wait until it and its indexes are ACTIVE.

    Idempotent: an existing table is left as it is (indexes it lacks are reported, not added).
    """
    client = client or dynamodb_client()
    definition = _table_definition(table_name())
    name = definition["TableName"]
    try:
        client.create_table(**definition)
        created = True
    except client.exceptions.ResourceInUseException:
        created = False
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": max(1, wait_seconds)}
    )
    deadline = time.monotonic() + wait_seconds
    while True:
        description = _describe(client, name)
        if all(index["status"] == "ACTIVE" for index in description["indexes"]):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"The indexes of {name} are not ACTIVE after {wait_seconds} s.")
        time.sleep(1)
    expected = {index["IndexName"] for index in definition["GlobalSecondaryIndexes"]}
    present = {index["name"] for index in description["indexes"]}
    return [description | {"created": created, "missing_indexes": sorted(expected - present)}]


def describe_tables(client: Any = None) -> list[dict[str, Any]]:
    """Name, status, item count, billing mode and indexes of the orders table (or "missing")."""
    client = client or dynamodb_client()
    name = table_name()
    try:
        return [_describe(client, name)]
    except client.exceptions.ResourceNotFoundException:
        return [{"table": name, "status": "MISSING", "indexes": []}]


def _describe(client: Any, name: str) -> dict[str, Any]:
    table = client.describe_table(TableName=name)["Table"]
    return {
        "table": name,
        "status": table["TableStatus"],
        "items": table.get("ItemCount", 0),
        "billing_mode": table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
        "key": [key["AttributeName"] for key in table["KeySchema"]],
        "indexes": [
            {
                "name": index["IndexName"],
                "key": [key["AttributeName"] for key in index["KeySchema"]],
                "projection": index["Projection"]["ProjectionType"],
                "status": index.get("IndexStatus", "ACTIVE"),
            }
            for index in table.get("GlobalSecondaryIndexes", [])
        ],
    }


# --- values ---------------------------------------------------------------------------------
def _time(value: datetime) -> str:
    """Fixed-width ISO-8601 UTC, so that text order is time order."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _to_item(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values as a DynamoDB item (boto3's `TypeSerializer`: floats are refused)."""
    return {name: _SERIALIZER.serialize(value) for name, value in values.items()}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain values, whole numbers as `int` (boto3 gives `Decimal`)."""
    return {name: _whole_numbers_as_int(_DESERIALIZER.deserialize(value)) for name, value in item.items()}


def _whole_numbers_as_int(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, list):
        return [_whole_numbers_as_int(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers_as_int(item) for key, item in value.items()}
    return value


def _document(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object, exactly as a JSON field would store it (floats are refused when stored)."""
    return json.loads(json.dumps(value, allow_nan=False))


def _uuid(value: uuid.UUID | str) -> uuid.UUID | None:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None


def _order_pk(order_id: uuid.UUID) -> str:
    return f"ORDER#{order_id}"


def _idempotency_pk(scope: str, key: str) -> str:
    # '#' separates the parts, so it is escaped inside the scope (keys may hold anything).
    return f"IDEMP#{scope.replace('%', '%25').replace('#', '%23')}#{key}"


def _created_key(order: Order) -> str:
    return f"{_time(order.created_at)}#{order.id}"


def _outbox_sk(message: OutboxMessage) -> str:
    return f"{OUTBOX_PREFIX}{_time(message.created_at)}#{message.id}"


def _request_token(order_id: uuid.UUID, version: int, actions: list[dict[str, Any]]) -> str:
    """The ClientRequestToken of the write that stores `version` of the order (36 characters).

    The same write sent again (botocore's retry after a lost answer) gets the same token, so
    DynamoDB applies it once. The digest of the write keeps a different write of the same
    version (a racing writer) on a token of its own: it then fails on the version condition,
    a plain `ConcurrentUpdate`, rather than on a token already taken.
    """
    digest = hashlib.sha256(json.dumps(actions, sort_keys=True).encode()).hexdigest()
    return str(uuid.uuid5(_TOKEN_NAMESPACE, f"{order_id}:v{version}:{digest}"))


# --- the repository -------------------------------------------------------------------------
class _Cancelled(Exception):
    """A transaction DynamoDB refused: its cancellation reasons (empty for a token mismatch)."""

    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        super().__init__(reasons)
        self.reasons = reasons


class DynamoDbOrderRepository:
    """Orders in one DynamoDB table (see the module docstring for the design).

    `client` and `table` default to the settings, read at each call; pass them to pin one.
    """

    # A store of its own: the services settle stock moved in the database by the order's outcome.
    shares_database_transaction = False

    def __init__(self, client: Any = None, table: str | None = None) -> None:
        self._client = client
        self._table = table

    @property
    def client(self) -> Any:
        return self._client or dynamodb_client()

    @property
    def table(self) -> str:
        return self._table or table_name()

    # --- writes -----------------------------------------------------------------------------
    def add(self, order: Order, *, outbox: Sequence[OutboxMessage] = ()) -> None:
        actions = [self._put(self._order_item(order, version=order.version), new=True)]
        if order.idempotency_key:
            actions.append(
                self._put(
                    _to_item(
                        {
                            "pk": _idempotency_pk(order.idempotency_scope, order.idempotency_key),
                            "sk": IDEMP_SK,
                            "entity": "idempotency",
                            "order_id": str(order.id),
                            "created_at": _time(order.created_at),
                        }
                    ),
                    new=True,
                )
            )
        actions += [
            self._put(self._line_item(order.id, position, line), new=True)
            for position, line in enumerate(order.lines, start=1)
        ]
        actions += self._event_and_outbox_puts(order, outbox)
        try:
            self._transact(actions, token=_request_token(order.id, order.version, actions))
        except _Cancelled as exc:
            raise DuplicateOrder(f"Order {order.id} or its idempotency key is already stored.") from exc
        live.publish_order(order.id)  # the order page and /ops/ look again
        order.pending_events.clear()

    def save(self, order: Order, *, outbox: Sequence[OutboxMessage] = ()) -> None:
        new_version = order.version + 1
        put_order = self._put(self._order_item(order, version=new_version))
        put_order["Put"].update(
            ConditionExpression="#version = :expected",
            ExpressionAttributeNames={"#version": "version"},
            ExpressionAttributeValues={":expected": _n(order.version)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        actions = [put_order, *self._event_and_outbox_puts(order, outbox)]
        try:
            self._transact(actions, token=_request_token(order.id, new_version, actions))
        except _Cancelled as exc:
            reason = exc.reasons[0] if exc.reasons else {}
            if reason.get("Code") == "ConditionalCheckFailed" and "Item" not in reason:
                raise OrderNotFound(order.id) from exc
            raise ConcurrentUpdate(order.id, order.version) from exc
        live.publish_order(order.id)  # the order page and /ops/ look again
        order.version = new_version
        order.pending_events.clear()

    def _transact(self, actions: list[dict[str, Any]], *, token: str) -> None:
        if len(actions) > MAX_TRANSACTION_ACTIONS:
            raise OrderValidationError(
                {
                    "order": [
                        f"This change needs {len(actions)} writes (order, lines, events and outbox"
                        f" entries); one DynamoDB transaction takes at most {MAX_TRANSACTION_ACTIONS}."
                    ]
                },
                message="Too many lines or changes for one atomic write.",
            )
        for attempt in range(1, TRANSACTION_CONFLICT_ATTEMPTS + 1):
            try:
                self.client.transact_write_items(TransactItems=actions, ClientRequestToken=token)
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "IdempotentParameterMismatchException":
                    # The token was used for a different write of this version (in practice
                    # unreachable, tokens hold a digest of the write): someone else's version.
                    raise _Cancelled([]) from exc
                if code != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons", [])
                codes = {reason.get("Code", "None") for reason in reasons}
                unexpected = codes - {"None", "ConditionalCheckFailed", "TransactionConflict"}
                if unexpected:
                    raise  # a validation error (item too large...): a bug, not a race
                conflict_only = "TransactionConflict" in codes and "ConditionalCheckFailed" not in codes
                if conflict_only and attempt < TRANSACTION_CONFLICT_ATTEMPTS:
                    # Another transaction was writing the same item: try again (same token).
                    time.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 - jitter
                    continue
                raise _Cancelled(reasons) from exc

    def _event_and_outbox_puts(self, order: Order, outbox: Sequence[OutboxMessage]) -> list[dict[str, Any]]:
        return [
            *(self._put(self._event_item(event), new=True) for event in order.pending_events),
            *(self._put(self._outbox_item(order.id, message), new=True) for message in outbox),
        ]

    def _put(self, item: dict[str, Any], *, new: bool = False) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if new:
            put.update(
                ConditionExpression="attribute_not_exists(#pk)", ExpressionAttributeNames={"#pk": "pk"}
            )
        return {"Put": put}

    # --- reads ------------------------------------------------------------------------------
    def get(self, order_id: uuid.UUID) -> Order:
        parsed = _uuid(order_id)
        if parsed is None:
            raise OrderNotFound(order_id)
        items = [
            _from_item(item)
            for item in self._query(
                KeyConditionExpression="#pk = :pk AND #sk BETWEEN :first AND :last",
                ExpressionAttributeNames={"#pk": "pk", "#sk": "sk"},
                ExpressionAttributeValues={
                    ":pk": _s(_order_pk(parsed)),
                    ":first": _s(LINE_PREFIX),
                    ":last": _s(ORDER_SK),
                },
                ConsistentRead=True,
            )
        ]
        order_items = [item for item in items if item["sk"] == ORDER_SK]
        if not order_items:
            raise OrderNotFound(order_id)
        return self._to_domain(order_items[0], [item for item in items if item is not order_items[0]])

    def get_by_idempotency_key(self, *, scope: str, key: str) -> Order | None:
        found = self.client.get_item(
            TableName=self.table,
            Key={"pk": _s(_idempotency_pk(scope, key)), "sk": _s(IDEMP_SK)},
            ConsistentRead=True,
        ).get("Item")
        if not found:
            return None
        try:
            return self.get(uuid.UUID(found["order_id"]["S"]))
        except OrderNotFound:
            return None

    def list(self, query: OrderQuery) -> OrderPage:
        position = decode_cursor(query)  # first: a bad cursor is refused whatever else happens
        if query.created_from and query.created_to and query.created_from >= query.created_to:
            return OrderPage(orders=[], next_cursor=None)
        # (index, partition) of each filter with an index of its own, the most selective first:
        # the listing queries the first, and filters on the others' partition keys.
        keyed = [
            (index, partition)
            for index, partition, wanted in [
                (REFERENCE_INDEX, f"REF#{query.reference}", query.reference is not None),
                (EMAIL_INDEX, f"EMAIL#{query.email}", query.email is not None),
                (CUSTOMER_INDEX, f"CUSTOMER#{query.customer_id}", query.customer_id is not None),
                (STATUS_INDEX, f"STATUS#{query.status}", query.status is not None),
            ]
            if wanted
        ] or [(ALL_ORDERS_INDEX, ALL_ORDERS)]
        (index, partition), filters = keyed[0], keyed[1:]

        names = {"#pk": f"{index}pk"}
        values: dict[str, Any] = {":pk": _s(partition)}
        condition = "#pk = :pk"
        # Sort keys are "<created_at>#<id>": from (inclusive) is "<from>" itself, to (exclusive)
        # is "<to>", which no key equals.
        if query.created_from or query.created_to:
            names["#sk"] = f"{index}sk"
            if query.created_from and query.created_to:
                condition += " AND #sk BETWEEN :from AND :to"
            elif query.created_from:
                condition += " AND #sk >= :from"
            else:
                condition += " AND #sk < :to"
            if query.created_from:
                values[":from"] = _s(_time(query.created_from))
            if query.created_to:
                values[":to"] = _s(_time(query.created_to))
        request: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ScanIndexForward": not query.newest_first,
        }
        filtered = bool(filters)
        if filtered:
            for other, other_partition in filters:
                names[f"#{other}"] = f"{other}pk"
                values[f":{other}"] = _s(other_partition)
            request["FilterExpression"] = " AND ".join(f"#{other} = :{other}" for other, _ in filters)
        request.update(ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        if position:
            at, last_id = position
            request["ExclusiveStartKey"] = {
                "pk": _s(_order_pk(last_id)),
                "sk": _s(ORDER_SK),
                f"{index}pk": _s(partition),
                f"{index}sk": _s(f"{_time(at)}#{last_id}"),
            }

        wanted = query.limit + 1  # one more than the page, to know whether there is a next one
        found: list[dict[str, Any]] = []
        while len(found) < wanted:
            missing = wanted - len(found)
            request["Limit"] = max(missing, FILTERED_PAGE_SIZE) if filtered else missing
            response = self.client.query(TableName=self.table, **request)
            found += [_from_item(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        page = found[: query.limit]
        lines = self._lines_of(page)
        orders = [self._to_domain(item, lines.get(item["id"], [])) for item in page]
        next_cursor = encode_cursor(query, orders[-1]) if len(found) > query.limit and orders else None
        return OrderPage(orders=orders, next_cursor=next_cursor)

    def _lines_of(self, order_items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """The line items of these orders (BatchGetItem, strongly consistent), by order id."""
        keys = [
            {"pk": _s(item["pk"]), "sk": _s(f"{LINE_PREFIX}{position:03d}")}
            for item in order_items
            for position in range(1, item["line_count"] + 1)
        ]
        by_order: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(keys), MAX_BATCH_GET_KEYS):
            pending: dict[str, Any] = {
                self.table: {"Keys": keys[start : start + MAX_BATCH_GET_KEYS], "ConsistentRead": True}
            }
            for attempt in range(1, BATCH_GET_ATTEMPTS + 1):
                response = self.client.batch_get_item(RequestItems=pending)
                for raw in response.get("Responses", {}).get(self.table, []):
                    item = _from_item(raw)
                    by_order.setdefault(item["order_id"], []).append(item)
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                if attempt == BATCH_GET_ATTEMPTS:
                    raise RuntimeError("DynamoDB left order lines unread after several attempts.")
                time.sleep(min(1.0, 0.05 * 2**attempt) * random.random())  # noqa: S311 - jitter
        return by_order

    def events(self, order_id: uuid.UUID) -> list[OrderEvent]:
        return [self._event_from_item(item) for item in self._partition(order_id, EVENT_PREFIX)]

    def outbox(self, order_id: uuid.UUID) -> list[OutboxMessage]:
        return self._oldest_first(
            [self._outbox_from_item(item) for item in self._partition(order_id, OUTBOX_PREFIX)]
        )

    def outbox_pending(
        self, *, limit: int, order_ids: Sequence[uuid.UUID] | None = None
    ) -> list[OutboxMessage]:
        if limit <= 0:
            return []
        if order_ids is not None:
            items = [
                item
                for order_id in dict.fromkeys(order_ids)
                for item in self._partition(order_id, OUTBOX_PREFIX)
                if "gsi4pk" in item
            ]
        else:
            items = []
            request: dict[str, Any] = {
                "IndexName": OUTBOX_PENDING_INDEX,
                "KeyConditionExpression": "#pk = :pk",
                "ExpressionAttributeNames": {"#pk": "gsi4pk"},
                "ExpressionAttributeValues": {":pk": _s(OUTBOX_PENDING)},
                "ScanIndexForward": True,
            }
            while len(items) < limit:
                request["Limit"] = limit - len(items)
                response = self.client.query(TableName=self.table, **request)
                items += [_from_item(item) for item in response.get("Items", [])]
                if "LastEvaluatedKey" not in response:
                    break
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return self._oldest_first([self._outbox_from_item(item) for item in items])[:limit]

    def outbox_mark_relayed(self, messages: Sequence[OutboxMessage]) -> None:
        """Take the entries out of the pending index, each with a conditional update.

        An entry's key is rebuilt from the entry itself (its order, creation time and id). The
        condition (still pending) makes one of two racing relays the one that marks it, and
        creates nothing for an entry that is not stored; the other's ConditionalCheckFailed is
        expected and ignored.
        """
        relayed_at = _s(_time(utcnow()))
        for message in {message.id: message for message in messages}.values():
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key={"pk": _s(_order_pk(message.order_id)), "sk": _s(_outbox_sk(message))},
                    UpdateExpression="SET #relayed_at = :relayed_at REMOVE #gsi4pk, #gsi4sk",
                    ConditionExpression="attribute_exists(#gsi4pk)",
                    ExpressionAttributeNames={
                        "#relayed_at": "relayed_at",
                        "#gsi4pk": "gsi4pk",
                        "#gsi4sk": "gsi4sk",
                    },
                    ExpressionAttributeValues={":relayed_at": relayed_at},
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise

    # --- helpers ----------------------------------------------------------------------------
    def _query(self, **request: Any) -> Iterator[dict[str, Any]]:
        while True:
            response = self.client.query(TableName=self.table, **request)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def _partition(self, order_id: uuid.UUID, prefix: str) -> Iterator[dict[str, Any]]:
        """The order's items whose sort key starts with `prefix`, in sort key order, as values."""
        parsed = _uuid(order_id)
        if parsed is None:
            return iter(())
        items = self._query(
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": "pk", "#sk": "sk"},
            ExpressionAttributeValues={":pk": _s(_order_pk(parsed)), ":prefix": _s(prefix)},
            ConsistentRead=True,
        )
        return (_from_item(item) for item in items)

    @staticmethod
    def _oldest_first(messages: list[OutboxMessage]) -> list[OutboxMessage]:
        # The ORM adapter's order: creation time, then order version (then id, from the keys).
        return sorted(messages, key=lambda message: (message.created_at, message.order_version))

    # --- mapping ----------------------------------------------------------------------------
    @staticmethod
    def _order_item(order: Order, *, version: int) -> dict[str, Any]:
        created_key = _created_key(order)
        values: dict[str, Any] = {
            "pk": _order_pk(order.id),
            "sk": ORDER_SK,
            "entity": "order",
            "id": str(order.id),
            "email": order.email,
            "status": order.status.value,
            "currency": order.currency,
            "subtotal_minor": order.subtotal_minor,
            "shipping_minor": order.shipping_minor,
            "total_minor": order.total_minor,
            "shipping_address": order.shipping_address.as_dict(),
            "notes": order.notes,
            "version": version,
            "last_event_sequence": order.last_event_sequence,
            "line_count": len(order.lines),
            "idempotency_scope": order.idempotency_scope,
            "idempotency_key": order.idempotency_key,
            "request_fingerprint": order.request_fingerprint,
            "created_at": _time(order.created_at),
            "updated_at": _time(order.updated_at),
            "gsi2pk": f"STATUS#{order.status.value}",
            "gsi2sk": created_key,
            "gsi3pk": ALL_ORDERS,
            "gsi3sk": created_key,
            "gsi6pk": f"EMAIL#{order.email.strip().lower()}",
            "gsi6sk": created_key,
            "gsi7pk": f"REF#{order_reference(order.id).lower()}",
            "gsi7sk": created_key,
        }
        if order.customer_id is not None:
            values["customer_id"] = order.customer_id
            values["gsi1pk"] = f"CUSTOMER#{order.customer_id}"
            values["gsi1sk"] = created_key
        return _to_item(values)

    @staticmethod
    def _line_item(order_id: uuid.UUID, position: int, line: OrderLine) -> dict[str, Any]:
        return _to_item(
            {
                "pk": _order_pk(order_id),
                "sk": f"{LINE_PREFIX}{position:03d}",
                "entity": "line",
                "order_id": str(order_id),
                "position": position,
                "product_id": line.product_id,
                "sku": line.sku,
                "name": line.name,
                "unit_price_minor": line.unit_price_minor,
                "quantity": line.quantity,
            }
        )

    @staticmethod
    def _event_item(event: OrderEvent) -> dict[str, Any]:
        values: dict[str, Any] = {
            "pk": _order_pk(event.order_id),
            "sk": f"{EVENT_PREFIX}{event.sequence:08d}",
            "entity": "event",
            "id": str(event.id),
            "order_id": str(event.order_id),
            "sequence": event.sequence,
            "type": event.type.value,
            "actor": event.actor,
            "created_at": _time(event.created_at),
            "data": _document(event.data),
        }
        if event.from_status:
            values["from_status"] = event.from_status.value
        if event.to_status:
            values["to_status"] = event.to_status.value
        return _to_item(values)

    @staticmethod
    def _outbox_item(order_id: uuid.UUID, message: OutboxMessage) -> dict[str, Any]:
        created = _time(message.created_at)
        return _to_item(
            {
                "pk": _order_pk(order_id),
                "sk": _outbox_sk(message),
                "entity": "outbox",
                "id": str(message.id),
                "order_id": str(order_id),
                "event_type": message.event_type,
                "order_version": message.order_version,
                "payload": _document(message.payload),
                "created_at": created,
                "gsi4pk": OUTBOX_PENDING,
                "gsi4sk": f"{created}#{message.id}",
            }
        )

    @staticmethod
    def _event_from_item(item: dict[str, Any]) -> OrderEvent:
        return OrderEvent(
            id=uuid.UUID(item["id"]),
            order_id=uuid.UUID(item["order_id"]),
            sequence=item["sequence"],
            type=EventType(item["type"]),
            actor=item["actor"],
            created_at=_parse_time(item["created_at"]),
            from_status=OrderStatus(item["from_status"]) if "from_status" in item else None,
            to_status=OrderStatus(item["to_status"]) if "to_status" in item else None,
            data=item["data"],
        )

    @staticmethod
    def _outbox_from_item(item: dict[str, Any]) -> OutboxMessage:
        return OutboxMessage(
            id=uuid.UUID(item["id"]),
            order_id=uuid.UUID(item["order_id"]),
            event_type=item["event_type"],
            order_version=item["order_version"],
            payload=item["payload"],
            created_at=_parse_time(item["created_at"]),
        )

    @staticmethod
    def _to_domain(item: dict[str, Any], line_items: list[dict[str, Any]]) -> Order:
        return Order(
            id=uuid.UUID(item["id"]),
            customer_id=item.get("customer_id"),
            email=item["email"],
            status=OrderStatus(item["status"]),
            currency=item["currency"],
            lines=[
                OrderLine(
                    product_id=line["product_id"],
                    sku=line["sku"],
                    name=line["name"],
                    unit_price_minor=line["unit_price_minor"],
                    quantity=line["quantity"],
                )
                for line in sorted(line_items, key=lambda line: line["position"])
            ],
            subtotal_minor=item["subtotal_minor"],
            shipping_minor=item["shipping_minor"],
            total_minor=item["total_minor"],
            shipping_address=ShippingAddress.from_dict(item["shipping_address"]),
            notes=item.get("notes", ""),
            version=item["version"],
            last_event_sequence=item["last_event_sequence"],
            idempotency_scope=item.get("idempotency_scope", ""),
            idempotency_key=item.get("idempotency_key", ""),
            request_fingerprint=item.get("request_fingerprint", ""),
            created_at=_parse_time(item["created_at"]),
            updated_at=_parse_time(item["updated_at"]),
        )
