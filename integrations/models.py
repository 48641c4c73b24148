"""The delivery ledger: one row per side effect, from relay to success or dead letter."""

from __future__ import annotations

import uuid

from django.db import models


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    IN_FLIGHT = "in_flight", "In flight"
    SUCCEEDED = "succeeded", "Succeeded"
    RETRYING = "retrying", "Retrying"
    DEAD = "dead", "Dead"
    # Not sent on purpose, never retried: e.g. over GUEST_EMAIL_MAX_PER_HOUR to a guest address.
    SKIPPED = "skipped", "Skipped"


# States a dispatcher may claim a delivery from (once its next attempt is due).
CLAIMABLE_STATES = (DeliveryState.PENDING, DeliveryState.RETRYING)
# Every state but `succeeded`: the rows operators count by state. Succeeded rows are nearly the
# whole ledger and grow with every order, so they are counted over a window (`succeeded_at`),
# never all of them; these states stay few (skipped and dead rows are rare, and pruned or replayed).
COUNTED_STATES = (
    DeliveryState.PENDING,
    DeliveryState.IN_FLIGHT,
    DeliveryState.RETRYING,
    DeliveryState.DEAD,
    DeliveryState.SKIPPED,
)


class Delivery(models.Model):
    """One side effect: `event_type` of one order version to one integration.

    `idempotency_key` (integration, order, event, order version; plus a resend number for a
    resend staff asked for) is unique, so relaying an outbox entry again creates nothing new,
    and the same key travels with every attempt to the provider.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    idempotency_key = models.CharField(max_length=255, unique=True)
    integration = models.CharField(max_length=32)
    order_id = models.UUIDField(db_index=True)
    event_type = models.CharField(max_length=64)
    order_version = models.PositiveIntegerField()
    outbox_id = models.UUIDField(null=True, blank=True, help_text="The outbox entry it was relayed from.")
    payload = models.JSONField()
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts in the current series (staff asking for a retry starts a new one)."
    )
    earlier_attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts made in earlier series, before staff last asked for a retry."
    )
    retried_at = models.DateTimeField(
        null=True, blank=True, help_text="When staff last asked for a retry (the current series began)."
    )
    next_attempt_at = models.DateTimeField()
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The last failure, kept after a later success as history (the state says what is true now).
    last_error_at = models.DateTimeField(null=True, blank=True, help_text="When the last failure happened.")
    last_error_class = models.CharField(max_length=200, blank=True)
    last_error_message = models.TextField(blank=True)
    last_provider_status = models.PositiveSmallIntegerField(null=True, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    latency_ms = models.FloatField(
        null=True, blank=True, help_text="How long the last call to the provider took."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        # Partial indexes where a query reads only unfinished rows: they hold those few rows
        # whatever the size of the ledger (millions of succeeded ones), and cost nothing to keep
        # when a row succeeds and leaves them.
        indexes = [
            # Claiming: unfinished state + due time, ordered by due time (per integration, and
            # across them for the sweeper and the queue figures).
            models.Index(
                fields=["integration", "next_attempt_at"],
                condition=models.Q(state__in=CLAIMABLE_STATES),
                name="delivery_due",
            ),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state__in=CLAIMABLE_STATES),
                name="delivery_due_any",
            ),
            # Leases to take back (the sweeper): only rows in flight.
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(state=DeliveryState.IN_FLIGHT),
                name="delivery_lease",
            ),
            # Counts by state (monitoring, /ops/, /metrics) of every state but succeeded.
            models.Index(
                fields=["integration", "state"],
                condition=models.Q(state__in=COUNTED_STATES),
                name="delivery_counted",
            ),
            # Dead letters over a window, and the latest ones.
            models.Index(
                fields=["integration", "dead_at"],
                condition=models.Q(dead_at__isnull=False),
                name="delivery_dead",
            ),
            # The last success of each integration (health, monitoring).
            models.Index(fields=["integration", "succeeded_at"], name="delivery_succeeded"),
            # The last failure of each integration (/ops/).
            models.Index(fields=["integration", "last_error_at"], name="delivery_last_error"),
        ]

    def __str__(self) -> str:
        return f"{self.integration} {self.event_type} of {self.order_id} v{self.order_version} ({self.state})"

    @property
    def total_attempts(self) -> int:
        """Every attempt made, across the series of retries staff asked for."""
        return self.attempts + self.earlier_attempts

    @property
    def is_manual(self) -> bool:
        """Sent again because staff asked (a retry or a resend), not in the automatic course."""
        return self.retried_at is not None or ":resend-" in self.idempotency_key


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open"


class CircuitEvent(models.Model):
    """A circuit breaker changing state, kept so operators can see when and why."""

    integration = models.CharField(max_length=32, db_index=True)
    from_state = models.CharField(max_length=16, choices=CircuitState.choices)
    to_state = models.CharField(max_length=16, choices=CircuitState.choices)
    reason = models.CharField(max_length=300)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.integration}: {self.from_state} → {self.to_state}"
