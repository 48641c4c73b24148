"""Reads of the orders app: the catalog, and orders as a given viewer may see them."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from orders.domain import (
    EventType,
    Order,
    OrderEvent,
    OrderNotFound,
    OrderPage,
    OrderQuery,
    OrderStatus,
    ShippingAddress,
)
from orders.models import Product
from orders.repositories import OrderRepository


def product_list() -> QuerySet[Product]:
    return Product.objects.filter(active=True).order_by("name", "sku")


def product_get(*, sku: str) -> Product | None:
    return product_list().filter(sku=sku).first()


@dataclass(frozen=True, slots=True)
class CartLine:
    """One cart line priced from the catalog now; `product` is None when it is no longer for sale."""

    sku: str
    quantity: int
    product: Product | None

    @property
    def line_total_minor(self) -> int:
        return self.product.price_minor * self.quantity if self.product else 0

    @property
    def over_stock(self) -> bool:
        return self.product is not None and self.quantity > self.product.stock


@dataclass(frozen=True, slots=True)
class CartSummary:
    lines: list[CartLine]
    subtotals: list[tuple[str, int]]  # (currency, minor units), for display only

    @property
    def has_unavailable(self) -> bool:
        return any(line.product is None for line in self.lines)

    @property
    def has_over_stock(self) -> bool:
        return any(line.over_stock for line in self.lines)


def cart_summary(items: dict[str, int]) -> CartSummary:
    """A session cart's lines priced from the catalog as it is now; orders are priced again."""
    products = {product.sku: product for product in product_list().filter(sku__in=list(items))}
    lines = [
        CartLine(sku=sku, quantity=quantity, product=products.get(sku)) for sku, quantity in items.items()
    ]
    subtotals: dict[str, int] = {}
    for line in lines:
        if line.product is not None:
            subtotals[line.product.currency] = subtotals.get(line.product.currency, 0) + line.line_total_minor
    return CartSummary(lines=lines, subtotals=sorted(subtotals.items()))


def order_visible_to(
    order: Order,
    user: AbstractBaseUser | AnonymousUser | None,
    *,
    guest_order_ids: Collection[str] = (),
) -> bool:
    """Staff see every order, customers their own, a guest's browser the orders it placed."""
    if user is not None and user.is_authenticated and (user.is_staff or order.customer_id == user.pk):
        return True
    return order.is_guest and str(order.id) in guest_order_ids


def order_get(
    *,
    repository: OrderRepository,
    order_id: uuid.UUID | str,
    user: AbstractBaseUser | AnonymousUser | None,
    guest_order_ids: Collection[str] = (),
) -> Order:
    """The order if `user` may see it; `OrderNotFound` otherwise, so no one learns it exists."""
    try:
        order_uuid = order_id if isinstance(order_id, uuid.UUID) else uuid.UUID(str(order_id))
    except ValueError as exc:
        raise OrderNotFound(order_id) from exc
    order = repository.get(order_uuid)
    if not order_visible_to(order, user, guest_order_ids=guest_order_ids):
        raise OrderNotFound(order_uuid)
    return order


def order_list(
    *,
    repository: OrderRepository,
    user: AbstractBaseUser,
    status: OrderStatus | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    newest_first: bool = True,
    limit: int = 20,
    cursor: str | None = None,
) -> OrderPage:
    """One page of the orders `user` may see: all for staff, their own for customers."""
    return repository.list(
        OrderQuery(
            customer_id=None if user.is_staff else user.pk,
            status=status,
            created_from=created_from,
            created_to=created_to,
            newest_first=newest_first,
            limit=limit,
            cursor=cursor,
        )
    )


def order_events(*, repository: OrderRepository, order: Order) -> list[OrderEvent]:
    return repository.events(order.id)


# --- the customer's view of an order --------------------------------------------------------
# Statuses an order reaches only after its payment arrived.
_PAID_STATUSES = frozenset(
    {OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}
)
# Actors whose words (a note) the customer may read back: their own. Staff notes, refund and
# cancellation reasons are internal and never reach a customer page.
_CUSTOMER_ACTOR_KINDS = frozenset({"customer", "guest"})
# Events whose amount the customer sees in the history.
_MONEY_EVENTS = frozenset({EventType.REFUND_RECORDED, EventType.REFUND_FAILED, EventType.PAYMENT_REVERSED})


@dataclass(frozen=True, slots=True)
class CustomerRefund:
    """A refund as the customer sees it: how much, when; `failed` when it did not reach them."""

    amount_minor: int
    currency: str
    at: datetime
    failed: bool = False


@dataclass(frozen=True, slots=True)
class CustomerPayment:
    """What the customer paid for an order, got back and paid in the end (minor units)."""

    currency: str
    paid_minor: int
    refunds: list[CustomerRefund]

    @property
    def refunded_minor(self) -> int:
        return sum(refund.amount_minor for refund in self.refunds if not refund.failed)

    @property
    def net_minor(self) -> int:
        return self.paid_minor - self.refunded_minor


@dataclass(frozen=True, slots=True)
class CustomerEvent:
    """One line of the order's history for the customer: the event, and only what they may read
    of its data (their own note; a refund's amount)."""

    event: OrderEvent
    note: str = ""
    amount_minor: int | None = None
    currency: str = ""

    @property
    def label(self) -> str:
        return _CUSTOMER_LABELS.get(self.event.type, self.event.type.label)


_CUSTOMER_LABELS = {
    EventType.REFUND_RECORDED: "Refunded",
    EventType.REFUND_FAILED: "Refund failed",
    EventType.PAYMENT_REVERSED: "Extra payment, refunded automatically",
    EventType.NOTE_ADDED: "Your note",
}


def order_customer_payment(*, order: Order, events: list[OrderEvent]) -> CustomerPayment | None:
    """What the customer paid for the order and got back, read from the order's audit trail (the
    payments app records each payment fact there); None while nothing is paid.

    Only refunds that succeeded are recorded; one that failed afterwards stays listed as failed
    and does not count.
    """
    failed = {
        str(event.data.get("refund_id"))
        for event in events
        if event.type == EventType.REFUND_FAILED and event.data.get("refund_id")
    }
    refunds = [
        CustomerRefund(
            amount_minor=int(event.data.get("amount_minor") or 0),
            currency=str(event.data.get("currency") or order.currency).upper(),
            at=event.created_at,
            failed=str(event.data.get("refund_id")) in failed,
        )
        for event in events
        if event.type == EventType.REFUND_RECORDED
    ]
    # A charge the order did not want (a second one, or one after it was cancelled) was paid too,
    # and is refunded automatically: it shows as paid and refunded.
    unwanted = sum(
        int(event.data.get("amount_minor") or 0)
        for event in events
        if event.type == EventType.PAYMENT_REVERSED
    )
    paid = (order.total_minor if order.status in _PAID_STATUSES else 0) + unwanted
    if not paid and not refunds:
        return None
    return CustomerPayment(currency=order.currency, paid_minor=paid, refunds=refunds)


def order_customer_history(*, events: list[OrderEvent]) -> list[CustomerEvent]:
    """The audit trail as the customer may read it: only the customer's own words (their notes,
    the reason of their own cancellation) and refund amounts; staff's and the system's notes and
    reasons (a refund's reason, a cancellation by staff) are internal and left out."""
    history = []
    for event in events:
        kind = str(event.actor).partition(":")[0]
        if event.type == EventType.NOTE_ADDED:
            if kind in _CUSTOMER_ACTOR_KINDS:
                history.append(CustomerEvent(event=event, note=str(event.data.get("text") or "")))
        elif event.type in _MONEY_EVENTS:
            history.append(
                CustomerEvent(
                    event=event,
                    amount_minor=int(event.data.get("amount_minor") or 0),
                    currency=str(event.data.get("currency") or "").upper(),
                )
            )
        elif event.type == EventType.PAYMENT_HELD:
            continue  # staff's business until they decide: then a status change or a refund shows
        else:
            # The customer's own reason ("Cancelled from the order page.") reads back to them.
            own = kind in _CUSTOMER_ACTOR_KINDS
            history.append(
                CustomerEvent(event=event, note=str(event.data.get("reason") or "") if own else "")
            )
    return history


# What of an event's data a customer may read: amounts, their own edits, why a payment failed.
_CUSTOMER_DATA_KEYS = frozenset({"amount_minor", "currency", "refunded_minor", "failure_message", "changed"})


def order_events_for(
    *, repository: OrderRepository, order: Order, user: AbstractBaseUser | AnonymousUser | None
) -> list[OrderEvent]:
    """The audit trail as `user` may read it: all of it for staff; for the customer, without
    staff's and the system's notes and reasons, and without provider ids (as on the order page)."""
    events = order_events(repository=repository, order=order)
    if user is not None and user.is_authenticated and user.is_staff:
        return events
    visible = []
    for event in events:
        own = str(event.actor).partition(":")[0] in _CUSTOMER_ACTOR_KINDS
        if event.type == EventType.PAYMENT_HELD or (event.type == EventType.NOTE_ADDED and not own):
            continue
        data = {key: value for key, value in event.data.items() if key in _CUSTOMER_DATA_KEYS}
        if own:
            data |= {key: event.data[key] for key in ("reason", "text") if key in event.data}
        visible.append(replace(event, data=data))
    return visible


def customer_last_address(*, repository: OrderRepository, user: AbstractBaseUser) -> ShippingAddress | None:
    """Where the customer's newest order went (their own, also for staff), to prefill checkout."""
    page = repository.list(OrderQuery(customer_id=user.pk, limit=1))
    return page.orders[0].shipping_address if page.orders else None


def guest_orders(*, repository: OrderRepository, order_ids: Collection[str]) -> list[Order]:
    """The guest orders placed from this browser (their ids kept in the session), newest first."""
    found = []
    for order_id in order_ids:
        try:
            found.append(repository.get(uuid.UUID(str(order_id))))
        except (OrderNotFound, ValueError):
            continue
    return sorted(found, key=lambda order: order.created_at, reverse=True)
