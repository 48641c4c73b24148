"""The order domain: plain dataclasses, the status state machine and the domain errors.

Nothing here imports Django's ORM: orders are stored through an `OrderRepository` adapter (the
ORM by default, DynamoDB later), and every adapter reads and writes these types. Nothing here
imports Django at all: `config/settings.py` derives its order events from this module.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.errors import ApplicationError


def utcnow() -> datetime:
    return datetime.now(tz=UTC)


class OrderStatus(enum.StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAYMENT_FAILED = "payment_failed"
    PAID = "paid"
    FULFILLED = "fulfilled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(status.value, status.label) for status in cls]


# The state machine, in one place: the statuses each status may move to.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING_PAYMENT: frozenset(
        {OrderStatus.PAID, OrderStatus.PAYMENT_FAILED, OrderStatus.CANCELLED}
    ),
    OrderStatus.PAYMENT_FAILED: frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.CANCELLED}),
    OrderStatus.PAID: frozenset(
        {OrderStatus.FULFILLED, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}
    ),
    OrderStatus.PARTIALLY_REFUNDED: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.FULFILLED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}

# Corrections that follow money back, never offered as edits: a refund that failed after it
# succeeded (the card was closed) returns the order to what its remaining refunds say.
# They tell the customer nothing new: their outbox entry is `order.corrected`, which the records
# (sheet, notification topic) follow and the email does not (`Order.correct_to`).
CORRECTIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.REFUNDED: frozenset({OrderStatus.PARTIALLY_REFUNDED, OrderStatus.PAID}),
    OrderStatus.PARTIALLY_REFUNDED: frozenset({OrderStatus.PAID}),
}

# Statuses that follow money through the payment services (a payment settling, a refund
# landing): never a bare status edit, in the admin or the API.
MONEY_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED})

# Orders whose stock is still held for them; leaving these for `cancelled` releases it.
STOCK_HOLDING_STATUSES = frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.PAYMENT_FAILED})
# Orders the customer may still edit (address, notes) or cancel.
CUSTOMER_EDITABLE_STATUSES = STOCK_HOLDING_STATUSES


# Changes the world is told about (email, analytics sheet, notification): each writes an outbox
# entry in the same atomic write as the change.
NOTIFIED_STATUSES = frozenset(
    {
        OrderStatus.PAID,
        OrderStatus.PAYMENT_FAILED,
        OrderStatus.REFUNDED,
        OrderStatus.PARTIALLY_REFUNDED,
        OrderStatus.CANCELLED,
    }
)


def status_event_type(status: OrderStatus) -> str:
    """The outbox event type of a change to `status`: "order.paid", ..."""
    return f"order.{status}"


# The outbox event types: one per notified status (in the statuses' order), and a correction.
NOTIFIED_EVENT_TYPES = tuple(
    status_event_type(status) for status in OrderStatus if status in NOTIFIED_STATUSES
)
CORRECTED_EVENT_TYPE = "order.corrected"


def can_transition(from_status: OrderStatus, to_status: OrderStatus) -> bool:
    return to_status in TRANSITIONS[from_status]


class EventType(enum.StrEnum):
    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    EDITED = "edited"
    NOTE_ADDED = "note_added"
    REFUND_RECORDED = "refund_recorded"
    REFUND_FAILED = "refund_failed"  # a refund failed after it had succeeded
    PAYMENT_HELD = "payment_held"  # money arrived that does not match the order: for review
    PAYMENT_REVERSED = "payment_reversed"  # an unexpected charge, refunded automatically

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(event_type.value, event_type.label) for event_type in cls]


# --- Errors ---------------------------------------------------------------------------------
# Each says the HTTP status and code it becomes in the API (core.exceptions).
class OrderError(ApplicationError):
    """Base of every error the order domain raises on purpose."""


class OrderNotFound(OrderError):
    http_status = 404
    code = "not_found"

    def __init__(self, order_id: uuid.UUID | str) -> None:
        super().__init__(f"Order {order_id} was not found.")
        self.order_id = order_id


class IllegalTransition(OrderError):
    http_status = 409
    code = "illegal_transition"

    def __init__(self, from_status: OrderStatus, to_status: OrderStatus) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[from_status])) or "none (it is final)"
        super().__init__(f"An order that is {from_status} cannot become {to_status}; allowed: {allowed}.")
        self.from_status = from_status
        self.to_status = to_status


class ConcurrentUpdate(OrderError):
    http_status = 409
    code = "concurrent_update"

    def __init__(self, order_id: uuid.UUID, expected_version: int) -> None:
        super().__init__(
            f"Order {order_id} was changed by someone else (expected version {expected_version})."
            " Reload it and try again."
        )
        self.order_id = order_id
        self.expected_version = expected_version


class DuplicateOrder(OrderError):
    """The repository already holds an order with this id or idempotency key."""

    http_status = 409
    code = "conflict"


class IdempotencyConflict(OrderError):
    """The Idempotency-Key was used before with a different request."""

    http_status = 422
    code = "idempotency_conflict"


class OrderValidationError(OrderError):
    """Input that is well formed but not acceptable; `fields` maps field names to messages."""

    http_status = 400
    code = "invalid"

    def __init__(self, fields: dict[str, Any], message: str = "Invalid input.") -> None:
        super().__init__(message)
        self.fields = fields


class OrderNotEditable(OrderError):
    http_status = 409
    code = "not_editable"


class StatusChangeNotAllowed(OrderError):
    """Only staff move an order from one status to another by hand."""

    http_status = 403
    code = "permission_denied"

    def __init__(self) -> None:
        super().__init__("Only staff may change an order's status.")


class StatusFollowsMoney(OrderError):
    """Paid, partially refunded and refunded follow money; they are never set by hand."""

    http_status = 409
    code = "status_follows_money"

    def __init__(self, to_status: OrderStatus) -> None:
        super().__init__(
            f"An order becomes {to_status} only when money moves: pay it through the payments "
            "API or refund it through the refunds API."
        )
        self.to_status = to_status


class HoldLimitExceeded(OrderError):
    """An anonymous client already holds, in unpaid orders, as many units as it may
    (`ORDER_ANON_HOLD_MAX_UNITS` per source address): stock no one pays for is stock no one can buy."""

    http_status = 409
    code = "hold_limit_exceeded"

    def __init__(self, message: str, *, held: int, limit: int) -> None:
        super().__init__(message)
        self.held = held
        self.limit = limit


# --- Data at the boundary -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused a change: a customer, a staff member, a guest or the system itself."""

    kind: str  # "customer", "staff", "guest", "system"
    user_id: int | None = None
    label: str = ""

    def __str__(self) -> str:
        if self.user_id is not None:
            return f"{self.kind}:{self.user_id}"
        return f"{self.kind}:{self.label}" if self.label else self.kind

    @classmethod
    def system(cls, label: str = "") -> Actor:
        return cls(kind="system", label=label)


@dataclass(frozen=True, slots=True)
class ShippingAddress:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str  # ISO 3166-1 alpha-2
    line2: str = ""
    region: str = ""  # state or province: the part of its ISO 3166-2 code after the country ("CA")

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "line1": self.line1,
            "line2": self.line2,
            "city": self.city,
            "postal_code": self.postal_code,
            "region": self.region,
            "country": self.country,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShippingAddress:
        return cls(
            name=data["name"],
            line1=data["line1"],
            line2=data.get("line2", "") or "",
            city=data["city"],
            postal_code=data["postal_code"],
            country=data["country"],
            region=data.get("region", "") or "",
        )


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line, with the product's sku, name and unit price captured when it was ordered."""

    product_id: int
    sku: str
    name: str
    unit_price_minor: int
    quantity: int

    @property
    def line_total_minor(self) -> int:
        return self.unit_price_minor * self.quantity


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One entry of an order's audit trail. Appended, never changed or removed."""

    order_id: uuid.UUID
    sequence: int
    type: EventType
    actor: str
    created_at: datetime
    from_status: OrderStatus | None = None
    to_status: OrderStatus | None = None
    data: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A side effect to perform once the order change that caused it is stored.

    The repository writes these in the same atomic write as the order; the fan-out relay turns
    them into deliveries.
    """

    order_id: uuid.UUID
    event_type: str
    order_version: int
    payload: dict[str, Any]
    created_at: datetime = field(default_factory=utcnow)
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(slots=True)
class Order:
    id: uuid.UUID
    status: OrderStatus
    currency: str
    lines: list[OrderLine]
    subtotal_minor: int
    shipping_minor: int
    total_minor: int
    email: str
    shipping_address: ShippingAddress
    created_at: datetime
    updated_at: datetime
    customer_id: int | None = None
    notes: str = ""
    version: int = 1
    idempotency_scope: str = ""
    idempotency_key: str = ""
    request_fingerprint: str = ""
    # Events recorded by the domain but not yet stored; the repository writes and clears them.
    pending_events: list[OrderEvent] = field(default_factory=list)
    # The sequence number of the last stored or pending event.
    last_event_sequence: int = 0

    @property
    def is_guest(self) -> bool:
        return self.customer_id is None

    @property
    def reference(self) -> str:
        """The short reference customers see: the first 8 hex digits of the id, upper case."""
        return order_reference(self.id)

    def correct_to(
        self, to_status: OrderStatus, *, actor: Actor | str, reason: str, data: dict[str, Any]
    ) -> OrderEvent:
        """Move back along `CORRECTIONS` because money moved back; recorded as a status change
        marked `correction`, whose outbox entry is `order.corrected` (no customer email: see
        `orders.services._notifications`)."""
        if to_status not in CORRECTIONS.get(self.status, frozenset()):
            raise IllegalTransition(self.status, to_status)
        return self._change_status(to_status, actor=actor, data={**data, "correction": reason})

    def _change_status(
        self, to_status: OrderStatus, *, actor: Actor | str, data: dict[str, Any] | None
    ) -> OrderEvent:
        from_status = self.status
        self.status = to_status
        self.updated_at = utcnow()
        return self.record(
            type=EventType.STATUS_CHANGED,
            actor=actor,
            from_status=from_status,
            to_status=to_status,
            data=data,
            at=self.updated_at,
        )

    def record(
        self,
        *,
        type: EventType,  # noqa: A002 - the audit trail's own word
        actor: Actor | str,
        from_status: OrderStatus | None = None,
        to_status: OrderStatus | None = None,
        data: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> OrderEvent:
        self.last_event_sequence += 1
        event = OrderEvent(
            order_id=self.id,
            sequence=self.last_event_sequence,
            type=type,
            actor=str(actor),
            created_at=at or utcnow(),
            from_status=from_status,
            to_status=to_status,
            data=data or {},
        )
        self.pending_events.append(event)
        return event

    def snapshot(self) -> dict[str, Any]:
        """The order as plain JSON data, for outbox entries and whoever they reach."""
        return {
            "id": str(self.id),
            "status": self.status.value,
            "email": self.email,
            "customer_id": self.customer_id,
            "customer_name": self.shipping_address.name,
            "currency": self.currency,
            "subtotal_minor": self.subtotal_minor,
            "shipping_minor": self.shipping_minor,
            "total_minor": self.total_minor,
            "lines": [
                {
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_minor": line.unit_price_minor,
                    "line_total_minor": line.line_total_minor,
                }
                for line in self.lines
            ],
            "shipping_address": self.shipping_address.as_dict(),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "version": self.version,
        }

    def transition_to(
        self, to_status: OrderStatus, *, actor: Actor | str, data: dict[str, Any] | None = None
    ) -> OrderEvent:
        """Move to `to_status` if the state machine allows it, recording the change."""
        if not can_transition(self.status, to_status):
            raise IllegalTransition(self.status, to_status)
        return self._change_status(to_status, actor=actor, data=data)


REFERENCE_LENGTH = 8


def order_reference(order_id: uuid.UUID | str) -> str:
    """An order id's short reference ("90385D94"): its first 8 hex digits, upper case (the id
    as a UUID, or as the string an outbox payload carries)."""
    return str(order_id)[:REFERENCE_LENGTH].upper()


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """What `OrderRepository.list` takes: filters, ordering and one page's cursor.

    `email` and `reference` are normalized on construction (trimmed, lower case), so adapters
    compare them as given; a reference that is not 8 hex digits is refused with
    `OrderValidationError`.
    """

    customer_id: int | None = None  # None: every customer's orders (staff)
    status: OrderStatus | None = None
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # exclusive
    newest_first: bool = True
    limit: int = 20
    cursor: str | None = None
    email: str | None = None  # the exact address, compared case-insensitively
    reference: str | None = None  # the short reference (`Order.reference`), any case

    def __post_init__(self) -> None:
        if self.email is not None:
            object.__setattr__(self, "email", self.email.strip().lower())
        if self.reference is not None:
            reference = self.reference.strip().lower()
            if len(reference) != REFERENCE_LENGTH or any(c not in "0123456789abcdef" for c in reference):
                raise OrderValidationError(
                    {"reference": [f"A reference is the first {REFERENCE_LENGTH} hex digits of an order id."]}
                )
            object.__setattr__(self, "reference", reference)


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[Order]
    next_cursor: str | None
