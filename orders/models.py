"""Database tables of the orders app.

`Product` is the catalog. `Order`, `OrderLine`, `OrderEvent` and `OutboxEntry` are the storage
of the ORM order repository (`orders.repositories.orm`). Services, selectors, pages and APIs read
and write orders through the repository and the domain types in `orders.domain`; these rows are
read directly only by the ORM adapter, the admin's list of outbox entries, benchmarks (`bench/`)
and tests (the one order admin, `orders/admin/`, goes through the repository). `PendingStockChange`
is the services' record of stock moved for an order write to a store outside this database,
until that write's outcome settles it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models.functions import Upper

from orders.domain import EventType, OrderStatus


class Product(models.Model):
    sku = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", "Letters, digits, . _ - only.")],
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price_minor = models.PositiveIntegerField(help_text="Price in minor units (cents).")
    currency = models.CharField(max_length=3, default="USD")
    stock = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)
    image = models.ImageField(upload_to="products/", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(currency__regex=r"^[A-Z]{3}$"), name="product_currency_iso"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class Order(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="orders",
    )
    email = models.EmailField(help_text="The customer's or guest's contact email.")
    status = models.CharField(max_length=32, choices=OrderStatus.choices(), db_index=True)
    currency = models.CharField(max_length=3)
    subtotal_minor = models.PositiveBigIntegerField()
    shipping_minor = models.PositiveBigIntegerField(default=0)
    total_minor = models.PositiveBigIntegerField()
    shipping_address = models.JSONField()
    notes = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=1)
    last_event_sequence = models.PositiveIntegerField(default=0)
    idempotency_scope = models.CharField(max_length=80, blank=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["customer", "-created_at"], name="order_customer_created"),
            models.Index(fields=["status", "-created_at"], name="order_status_created"),
            # An address's orders, newest first (the operators' lookup compares it case-insensitively).
            models.Index(Upper("email"), models.F("created_at").desc(), name="order_email_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["idempotency_scope", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="order_idempotency_key_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(total_minor=models.F("subtotal_minor") + models.F("shipping_minor")),
                name="order_total_is_subtotal_plus_shipping",
            ),
        ]

    def __str__(self) -> str:
        return f"Order {self.id} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    unit_price_minor = models.PositiveBigIntegerField()
    quantity = models.PositiveIntegerField(validators=[MinValueValidator(1)])

    class Meta:
        ordering = ["order", "position"]
        constraints = [
            models.UniqueConstraint(fields=["order", "position"], name="order_line_position_unique"),
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="order_line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"

    @property
    def line_total_minor(self) -> int:
        return self.unit_price_minor * self.quantity


class AppendOnlyQuerySet(models.QuerySet):
    """Audit events are never changed or removed, not even in bulk."""

    def update(self, **kwargs: Any) -> int:
        raise TypeError("Order events are append-only: they cannot be updated.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("Order events are append-only: they cannot be deleted.")


class OrderEvent(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # DO_NOTHING: orders are never deleted (cancelling keeps the row), and the database's own
    # foreign key still refuses to remove an order that has events.
    order = models.ForeignKey(Order, on_delete=models.DO_NOTHING, related_name="events")
    sequence = models.PositiveIntegerField()
    type = models.CharField(max_length=32, choices=EventType.choices())
    from_status = models.CharField(max_length=32, choices=OrderStatus.choices(), blank=True)
    to_status = models.CharField(max_length=32, choices=OrderStatus.choices(), blank=True)
    actor = models.CharField(max_length=120)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["order", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["order", "sequence"], name="order_event_sequence_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.sequence} of {self.order_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The one guard kept on the model: it holds however the row is reached (admin, shell).
        if not self._state.adding:
            raise TypeError("Order events are append-only: they cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("Order events are append-only: they cannot be deleted.")


class OutboxEntry(models.Model):
    """A side effect waiting to be relayed, written in the same transaction as its order change."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="outbox_entries")
    event_type = models.CharField(max_length=64)
    order_version = models.PositiveIntegerField()
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    relayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name_plural = "outbox entries"
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=models.Q(relayed_at__isnull=True),
                name="outbox_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} for {self.order_id} v{self.order_version}"


class PendingStockChange(models.Model):
    """Stock taken (`reserve`) or to be given back (`release`) for an order write to a store
    outside this database (DynamoDB), kept until the write's outcome is known.

    The write happened if the order's audit trail holds `event_id` (the order's `created` event
    for a reservation, its change to `cancelled` for a release). Settling deletes the row and,
    for a reservation whose order was never stored or a release whose cancel was, gives the
    stock back, in one transaction (see `orders.services.stock_changes_settle`).
    """

    class Kind(models.TextChoices):
        RESERVE = "reserve"
        RELEASE = "release"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order_id = models.UUIDField(db_index=True)
    event_id = models.UUIDField(unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    lines = models.JSONField(help_text="[[product id, quantity], ...]")
    created_at = models.DateTimeField()
    # Until then the write may still be under way; after it, the audit trail is the answer.
    settle_after = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.kind} for {self.order_id}"
