"""Writes of the orders app. Pages, the API, the admin and commands all call these.

Every function takes the `OrderRepository` to use as a keyword argument (tests pass their own),
prices orders from the catalog on the server, and records an audit event with every change in the
same atomic write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import caches
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils.module_loading import import_string

from core.locks import cache_database, shared_lock, writes_serialized
from orders.domain import (
    CUSTOMER_EDITABLE_STATUSES,
    MONEY_STATUSES,
    NOTIFIED_STATUSES,
    STOCK_HOLDING_STATUSES,
    Actor,
    ConcurrentUpdate,
    DuplicateOrder,
    EventType,
    HoldLimitExceeded,
    IdempotencyConflict,
    IllegalTransition,
    Order,
    OrderEvent,
    OrderLine,
    OrderNotEditable,
    OrderNotFound,
    OrderQuery,
    OrderStatus,
    OrderValidationError,
    OutboxMessage,
    ShippingAddress,
    StatusChangeNotAllowed,
    StatusFollowsMoney,
    can_transition,
    utcnow,
)
from orders.models import PendingStockChange, Product
from orders.repositories import OrderRepository

logger = logging.getLogger(__name__)

# How often a change is re-applied to a freshly read order when another writer got there first.
CONCURRENT_UPDATE_ATTEMPTS = 5
# The per-address lock of the anonymous hold limit: how long it is kept at most (a dead holder's
# expires) and how long a request waits for it.
SHARED_LOCK_SECONDS = 10
SHARED_LOCK_WAIT_SECONDS = 15.0
# How long after a stock change for an order store of its own (DynamoDB) the write it belongs to
# may still be under way: far beyond the client's timeouts and attempts (well under a minute),
# so after it the order's audit trail says for sure whether the write happened.
STOCK_SETTLE_AFTER = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class LineRequest:
    sku: str
    quantity: int


def actor_for(user: AbstractBaseUser | AnonymousUser | None, *, guest_email: str = "") -> Actor:
    """The `Actor` recorded in the audit trail for a request's user."""
    if user is not None and user.is_authenticated:
        return Actor(kind="staff" if user.is_staff else "customer", user_id=user.pk)
    return Actor(kind="guest", label=guest_email)


def idempotency_scope_for(user: AbstractBaseUser | AnonymousUser | None) -> str:
    """Idempotency keys are per user; anonymous clients share one scope."""
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return "anonymous"


def order_place(
    *,
    repository: OrderRepository,
    actor: Actor,
    customer_id: int | None,
    email: str,
    lines: Sequence[LineRequest],
    shipping_address: ShippingAddress,
    notes: str = "",
    idempotency_scope: str = "",
    idempotency_key: str = "",
    client_address: str = "",
) -> tuple[Order, bool]:
    """Price the lines from the catalog, reserve their stock and store a `pending_payment` order.

    Returns the order and whether it was created now. With an idempotency key, a repeat of the
    same request returns the order made the first time (created is False); the same key with a
    different request raises `IdempotencyConflict`.

    A guest order (no `customer_id`) placed from `client_address` (the request's source address)
    is refused with `HoldLimitExceeded` if that address would then hold more than
    ORDER_ANON_HOLD_MAX_UNITS units in unpaid orders (see `_anonymous_hold`).
    """
    order, created, _ = order_place_with_events(
        repository=repository,
        actor=actor,
        customer_id=customer_id,
        email=email,
        lines=lines,
        shipping_address=shipping_address,
        notes=notes,
        idempotency_scope=idempotency_scope,
        idempotency_key=idempotency_key,
        client_address=client_address,
    )
    return order, created


def order_place_with_events(
    *,
    repository: OrderRepository,
    actor: Actor,
    customer_id: int | None,
    email: str,
    lines: Sequence[LineRequest],
    shipping_address: ShippingAddress,
    notes: str = "",
    idempotency_scope: str = "",
    idempotency_key: str = "",
    client_address: str = "",
) -> tuple[Order, bool, list[OrderEvent] | None]:
    """`order_place`, also returning the audit events stored with a new order (None for a
    replay), so that an answer can show them without reading them back."""
    merged = _merge_lines(lines)
    fingerprint = _fingerprint(
        customer_id=customer_id,
        email=email,
        lines=merged,
        shipping_address=shipping_address,
        notes=notes,
    )
    if idempotency_key:
        earlier = repository.get_by_idempotency_key(scope=idempotency_scope, key=idempotency_key)
        if earlier is not None:
            return _replay(earlier, fingerprint), False, None
    place = partial(
        _place,
        repository=repository,
        actor=actor,
        customer_id=customer_id,
        email=email,
        merged=merged,
        fingerprint=fingerprint,
        shipping_address=shipping_address,
        notes=notes,
        idempotency_scope=idempotency_scope,
        idempotency_key=idempotency_key,
    )
    if customer_id is not None or not client_address or settings.ORDER_ANON_HOLD_MAX_UNITS <= 0:
        return place()
    with _anonymous_hold(repository, client_address, units=sum(line.quantity for line in merged)) as remember:
        order, created, events = place()
        if created:
            remember(order)
    return order, created, events


def _place(
    *,
    repository: OrderRepository,
    actor: Actor,
    customer_id: int | None,
    email: str,
    merged: list[LineRequest],
    fingerprint: str,
    shipping_address: ShippingAddress,
    notes: str,
    idempotency_scope: str,
    idempotency_key: str,
) -> tuple[Order, bool, list[OrderEvent] | None]:
    """`order_place` once the request is checked: reserve, store, or replay a racing twin.

    With an order store that joins the database's transactions (the ORM), the stock taken and
    the order commit as one unit. With a store of its own (DynamoDB), the stock is taken and
    recorded as a `PendingStockChange` in one committed transaction first, then the order is
    written, and the outcome settles the reservation (see "Stock and the order store" below).
    """
    make = partial(
        _new_order,
        actor=actor,
        customer_id=customer_id,
        email=email,
        shipping_address=shipping_address,
        notes=notes,
        idempotency_scope=idempotency_scope,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
    )
    try:
        if repository.shares_database_transaction:
            # Priced from a read before the transaction, the order built in memory; the
            # transaction writes the order, then takes the stock last, right before the commit,
            # so the products' rows (PostgreSQL) are locked only for the end of it. A product
            # short of stock raises inside the transaction: the order is not stored either.
            order, created = make(*_price(merged))
            with transaction.atomic():
                repository.add(order, outbox=())
                _reserve(order.lines)
                transaction.on_commit(
                    partial(_report_events, order.id, [(EventType.CREATED, order.status.value)])
                )
        else:
            with transaction.atomic(durable=True):
                order, created = make(*_price_and_reserve(merged))
                reservation = _stock_change(order, created, kind=PendingStockChange.Kind.RESERVE)
            _write_settling(reservation, partial(repository.add, order, outbox=()))
            _report_events(order.id, [(EventType.CREATED, order.status.value)])
    except DuplicateOrder:
        # Another request with the same key won the race; its write is done.
        earlier = repository.get_by_idempotency_key(scope=idempotency_scope, key=idempotency_key)
        if not idempotency_key or earlier is None:
            raise
        return _replay(earlier, fingerprint), False, None
    return order, True, [created]


def _new_order(
    order_lines: list[OrderLine],
    currency: str,
    *,
    actor: Actor,
    customer_id: int | None,
    email: str,
    shipping_address: ShippingAddress,
    notes: str,
    idempotency_scope: str,
    idempotency_key: str,
    fingerprint: str,
) -> tuple[Order, OrderEvent]:
    """A new `pending_payment` order of these priced lines, and its `created` event."""
    subtotal = sum(line.line_total_minor for line in order_lines)
    shipping = settings.ORDER_SHIPPING_FLAT_MINOR
    now = utcnow()
    order = Order(
        id=uuid.uuid4(),
        status=OrderStatus.PENDING_PAYMENT,
        currency=currency,
        lines=order_lines,
        subtotal_minor=subtotal,
        shipping_minor=shipping,
        total_minor=subtotal + shipping,
        email=email,
        shipping_address=shipping_address,
        notes=notes,
        customer_id=customer_id,
        created_at=now,
        updated_at=now,
        idempotency_scope=idempotency_scope if idempotency_key else "",
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
    )
    created = order.record(
        type=EventType.CREATED,
        actor=actor,
        to_status=order.status,
        data={
            "lines": [{"sku": line.sku, "quantity": line.quantity} for line in order_lines],
            "total_minor": order.total_minor,
            "currency": currency,
        },
        at=now,
    )
    return order, created


def order_update(
    *,
    repository: OrderRepository,
    order_id: uuid.UUID,
    actor: Actor,
    shipping_address: ShippingAddress | None = None,
    notes: str | None = None,
) -> Order:
    """Change the editable fields. Customers may do so only before the order is paid."""
    return _apply(
        repository, order_id, partial(_edit, actor=actor, shipping_address=shipping_address, notes=notes)
    )


def order_add_note(*, repository: OrderRepository, order_id: uuid.UUID, actor: Actor, text: str) -> Order:
    """Append a note to the order's audit trail."""
    text = _note_text(text)
    return _apply(repository, order_id, partial(_add_note, actor=actor, text=text))


def order_patch(
    *,
    repository: OrderRepository,
    order_id: uuid.UUID,
    actor: Actor,
    shipping_address: ShippingAddress | None = None,
    notes: str | None = None,
    note: str | None = None,
    status: OrderStatus | None = None,
) -> Order:
    """Apply a partial change as one atomic write: edit the shipping address and notes (as
    `order_update`), append `note` (as `order_add_note`), then move to `status` (as
    `order_transition`; staff only, else `StatusChangeNotAllowed`).

    All or nothing: an illegal transition is refused before anything else is looked at, and any
    refusal (`IllegalTransition`, `OrderNotEditable`, `OrderValidationError`) writes nothing.
    """
    if status is not None and actor.kind != "staff":
        raise StatusChangeNotAllowed()
    text = _note_text(note) if note is not None else None

    def change(order: Order) -> bool:
        wanted = status if status is not None else order.status
        if wanted != order.status and not can_transition(order.status, wanted):
            raise IllegalTransition(order.status, wanted)
        if wanted != order.status and wanted in MONEY_STATUSES:
            raise StatusFollowsMoney(wanted)
        changed = _edit(order, actor=actor, shipping_address=shipping_address, notes=notes)
        if text is not None:
            changed = _add_note(order, actor=actor, text=text) or changed
        if wanted != order.status:
            order.transition_to(wanted, actor=actor)
            changed = True
        return changed

    return _apply(repository, order_id, change)


def _edit(order: Order, *, actor: Actor, shipping_address: ShippingAddress | None, notes: str | None) -> bool:
    if shipping_address is None and notes is None:
        return False
    if actor.kind != "staff" and order.status not in CUSTOMER_EDITABLE_STATUSES:
        raise OrderNotEditable(f"An order that is {order.status} can no longer be changed.")
    changed: dict[str, Any] = {}
    if shipping_address is not None and shipping_address != order.shipping_address:
        changed["shipping_address"] = {
            "from": order.shipping_address.as_dict(),
            "to": shipping_address.as_dict(),
        }
        order.shipping_address = shipping_address
    if notes is not None and notes != order.notes:
        changed["notes"] = {"from": order.notes, "to": notes}
        order.notes = notes
    if not changed:
        return False
    order.updated_at = utcnow()
    order.record(type=EventType.EDITED, actor=actor, data={"changed": changed}, at=order.updated_at)
    return True


def _note_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise OrderValidationError({"note": ["A note cannot be empty."]})
    return text


def _add_note(order: Order, *, actor: Actor, text: str) -> bool:
    order.updated_at = utcnow()
    order.record(type=EventType.NOTE_ADDED, actor=actor, data={"text": text}, at=order.updated_at)
    return True


def order_record_refund(
    *, repository: OrderRepository, order_id: uuid.UUID, actor: Actor, data: dict[str, Any]
) -> Order:
    """Append a refund to the order's audit trail (its status may or may not change with it)."""
    return order_record_event(
        repository=repository, order_id=order_id, event_type=EventType.REFUND_RECORDED, actor=actor, data=data
    )


def order_record_event(
    *,
    repository: OrderRepository,
    order_id: uuid.UUID,
    event_type: EventType,
    actor: Actor,
    data: dict[str, Any],
) -> Order:
    """Append a payments fact (a refund that failed, a payment held or reversed) to the audit
    trail; the status does not change."""

    def change(order: Order) -> bool:
        order.updated_at = utcnow()
        order.record(type=event_type, actor=actor, data=data, at=order.updated_at)
        return True

    return _apply(repository, order_id, change)


def order_correct_status(
    *,
    repository: OrderRepository,
    order_id: uuid.UUID,
    to_status: OrderStatus,
    actor: Actor,
    reason: str,
    data: dict[str, Any],
) -> Order:
    """Move the order back along `CORRECTIONS` (a refund failed after it succeeded)."""

    def change(order: Order) -> bool:
        if order.status == to_status:
            return False
        order.correct_to(to_status, actor=actor, reason=reason, data=data)
        return True

    return _apply(repository, order_id, change)


def order_transition(
    *,
    repository: OrderRepository,
    order_id: uuid.UUID,
    to_status: OrderStatus,
    actor: Actor,
    data: dict[str, Any] | None = None,
    outbox: Callable[[Order], Sequence[OutboxMessage]] | None = None,
) -> Order:
    """Move the order to `to_status` if the state machine allows it (else `IllegalTransition`).

    Cancelling an order that still holds stock gives the stock back (see `_apply`).
    `outbox`, if given, makes the side effects to store atomically with the change.
    """

    def change(order: Order) -> bool:
        order.transition_to(to_status, actor=actor, data=data)
        return True

    return _apply(repository, order_id, change, outbox=outbox)


def order_cancel(
    *, repository: OrderRepository, order_id: uuid.UUID, actor: Actor, reason: str = ""
) -> Order:
    """Cancel the order (orders are never deleted); its reserved stock is released."""
    return order_transition(
        repository=repository,
        order_id=order_id,
        to_status=OrderStatus.CANCELLED,
        actor=actor,
        data={"reason": reason} if reason else None,
    )


# --- unpaid orders expire --------------------------------------------------------------------
EXPIRY_ACTOR = Actor.system("expiry")


@dataclass
class ExpiryReport:
    cancelled: int = 0
    held: int = 0  # due, but a hold (a payment under way) keeps them for now
    skipped: int = 0  # changed by someone else meanwhile (paid, cancelled): left as they are


def orders_expire_unpaid(*, repository: OrderRepository, now: datetime | None = None) -> ExpiryReport:
    """Cancel every order still unpaid ORDER_PAYMENT_TIMEOUT_MINUTES after it was placed.

    Each goes through `order_cancel` like any cancel: its stock is released, the audit trail
    says `system:expiry` and why, and the customer is told (the email says nothing was charged).
    Orders that a check of ORDER_EXPIRY_HOLDS holds (a payment under way) wait for a later run.
    Safe to run twice at once: each cancel is one atomic, version-checked change, so an order
    is cancelled once and the other run's `IllegalTransition` or `ConcurrentUpdate` only skips
    it. Reads go through `OrderRepository.list` page by page, so it works on every adapter.
    """
    report = ExpiryReport()
    minutes = settings.ORDER_PAYMENT_TIMEOUT_MINUTES
    if minutes <= 0:
        return report
    cutoff = (now or utcnow()) - timedelta(minutes=minutes)
    holds = [import_string(path) for path in settings.ORDER_EXPIRY_HOLDS]
    reason = f"Not paid within {minutes} minutes"
    for status in sorted(STOCK_HOLDING_STATUSES):
        cursor: str | None = None
        while True:
            page = repository.list(
                OrderQuery(
                    status=status,
                    created_to=cutoff,
                    newest_first=False,
                    limit=settings.ORDER_EXPIRY_BATCH,
                    cursor=cursor,
                )
            )
            for order in page.orders:
                _expire(repository, order.id, reason=reason, holds=holds, report=report)
            if page.next_cursor is None:
                break
            # The cursor is a position (created_at, id), so orders leaving the status on this
            # page do not move the next one.
            cursor = page.next_cursor
    if report.cancelled or report.held:
        logger.info(
            "Expired %s unpaid order(s); %s held by a payment under way, %s changed meanwhile",
            report.cancelled,
            report.held,
            report.skipped,
            extra={"event": "orders.expired", "cancelled": report.cancelled},
        )
    return report


def _expire(
    repository: OrderRepository,
    order_id: uuid.UUID,
    *,
    reason: str,
    holds: list[Callable[[uuid.UUID], bool]],
    report: ExpiryReport,
) -> None:
    if any(hold(order_id) for hold in holds):
        report.held += 1
        return
    try:
        order_cancel(repository=repository, order_id=order_id, actor=EXPIRY_ACTOR, reason=reason)
    except (IllegalTransition, ConcurrentUpdate, OrderNotFound) as exc:
        # Paid, cancelled or being changed by someone else (another sweep): not ours to cancel.
        logger.info("Order %s not expired: %s", order_id, exc)
        report.skipped += 1
    else:
        report.cancelled += 1


# --- helpers --------------------------------------------------------------------------------
def _anonymous_hold_key(address: str) -> str:
    return "orders:anonymous-hold:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()[:40]


@contextmanager
def _anonymous_hold(
    repository: OrderRepository, address: str, *, units: int
) -> Iterator[Callable[[Order], None]]:
    """Refuse a guest order that would take `address` over ORDER_ANON_HOLD_MAX_UNITS held units.

    The shared cache keeps, per address, only which orders it placed ({order id: units});
    what they hold is read from the orders themselves, so an order that is paid, cancelled or
    expired stops counting by itself, with no hook on those changes and nothing to drift. They
    are read only when the units they were placed with would not leave room for this order, so
    a request within the limit costs a few cache operations and no read of any order.
    (The repository cannot filter orders by address, and the order does not store it.) The
    check and the placing run under a short per-address lock, so two requests at once cannot
    both squeeze under the limit. Yields `remember(order)` for the order once placed.
    """
    cache = caches["shared"]
    key = _anonymous_hold_key(address)
    limit = settings.ORDER_ANON_HOLD_MAX_UNITS
    # Entries outlive the orders' expiry; after that they are dropped (or pruned below).
    timeout = (
        settings.ORDER_PAYMENT_TIMEOUT_MINUTES * 60 + 3600
        if settings.ORDER_PAYMENT_TIMEOUT_MINUTES > 0
        else None
    )
    # The check and the placing, one at a time per address: under the per-address lock, or, where
    # the cache is a table of this SQLite database and the order is written in it too, in one
    # transaction, which holds SQLite's one write lock from its start (no lock to take and
    # release: one write transaction instead of four).
    guard: Any
    if repository.shares_database_transaction and writes_serialized(cache):
        guard = transaction.atomic(using=cache_database(cache))
    else:
        guard = shared_lock(key, wait=SHARED_LOCK_WAIT_SECONDS, hold=SHARED_LOCK_SECONDS)
    refused: HoldLimitExceeded | None = None
    with guard:
        remembered: dict[str, int] = cache.get(key) or {}
        # What the remembered orders placed is at least what they hold now (an order stops
        # holding, it does not start again): while that fits, no order needs reading.
        if sum(remembered.values()) + units <= limit:
            placed = dict(remembered)
            remembered = {}
        else:
            placed = {}
        for order_id, held_units in remembered.items():
            try:
                status = repository.get(uuid.UUID(order_id)).status
            except OrderNotFound:
                # Orders are never deleted and each is remembered once its write is done (the
                # pages and the API call this outside any wider transaction), so this one is
                # gone for good (a test database flushed, a store replaced): it holds nothing.
                continue
            if status in STOCK_HOLDING_STATUSES:
                placed[order_id] = held_units
        held = sum(placed.values())
        if held + units > limit:
            cache.set(key, placed, timeout=timeout)
            refused = HoldLimitExceeded(
                f"Orders placed without an account from your address already hold {held} unpaid"
                f" item(s); at most {limit} may be held at once. Pay for or cancel an order first,"
                " or sign in.",
                held=held,
                limit=limit,
            )
        else:
            new: list[Order] = []
            yield new.append
            for order in new:
                placed[str(order.id)] = sum(line.quantity for line in order.lines)
            cache.set(key, placed, timeout=timeout)
    if refused is not None:
        raise refused  # once the pruned entry is stored (out of the transaction, if one)


def _apply(
    repository: OrderRepository,
    order_id: uuid.UUID,
    change: Callable[[Order], bool],
    *,
    outbox: Callable[[Order], Sequence[OutboxMessage]] | None = None,
) -> Order:
    """Read the order, apply `change` and save it, re-reading when another writer got first.

    `change` changes only the order in memory and returns False when there is nothing to store.
    Domain errors it raises go to the caller with nothing written. Status changes the world
    hears about get their outbox entries in the same atomic write, and the outbox hook runs once
    the write is committed. A change from a stock-holding status to `cancelled` gives the stock
    back: in the same transaction as the save on a store that shares it (the ORM), else through
    a `PendingStockChange` that the save's outcome settles.
    """
    for attempt in range(1, CONCURRENT_UPDATE_ATTEMPTS + 1):
        order = repository.get(order_id)
        held = order.status in STOCK_HOLDING_STATUSES
        if not change(order):
            return order
        messages = [*_notifications(order), *(outbox(order) if outbox else ())]
        changes = [
            (event.type, event.to_status.value)
            for event in order.pending_events
            if event.type == EventType.STATUS_CHANGED and event.to_status is not None
        ]
        cancel = next(
            (
                event
                for event in order.pending_events
                if held
                and event.type == EventType.STATUS_CHANGED
                and event.to_status == OrderStatus.CANCELLED
            ),
            None,
        )
        try:
            if repository.shares_database_transaction:
                with transaction.atomic():
                    if cancel is not None:
                        _release_stock(order.lines)
                    repository.save(order, outbox=messages)
            elif cancel is not None:
                with transaction.atomic(durable=True):
                    release = _stock_change(order, cancel, kind=PendingStockChange.Kind.RELEASE)
                _write_settling(release, partial(repository.save, order, outbox=messages))
            else:
                repository.save(order, outbox=messages)
        except ConcurrentUpdate:
            if attempt == CONCURRENT_UPDATE_ATTEMPTS:
                raise
            continue
        # On commit of the caller's transaction, if there is one; else now.
        if changes:
            transaction.on_commit(partial(_report_events, order.id, changes))
        if messages:
            transaction.on_commit(partial(_outbox_committed, [order.id]))
        return order
    raise AssertionError("unreachable")  # pragma: no cover


# --- stock and the order store ---------------------------------------------------------------
# Stock lives in this database. An order store with its own storage (DynamoDB) shares no
# transaction with it, so each stock move for an order write there is a `PendingStockChange`
# committed before the write: a reservation (stock taken with it) or a release (stock still
# taken). The write's outcome settles it: the order's audit trail holds the change's event or
# not. A definite refusal (a duplicate, a version conflict, an invalid order) settles it at
# once; any other failure (a timeout, an unreachable endpoint: the write may still land), or a
# crash, or a failure of the settling itself, leaves it to `stock_changes_settle`, which runs
# every minute and settles what is older than STOCK_SETTLE_AFTER. Stock is therefore never
# given back for an order that holds it, and never kept for longer than that for one that
# does not.
_WRITE_REFUSED = (
    DuplicateOrder,
    ConcurrentUpdate,
    OrderNotFound,
    OrderValidationError,
    TypeError,
    ValueError,
)


def _stock_change(order: Order, event: OrderEvent, *, kind: PendingStockChange.Kind) -> PendingStockChange:
    """Record a stock move for `order`'s coming write, whose proof is `event`. Call inside the
    (durable) transaction that takes the stock, for a reservation."""
    now = utcnow()
    return PendingStockChange.objects.create(
        order_id=order.id,
        event_id=event.id,
        kind=kind,
        lines=[[line.product_id, line.quantity] for line in order.lines],
        created_at=now,
        settle_after=now + STOCK_SETTLE_AFTER,
    )


def _write_settling(pending: PendingStockChange, write: Callable[[], None]) -> None:
    """Make the order store's `write` and settle `pending` by its outcome when it is known."""
    try:
        write()
    except _WRITE_REFUSED:
        _settle_or_leave(pending, happened=False)
        raise
    _settle_or_leave(pending, happened=True)


def _settle_or_leave(pending: PendingStockChange, *, happened: bool) -> None:
    try:
        _settle(pending, happened=happened)
    except DatabaseError:
        logger.exception(
            "Stock change %s of order %s not settled; the sweep will settle it",
            pending.pk,
            pending.order_id,
            extra={"event": "orders.stock_change_unsettled", "order_id": pending.order_id},
        )


def _settle(pending: PendingStockChange, *, happened: bool) -> None:
    """Forget `pending`, giving its stock back if the write it belongs to says so: a
    reservation whose order was not stored, a release whose cancel was. Once only: whoever
    deletes the row (the writer or the sweep) gives the stock back, in the same transaction."""
    with transaction.atomic(durable=True):
        deleted, _ = PendingStockChange.objects.filter(pk=pending.pk).delete()
        if deleted and (pending.kind == PendingStockChange.Kind.RESERVE) != happened:
            for product_id, quantity in sorted(pending.lines):
                Product.objects.filter(pk=product_id).update(stock=F("stock") + quantity)


def stock_changes_settle(*, repository: OrderRepository, now: datetime | None = None) -> int:
    """Settle every stock change older than STOCK_SETTLE_AFTER by its order's audit trail (the
    write crashed, timed out, or its settling failed); returns how many were settled.

    Safe to run twice at once, and beside the writers: each change is settled once.
    """
    due = PendingStockChange.objects.filter(settle_after__lte=now or utcnow()).order_by("settle_after")
    settled = 0
    for pending in due.iterator():
        try:
            happened = pending.event_id in {event.id for event in repository.events(pending.order_id)}
            _settle(pending, happened=happened)
        except Exception:  # one change the store cannot answer for must not hold back the rest
            logger.exception(
                "Stock change %s of order %s could not be settled; it is tried again next time",
                pending.pk,
                pending.order_id,
                extra={"event": "orders.stock_change_settle_failed", "order_id": pending.order_id},
            )
            continue
        settled += 1
        logger.info(
            "Stock change %s (%s) of order %s settled late: the write %s",
            pending.pk,
            pending.kind,
            pending.order_id,
            "happened" if happened else "did not happen",
            extra={"event": "orders.stock_change_settled", "order_id": pending.order_id},
        )
    return settled


def _notifications(order: Order) -> list[OutboxMessage]:
    """One outbox entry per pending status change that the world is told about.

    The entry names the order version the save is about to store, so (order, event, version)
    identifies it however often it is relayed.
    """
    version = order.version + 1
    return [
        OutboxMessage(
            order_id=order.id,
            # A correction (money that moved back) is its own event: the analytics sheet and the
            # notification topic follow the order's status, the customer is told nothing new.
            event_type="order.corrected" if event.data.get("correction") else f"order.{event.to_status}",
            order_version=version,
            payload={
                "order": order.snapshot() | {"version": version},
                "event": {
                    "from_status": event.from_status.value if event.from_status else None,
                    "to_status": event.to_status.value,
                    "actor": event.actor,
                    "at": event.created_at.isoformat(),
                    "data": event.data,
                },
            },
            created_at=event.created_at,
        )
        for event in order.pending_events
        if event.type == EventType.STATUS_CHANGED and event.to_status in NOTIFIED_STATUSES
    ]


def _report_events(order_id: uuid.UUID, events: list[tuple[EventType, str]]) -> None:
    """Log an order's creation and status changes once committed, as structured events
    (`order.created`, `order.status_changed`) for whoever watches: the monitoring figures."""
    for type_, status in events:
        if type_ == EventType.CREATED:
            logger.info("Order %s placed", order_id, extra={"event": "order.created", "order_id": order_id})
        else:
            logger.info(
                "Order %s is now %s",
                order_id,
                status,
                extra={"event": "order.status_changed", "order_id": order_id, "status": status},
            )


def _outbox_committed(order_ids: list[uuid.UUID]) -> None:
    """Tell the fan-out (settings.OUTBOX_COMMIT_HOOK) that outbox entries are committed.

    Only a nudge for speed: entries it misses are picked up by the relay's sweep, so a failure
    here is logged and never reaches the caller.
    """
    try:
        import_string(settings.OUTBOX_COMMIT_HOOK)(order_ids)
    except Exception:
        logger.exception("The outbox hook failed for orders %s; the sweep will relay them", order_ids)


def _merge_lines(lines: Sequence[LineRequest]) -> list[LineRequest]:
    """One line per sku, in the order first seen; quantities of repeated skus add up."""
    if not lines:
        raise OrderValidationError({"lines": ["An order needs at least one line."]})
    if len(lines) > settings.ORDER_MAX_LINES:
        raise OrderValidationError({"lines": [f"At most {settings.ORDER_MAX_LINES} lines."]})
    quantities: dict[str, int] = {}
    for line in lines:
        quantities[line.sku] = quantities.get(line.sku, 0) + line.quantity
    limit = settings.ORDER_MAX_QUANTITY_PER_LINE
    too_many = [sku for sku, quantity in quantities.items() if not 1 <= quantity <= limit]
    if too_many:
        raise OrderValidationError(
            {"lines": [f"Quantity of {sku} must be between 1 and {limit}." for sku in too_many]}
        )
    return [LineRequest(sku=sku, quantity=quantity) for sku, quantity in quantities.items()]


def _price_and_reserve(lines: Sequence[LineRequest]) -> tuple[list[OrderLine], str]:
    """Order lines priced from the catalog, their stock taken. Call inside a transaction."""
    order_lines, currency = _price(lines)
    _reserve(order_lines)
    return order_lines, currency


def _price(lines: Sequence[LineRequest]) -> tuple[list[OrderLine], str]:
    """Order lines priced from the catalog (active products only), and their currency."""
    products = {p.sku: p for p in Product.objects.filter(sku__in=[line.sku for line in lines], active=True)}
    unknown = [line.sku for line in lines if line.sku not in products]
    if unknown:
        raise OrderValidationError(
            {"lines": [f"No product with sku {sku!r} is for sale." for sku in unknown]}
        )
    currencies = {products[line.sku].currency for line in lines}
    if len(currencies) > 1:
        raise OrderValidationError(
            {"lines": [f"All products of one order must share a currency, not {sorted(currencies)}."]}
        )
    order_lines = [
        OrderLine(
            product_id=products[line.sku].pk,
            sku=line.sku,
            name=products[line.sku].name,
            unit_price_minor=products[line.sku].price_minor,
            quantity=line.quantity,
        )
        for line in lines
    ]
    return order_lines, currencies.pop()


def _reserve(order_lines: Sequence[OrderLine]) -> None:
    """Take the stock of the priced lines, or raise `OrderValidationError` naming what is short.
    Call inside a transaction (a shortage leaves the transaction to be rolled back)."""
    short: list[str] = []
    # A conditional decrement per product, in id order: atomic on every database, and two orders
    # taking the same products lock them in the same order.
    for line in sorted(order_lines, key=lambda line: line.product_id):
        taken = Product.objects.filter(pk=line.product_id, stock__gte=line.quantity).update(
            stock=F("stock") - line.quantity
        )
        if not taken:
            left = Product.objects.values_list("stock", flat=True).get(pk=line.product_id)
            short.append(f"Only {left} of {line.sku} left in stock; {line.quantity} asked for.")
    if short:
        raise OrderValidationError({"lines": short}, message="Not enough stock.")


def _release_stock(lines: Sequence[OrderLine]) -> None:
    for line in sorted(lines, key=lambda line: line.product_id):
        Product.objects.filter(pk=line.product_id).update(stock=F("stock") + line.quantity)


def _fingerprint(
    *,
    customer_id: int | None,
    email: str,
    lines: Sequence[LineRequest],
    shipping_address: ShippingAddress,
    notes: str,
) -> str:
    canonical = json.dumps(
        {
            "customer_id": customer_id,
            "email": email.lower(),
            "lines": sorted([line.sku, line.quantity] for line in lines),
            "shipping_address": shipping_address.as_dict(),
            "notes": notes,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(earlier: Order, fingerprint: str) -> Order:
    if earlier.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request; use a new key."
        )
    return earlier
