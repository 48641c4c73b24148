"""Payment records: one `Payment` per attempt to pay an order, its `Refund`s, and every verified
Stripe webhook event (`WebhookEvent`), stored once.

Orders may live outside this database (the DynamoDB repository), so payments point at them by
id, not by foreign key.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class PaymentStatus(models.TextChoices):
    CREATING = "creating", "Creating"  # claimed by us, not yet known to the provider
    REQUIRES_ACTION = "requires_action", "Requires action"  # e.g. 3-D Secure in the browser
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"
    # Money arrived that does not match the order (amount, currency, our metadata): the order is
    # not marked paid and no new attempt starts until staff decide (refund it, or accept it).
    REVIEW = "review", "Held for review"
    # Money arrived that the order did not want (a second charge, or one after it was cancelled):
    # refunded in full automatically.
    REVERSED = "reversed", "Unexpected; refunded"


# A payment in one of these is over: a new attempt may start after a failure or cancel.
FINAL_PAYMENT_STATUSES = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.CANCELED, PaymentStatus.REVERSED}
)
# Payments not settled (still on their way, or held for review): few at any time, however many
# orders were ever paid. (reconciliation.OPEN_PAYMENT_STATUSES is those it asks Stripe about.)
UNSETTLED_PAYMENT_STATUSES = tuple(s for s in PaymentStatus if s not in FINAL_PAYMENT_STATUSES)


# Stripe's card brand values (payment_method_details.card.brand) as printed on cards.
CARD_BRANDS = {
    "amex": "American Express",
    "cartes_bancaires": "Cartes Bancaires",
    "diners": "Diners Club",
    "discover": "Discover",
    "eftpos_au": "eftpos",
    "interac": "Interac",
    "jcb": "JCB",
    "link": "Link",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "visa": "Visa",
    "unknown": "Card",
}


class Payment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    order_id = models.UUIDField(db_index=True)
    attempt = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=20, default="stripe")
    intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    client_secret = models.CharField(max_length=255, blank=True)
    payment_method = models.CharField(max_length=255, blank=True)
    amount_minor = models.PositiveBigIntegerField()
    amount_received_minor = models.PositiveBigIntegerField(default=0)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.CREATING)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    # The card that paid, as Stripe reported it ("visa", "4242"); empty until it says.
    card_brand = models.CharField(max_length=30, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    # Why a payment is held for review or was reversed (empty otherwise).
    review_reason = models.CharField(max_length=500, blank=True)
    # Stripe's `created` of the newest webhook event applied: older ones are stale.
    last_event_created = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order_id", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["order_id", "attempt"], name="payment_attempt_unique"),
            # At most one successful payment per order: a second charge cannot be recorded.
            models.UniqueConstraint(
                fields=["order_id"],
                condition=models.Q(status="succeeded"),
                name="payment_one_success_per_order",
            ),
        ]
        indexes = [
            # Payments settled over a window (monitoring): read only that window.
            models.Index(fields=["updated_at"], name="payment_updated"),
            # Payments by status for /metrics: only the open ones, never every payment.
            models.Index(
                fields=["status"],
                condition=models.Q(status__in=UNSETTLED_PAYMENT_STATUSES),
                name="payment_open",
            ),
        ]

    def __str__(self) -> str:
        return f"Payment {self.attempt} of order {self.order_id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_PAYMENT_STATUSES

    @property
    def card_label(self) -> str:
        """The card as the customer knows it ("Visa ending in 4242"); empty when not known."""
        if not self.card_last4:
            return ""
        brand = CARD_BRANDS.get(self.card_brand, self.card_brand.replace("_", " ").title() or "Card")
        return f"{brand} ending in {self.card_last4}"


class RefundStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELED = "canceled", "Canceled"


class Refund(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    amount_minor = models.PositiveBigIntegerField()
    reason = models.CharField(max_length=500, blank=True)
    provider_refund_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    status = models.CharField(max_length=20, choices=RefundStatus.choices, default=RefundStatus.PENDING)
    failure_message = models.CharField(max_length=500, blank=True)
    # Set when the provider reported more than was left to refund: what was cut off, and why.
    flag = models.CharField(max_length=500, blank=True)
    actor = models.CharField(max_length=120)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="refund_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Refund of {self.amount_minor} on {self.payment_id} ({self.status})"


class WebhookResult(models.TextChoices):
    PROCESSED = "processed", "Processed"
    FLAGGED = "flagged", "Processed, with something for staff to review"
    STALE = "stale", "Ignored: older than the state applied"
    UNHANDLED = "unhandled", "Stored: a type we do not act on"
    UNKNOWN_PAYMENT = "unknown_payment", "Ignored: no payment of ours"
    FAILED = "failed", "Failed (will be retried)"


class WebhookEvent(models.Model):
    """A verified provider event, stored once by its id however often it is delivered."""

    event_id = models.CharField(max_length=255, unique=True)
    provider = models.CharField(max_length=20, default="stripe")
    type = models.CharField(max_length=100, db_index=True)
    created = models.BigIntegerField(help_text="The provider's creation time (Unix seconds).")
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    deliveries = models.PositiveIntegerField(default=1)
    processed_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=20, choices=WebhookResult.choices, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-received_at"]
        # Events received over a window (monitoring) and the prune of old ones.
        indexes = [models.Index(fields=["received_at"], name="webhook_event_received")]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class WebhookRefusal(models.Model):
    """A request to the webhook endpoint that was refused (bad signature, stale or future
    timestamp, not UTF-8 or JSON, too large): kept for operators, never with the body.

    Bounded: only the newest `settings.STRIPE_WEBHOOK_REFUSALS_KEPT` are kept."""

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    provider = models.CharField(max_length=20, default="stripe")
    reason = models.CharField(max_length=300)
    size = models.PositiveIntegerField(help_text="The body's length in bytes.")
    source = models.GenericIPAddressField(null=True, blank=True)
    signed = models.BooleanField(default=False, help_text="Whether a signature header was sent.")

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.received_at:%Y-%m-%d %H:%M:%S} {self.reason}"


class SyncCursor(models.Model):
    """Where a sweep over the provider last stopped (e.g. the newest event reconciled), so the
    next run goes on from there."""

    name = models.CharField(max_length=100, unique=True)
    value = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"
