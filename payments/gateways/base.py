"""The `PaymentGateway` port: what the payment services need from a payment provider.

Dataclasses at the boundary (saleor's `GatewayResponse` idea): the services never see a
provider's own objects. `payments.gateways.stripe` is the one adapter, and the only module that
imports `stripe`; `tests.payments.fakes.FakeGateway` is an in-memory one for unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol, runtime_checkable

from django.conf import settings
from django.utils.module_loading import import_string

from core.errors import ApplicationError


class IntentStatus:
    """A PaymentIntent's status, as Stripe names it."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"


@dataclass(frozen=True, slots=True)
class IntentRequest:
    order_id: str
    attempt: int
    amount_minor: int
    currency: str
    payment_method: str
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IntentResult:
    """A PaymentIntent as the provider reports it, or the error that stopped it."""

    intent_id: str
    status: str
    amount_minor: int
    amount_received_minor: int
    currency: str
    client_secret: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    created: int = 0
    charge_id: str = ""
    error_code: str = ""
    error_message: str = ""
    # The card that paid, when the provider says (Stripe: the latest charge's
    # payment_method_details.card, when the charge is expanded): "visa", "4242".
    card_brand: str = ""
    card_last4: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == IntentStatus.SUCCEEDED

    @property
    def failed(self) -> bool:
        """The last try to pay was refused (the intent is waiting for another payment method)."""
        return self.status == IntentStatus.REQUIRES_PAYMENT_METHOD and bool(
            self.error_code or self.error_message
        )


@dataclass(frozen=True, slots=True)
class RefundRequest:
    intent_id: str
    amount_minor: int
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund_id: str
    status: str  # pending, requires_action, succeeded, failed, canceled
    amount_minor: int
    intent_id: str = ""
    error_code: str = ""
    error_message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    charge_id: str = ""
    currency: str = ""
    created: int = 0


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """A Charge as a webhook reports it. Since API version 2022-11-15 a charge carries only the
    total refunded (`amount_refunded`), never its refunds: those are listed separately."""

    charge_id: str
    intent_id: str
    status: str
    amount_minor: int
    amount_refunded_minor: int
    currency: str
    metadata: dict[str, str] = field(default_factory=dict)
    # The card charged (payment_method_details.card, which a Charge always carries): "visa", "4242".
    card_brand: str = ""
    card_last4: str = ""


@dataclass(frozen=True, slots=True)
class WebhookEventData:
    """A provider's event: its id, type and creation time, and what it says of an intent or of
    refunds (when it is about those), with the raw payload kept for the event store."""

    id: str
    type: str
    created: int
    payload: dict[str, Any]
    intent: IntentResult | None = None
    refund: RefundResult | None = None
    charge: ChargeResult | None = None


class GatewayError(ApplicationError):
    """The provider could not be reached or failed (network, 5xx, rate limit): try again later."""

    http_status = 503
    code = "payment_provider_unavailable"


class InvalidWebhook(Exception):
    """The webhook's signature or timestamp did not verify; the message says which, never the secret."""


class GatewayRequestRefused(ApplicationError):
    """The provider refused the request as invalid (a 4xx other than a decline).

    `provider_code` is the provider's own error code (Stripe's `resource_missing`, ...); `code`
    is the API's, as for every application error.
    """

    http_status = 400
    code = "payment_refused"

    def __init__(self, message: str, *, provider_code: str = "") -> None:
        super().__init__(message)
        self.provider_code = provider_code


class GatewayConflict(GatewayRequestRefused):
    """The provider refused to run a request whose idempotency key it saw with other parameters,
    or that is still running under the same key: the first request's outcome stands."""

    http_status = 409
    code = "idempotency_conflict"


@runtime_checkable
class PaymentGateway(Protocol):
    def create_intent(self, request: IntentRequest) -> IntentResult:
        """Create a PaymentIntent for `request.payment_method` and confirm it at once.

        A declined card is a result with `failed` set, not an exception.
        """

    def retrieve_intent(self, intent_id: str) -> IntentResult: ...

    def find_intents(self, *, order_id: str, attempt: int | None = None) -> list[IntentResult]:
        """The PaymentIntents whose metadata names this order (and attempt), found by the
        provider's search, never by scanning the account (for reconciliation)."""

    def refund(self, request: RefundRequest) -> RefundResult: ...

    def find_refunds(self, *, intent_id: str) -> list[RefundResult]:
        """Every refund of this PaymentIntent, with its metadata (for reconciliation, and to learn
        what a `charge.refunded` event, which carries no refunds, is about)."""

    def list_events(
        self, *, created_after: int, types: list[str], limit: int | None = 100
    ) -> list[WebhookEventData]:
        """The provider's events of these types created after `created_after` (Unix seconds),
        oldest first: reconciliation's cursor over what webhooks may have missed."""

    def create_setup_intent(self, *, idempotency_key: str) -> str:
        """A SetupIntent's client secret: the browser turns card details into a payment method."""

    def verify_webhook(self, payload: bytes, signature: str) -> WebhookEventData:
        """The event, if the signature is good and recent; `InvalidWebhook` otherwise."""

    def parse_event(self, payload: dict[str, Any]) -> WebhookEventData:
        """An event from its stored payload (for replays); `InvalidWebhook` if malformed."""

    def probe(self) -> str:
        """One harmless read from the provider (the synthetic probe): a few words on what it
        found; `GatewayError` or `GatewayRequestRefused` when it failed."""


@cache
def _load(path: str) -> PaymentGateway:
    return import_string(path)()


def get_payment_gateway() -> PaymentGateway:
    return _load(settings.PAYMENT_GATEWAY)
