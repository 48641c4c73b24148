"""The `OrderRepository` port: how services store and find orders, whatever the backend.

Product code reads and writes orders through an adapter of this protocol, chosen by the dotted
path in `settings.ORDER_REPOSITORY` (the ORM by default); only the ORM adapter itself, the
admin's outbox list, benchmarks and tests read its tables directly (see `orders/models.py`). One
contract suite (`tests/orders/test_repository_contract.py`) runs against every adapter.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Protocol, runtime_checkable

from django.conf import settings
from django.core import signing
from django.utils.module_loading import import_string

from orders.domain import Order, OrderEvent, OrderPage, OrderQuery, OrderValidationError, OutboxMessage


@runtime_checkable
class OrderRepository(Protocol):
    # True when writes join the caller's Django database transaction (the ORM adapter): stock,
    # kept in that database, and the order then commit as one unit. False for a store of its
    # own (DynamoDB): the services then move stock through reservations that the order's
    # outcome settles (`orders.services`, "Stock and the order store").
    shares_database_transaction: bool

    def add(self, order: Order, *, outbox: Sequence[OutboxMessage] = ()) -> None:
        """Store a new order with its pending events and `outbox` in one atomic write.

        Raises `DuplicateOrder` if the id, or the (idempotency scope, key) pair, is taken.
        Clears `order.pending_events`.
        """

    def save(self, order: Order, *, outbox: Sequence[OutboxMessage] = ()) -> None:
        """Store changes to an existing order, its pending events and `outbox` atomically.

        Optimistic locking: the write succeeds only if the stored version is still
        `order.version`; then the version goes up by one (in `order` too). Otherwise
        `ConcurrentUpdate` is raised and nothing is written.
        """

    def get(self, order_id: uuid.UUID) -> Order:
        """The order, with its lines. Raises `OrderNotFound`."""

    def get_by_idempotency_key(self, *, scope: str, key: str) -> Order | None: ...

    def list(self, query: OrderQuery) -> OrderPage:
        """One page of orders matching `query`, ordered by creation time, then id."""

    def events(self, order_id: uuid.UUID) -> list[OrderEvent]:
        """The order's audit trail, oldest first."""

    def outbox(self, order_id: uuid.UUID) -> list[OutboxMessage]:
        """The outbox entries written with the order's changes, oldest first."""

    def outbox_pending(
        self, *, limit: int, order_ids: Sequence[uuid.UUID] | None = None
    ) -> list[OutboxMessage]:
        """Entries not yet relayed, oldest first (only these orders' with `order_ids`)."""

    def outbox_mark_relayed(self, messages: Sequence[OutboxMessage]) -> None:
        """Mark entries (as read from `outbox_pending`) relayed; marking one twice is harmless."""


@cache
def _load(path: str) -> OrderRepository:
    return import_string(path)()


def get_order_repository() -> OrderRepository:
    """The configured adapter (`settings.ORDER_REPOSITORY`), one instance per path."""
    return _load(settings.ORDER_REPOSITORY)


# --- Cursors shared by the adapters ---------------------------------------------------------
_CURSOR_SALT = "orders.repository.cursor"


def encode_cursor(query: OrderQuery, last: Order) -> str:
    """An opaque, signed cursor pointing just after `last`, bound to the query's filters."""
    return signing.dumps(
        {"f": _filters_fingerprint(query), "t": last.created_at.isoformat(), "i": str(last.id)},
        salt=_CURSOR_SALT,
        compress=True,
    )


def decode_cursor(query: OrderQuery) -> tuple[datetime, uuid.UUID] | None:
    """The (created_at, id) position a query's cursor points after, or None on the first page."""
    if not query.cursor:
        return None
    try:
        data = signing.loads(query.cursor, salt=_CURSOR_SALT)
        if data["f"] != _filters_fingerprint(query):
            raise ValueError("cursor belongs to other filters")
        return datetime.fromisoformat(data["t"]), uuid.UUID(data["i"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise OrderValidationError({"cursor": ["This cursor is not valid for this listing."]}) from exc


def _filters_fingerprint(query: OrderQuery) -> list[object]:
    return [
        query.customer_id,
        query.status.value if query.status else None,
        query.created_from.isoformat() if query.created_from else None,
        query.created_to.isoformat() if query.created_to else None,
        query.newest_first,
        query.email,
        query.reference,
    ]
