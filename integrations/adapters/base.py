"""The integration port: what the delivery ledger needs from each destination of the fan-out.

One adapter per destination (`sendgrid.py`, `sheets.py`, `sns.py`), each a class with a `name`
and a `deliver` method that takes a batch of deliveries and answers one outcome per delivery.
Adapters raise nothing for a delivery's own failure: they say it in its outcome, classified as
transient (worth retrying: timeouts, 5xx, 429) or permanent (other 4xx, bad configuration).
An in-memory fake (tests/integrations/fakes.py) serves the unit tests; the real ones are tested
against the stand-in servers (sandbox/).

Each adapter also has a `probe`: one harmless real call through its client (a sandbox-mode
email, a timestamp in a health tab, a message marked `probe`) that the synthetic probes of
`monitoring.probes` time. It answers a short description of what it did, or raises
`ProbeFailed` saying what went wrong (never a secret).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from django.conf import settings


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One side effect to perform: `event_type` ("order.paid", ...) for one version of an order.

    `idempotency_key` is the same on every attempt of this delivery and differs between
    deliveries; adapters pass it to the provider where the provider can use it, and always
    include it in what they send so a receiver can drop a repeat.
    `payload` is the outbox entry's payload: `payload["order"]` is the order as it was when the
    event happened (`orders.domain.Order.snapshot()`: id, status, email, customer_name,
    currency, subtotal_minor, shipping_minor, total_minor, lines [{sku, name, quantity,
    unit_price_minor, line_total_minor}], shipping_address, created_at, updated_at, version) and
    `payload["event"]` the change (from_status, to_status, actor, at, data: e.g. intent_id,
    failure_message, refunded_minor).
    """

    delivery_id: uuid.UUID
    idempotency_key: str
    event_type: str
    order_id: uuid.UUID
    order_version: int
    payload: dict[str, Any]
    attempt: int = 1

    @property
    def order(self) -> dict[str, Any]:
        return self.payload["order"]


@dataclass(frozen=True, slots=True)
class DeliveryError:
    """Why a delivery failed, and whether trying again may help."""

    transient: bool
    error_class: str
    message: str
    provider_status: int | None = None

    @classmethod
    def from_http(cls, status: int, message: str, *, error_class: str = "HTTPError") -> DeliveryError:
        """Classified by HTTP status: 408, 429 and 5xx are transient, other 4xx permanent."""
        return cls(
            transient=status in {408, 425, 429} or status >= 500,
            error_class=error_class,
            message=message[:1000],
            provider_status=status,
        )


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    delivery_id: uuid.UUID
    external_id: str = ""  # SendGrid X-Message-Id, Sheets updated range, SNS MessageId
    error: DeliveryError | None = None
    # Set by an adapter that was told to slow down (a 429): seconds the whole adapter should wait.
    backoff_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class ProbeFailed(Exception):
    """A probe's call failed. `error_class` names the failure the way delivery errors do (the
    provider's error code or the exception's class); the message says why, without secrets."""

    def __init__(self, message: str, *, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class

    @classmethod
    def from_error(cls, error: DeliveryError) -> ProbeFailed:
        """The failure an adapter's error classification (`DeliveryError`) describes."""
        status = f"HTTP {error.provider_status}: " if error.provider_status else ""
        return cls(f"{status}{error.message}", error_class=error.error_class)


def probe_timeout_seconds() -> float:
    """Seconds a probe's call may take: PROBE_TIMEOUT_SECONDS."""
    return float(settings.PROBE_TIMEOUT_SECONDS)


@runtime_checkable
class IntegrationAdapter(Protocol):
    name: ClassVar[str]
    # The most deliveries `deliver` takes at once (1: no batching).
    max_batch: ClassVar[int]

    def deliver(self, requests: list[DeliveryRequest]) -> list[DeliveryOutcome]:
        """Perform the deliveries; one outcome per request, in any order. Must not raise for a
        delivery's own failure; may raise for a failure of the whole call (then every delivery
        of the batch is treated as failed transiently)."""

    def probe(self) -> str:
        """Make one harmless real call to the destination (bounded by PROBE_TIMEOUT_SECONDS
        where the client takes a timeout) and answer what it did in a few words; raise
        `ProbeFailed` when it failed."""
