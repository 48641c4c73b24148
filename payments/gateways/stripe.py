"""The Stripe adapter of `PaymentGateway`: the only module that imports `stripe`.

It talks to `settings.STRIPE_API_BASE` (Stripe, or localstripe on 127.0.0.1 outside production)
with the SDK's own retries off (ours are explicit) and an idempotency key on every mutating call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import stripe
from django.conf import settings

from payments.gateways.base import (
    GatewayError,
    GatewayRequestRefused,
    IntentRequest,
    IntentResult,
    InvalidWebhook,
    RefundRequest,
    RefundResult,
    WebhookEventData,
)


@lru_cache(maxsize=4)
def _client(api_key: str, api_base: str, timeout: int) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Stripe's exceptions as the port's: transient ones to retry, refusals to report."""
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise GatewayError(
            f"Stripe could not be reached or is rate limiting: {exc.user_message or exc}"
        ) from exc
    except stripe.APIError as exc:
        raise GatewayError(f"Stripe failed (HTTP {exc.http_status}): {exc.user_message or exc}") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise GatewayRequestRefused(
            "Stripe refused our credentials; check STRIPE_SECRET_KEY.", code="auth"
        ) from exc
    except stripe.InvalidRequestError as exc:
        raise GatewayRequestRefused(exc.user_message or str(exc), code=exc.code or "invalid_request") from exc


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict) and not hasattr(value, "to_dict"):
        return value
    return value.to_dict()


def _intent_result(intent: Any) -> IntentResult:
    data = _plain(intent)
    error = data.get("last_payment_error") or {}
    charge = data.get("latest_charge") or ""
    return IntentResult(
        intent_id=data["id"],
        status=data["status"],
        amount_minor=int(data["amount"]),
        # localstripe leaves amount_received at 0; a succeeded intent has received its amount.
        amount_received_minor=int(
            data.get("amount_received") or (data["amount"] if data["status"] == "succeeded" else 0)
        ),
        currency=str(data["currency"]).upper(),
        client_secret=data.get("client_secret") or "",
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        created=int(data.get("created") or 0),
        charge_id=charge if isinstance(charge, str) else charge.get("id", ""),
        error_code=error.get("decline_code") or error.get("code") or "",
        error_message=error.get("message") or "",
    )


def _refund_result(data: dict[str, Any], *, intent_id: str) -> RefundResult:
    return RefundResult(
        refund_id=data["id"],
        status=data.get("status") or "pending",
        amount_minor=int(data["amount"]),
        intent_id=data.get("payment_intent") or intent_id,
        error_code=data.get("failure_reason") or "",
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


class StripeGateway:
    @property
    def client(self) -> stripe.StripeClient:
        return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, settings.STRIPE_TIMEOUT_SECONDS)

    def create_intent(self, request: IntentRequest) -> IntentResult:
        intents = self.client.v1.payment_intents
        with _translated_errors():
            # Created first and confirmed second, so a declined card still leaves us the
            # intent's id and its recorded error.
            intent = intents.create(
                params={
                    "amount": request.amount_minor,
                    "currency": request.currency.lower(),
                    "payment_method": request.payment_method,
                    "payment_method_types": ["card"],
                    "metadata": {
                        "order_id": request.order_id,
                        "attempt": str(request.attempt),
                        **request.metadata,
                    },
                },
                options={"idempotency_key": f"{request.idempotency_key}:create"},
            )
            try:
                confirmed = intents.confirm(
                    intent.id,
                    params={"expand": ["latest_charge"]},
                    options={"idempotency_key": f"{request.idempotency_key}:confirm"},
                )
            except stripe.CardError:
                confirmed = intents.retrieve(intent.id)
        return _intent_result(confirmed)

    def retrieve_intent(self, intent_id: str) -> IntentResult:
        with _translated_errors():
            return _intent_result(self.client.v1.payment_intents.retrieve(intent_id))

    def find_intents(self, *, order_id: str) -> list[IntentResult]:
        with _translated_errors():
            page = self.client.v1.payment_intents.list(params={"limit": 100})
            return [
                _intent_result(intent)
                for intent in page.auto_paging_iter()
                if _plain(intent.metadata).get("order_id") == order_id
            ]

    def refund(self, request: RefundRequest) -> RefundResult:
        with _translated_errors():
            refund = self.client.v1.refunds.create(
                params={
                    "payment_intent": request.intent_id,
                    "amount": request.amount_minor,
                    "metadata": request.metadata,
                },
                options={"idempotency_key": request.idempotency_key},
            )
        return _refund_result(_plain(refund), intent_id=request.intent_id)

    def find_refunds(self, *, intent_id: str) -> list[RefundResult]:
        with _translated_errors():
            page = self.client.v1.refunds.list(params={"payment_intent": intent_id, "limit": 100})
            return [_refund_result(_plain(refund), intent_id=intent_id) for refund in page.auto_paging_iter()]

    def probe(self) -> str:
        """Read the account's balance (GET /v1/balance): proves the key and the connection and
        changes nothing. Bounded by PROBE_TIMEOUT_SECONDS (whole seconds, at least one)."""
        timeout = max(1, math.ceil(float(getattr(settings, "PROBE_TIMEOUT_SECONDS", 10))))
        client = _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, timeout)
        with _translated_errors():
            balance = _plain(client.v1.balance.retrieve())
        available = balance.get("available") or []
        # Stripe answers a list of {amount, currency}; localstripe a single one.
        funds = available if isinstance(available, list) else [available]
        currencies = sorted({str(f.get("currency", "")).upper() for f in funds if isinstance(f, dict)} - {""})
        return f"balance read ({', '.join(currencies) or 'no funds'})"

    def create_setup_intent(self, *, idempotency_key: str) -> str:
        with _translated_errors():
            setup = self.client.v1.setup_intents.create(
                params={"payment_method_types": ["card"]}, options={"idempotency_key": idempotency_key}
            )
        return setup.client_secret

    def verify_webhook(self, payload: bytes, signature: str) -> WebhookEventData:
        try:
            stripe.WebhookSignature.verify_header(
                payload, signature, settings.STRIPE_WEBHOOK_SECRET, settings.STRIPE_WEBHOOK_TOLERANCE
            )
        except stripe.SignatureVerificationError as exc:
            # The SDK's message names what failed (missing header, bad signature, old timestamp)
            # and never the secret.
            raise InvalidWebhook(str(exc).split(". Read it")[0]) from exc
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise InvalidWebhook("The event is not JSON.") from exc
        return self.parse_event(event)

    def parse_event(self, payload: dict[str, Any]) -> WebhookEventData:
        try:
            obj = payload["data"]["object"]
            kind = obj.get("object")
            refunds: list[dict[str, Any]] = []
            if kind == "refund":
                refunds = [obj]
            elif kind == "charge":
                refunds = (obj.get("refunds") or {}).get("data") or []
            return WebhookEventData(
                id=str(payload["id"]),
                type=str(payload["type"]),
                created=int(payload["created"]),
                payload=payload,
                intent=_intent_result(obj) if kind == "payment_intent" else None,
                refunds=[_refund_result(r, intent_id=obj.get("payment_intent") or "") for r in refunds],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidWebhook("The event is not in Stripe's format.") from exc
