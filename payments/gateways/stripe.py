"""The Stripe adapter of `PaymentGateway`: the only module that imports `stripe`.

It talks to `settings.STRIPE_API_BASE` (Stripe, or localstripe on 127.0.0.1 outside production)
with the SDK's own retries off (ours are explicit) and an idempotency key on every mutating call.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import stripe
from django.conf import settings

from payments.gateways.base import (
    ChargeResult,
    GatewayConflict,
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
    """Every Stripe exception as one of the port's, so none reaches a user as a 500:
    Stripe down or busy → `GatewayError` (503, try again); an idempotency conflict →
    `GatewayConflict` (409); any other refusal → `GatewayRequestRefused` (400)."""
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise GatewayError(
            f"Stripe could not be reached or is rate limiting: {exc.user_message or exc}"
        ) from exc
    except stripe.APIError as exc:
        raise GatewayError(f"Stripe failed (HTTP {exc.http_status}): {exc.user_message or exc}") from exc
    except stripe.IdempotencyError as exc:
        raise GatewayConflict(exc.user_message or str(exc), provider_code="idempotency_error") from exc
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise GatewayRequestRefused(
            "Stripe refused our credentials; check STRIPE_SECRET_KEY.", provider_code="auth"
        ) from exc
    except stripe.InvalidRequestError as exc:
        raise GatewayRequestRefused(
            exc.user_message or str(exc), provider_code=exc.code or "invalid_request"
        ) from exc
    except stripe.StripeError as exc:
        # A card error outside a confirm, or a class newer than this list: a refusal with
        # Stripe's code, or a failure if Stripe answered 5xx.
        if exc.http_status is None or exc.http_status >= 500:
            raise GatewayError(f"Stripe failed (HTTP {exc.http_status}): {exc.user_message or exc}") from exc
        raise GatewayRequestRefused(
            exc.user_message or str(exc), provider_code=exc.code or "refused"
        ) from exc


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
    card = _card(charge)
    return IntentResult(
        intent_id=data["id"],
        status=data["status"],
        amount_minor=int(data["amount"]),
        amount_received_minor=int(data.get("amount_received") or 0),
        currency=str(data["currency"]).upper(),
        client_secret=data.get("client_secret") or "",
        metadata=_metadata(data),
        created=int(data.get("created") or 0),
        charge_id=_id(charge),
        error_code=error.get("decline_code") or error.get("code") or "",
        error_message=error.get("message") or "",
        card_brand=str(card.get("brand") or ""),
        card_last4=str(card.get("last4") or ""),
    )


def _card(charge: Any) -> dict[str, Any]:
    """payment_method_details.card of an expanded Charge ({} for an id, or a charge by other means)."""
    if not isinstance(charge, dict):
        return {}
    details = charge.get("payment_method_details") or {}
    return details.get("card") or {} if details.get("type") == "card" else {}


def _id(value: Any) -> str:
    """An expandable field's id: the field itself, or the `id` of the expanded object."""
    if isinstance(value, str):
        return value
    return str(value.get("id") or "") if isinstance(value, dict) else ""


def _metadata(data: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (data.get("metadata") or {}).items()}


def _refund_result(data: dict[str, Any], *, intent_id: str = "") -> RefundResult:
    return RefundResult(
        refund_id=data["id"],
        status=data.get("status") or "pending",
        amount_minor=int(data["amount"]),
        intent_id=_id(data.get("payment_intent")) or intent_id,
        error_code=data.get("failure_reason") or "",
        metadata=_metadata(data),
        charge_id=_id(data.get("charge")),
        currency=str(data.get("currency") or "").upper(),
        created=int(data.get("created") or 0),
    )


def _charge_result(data: dict[str, Any]) -> ChargeResult:
    card = _card(data)
    return ChargeResult(
        charge_id=data["id"],
        intent_id=_id(data.get("payment_intent")),
        status=str(data.get("status") or ""),
        amount_minor=int(data["amount"]),
        amount_refunded_minor=int(data.get("amount_refunded") or 0),
        currency=str(data["currency"]).upper(),
        metadata=_metadata(data),
        card_brand=str(card.get("brand") or ""),
        card_last4=str(card.get("last4") or ""),
    )


def _search_value(value: str) -> str:
    """A value quoted for Stripe's search query language (backslash escapes quotes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
            return _intent_result(
                self.client.v1.payment_intents.retrieve(intent_id, params={"expand": ["latest_charge"]})
            )

    def find_intents(self, *, order_id: str, attempt: int | None = None) -> list[IntentResult]:
        query = f"metadata['order_id']:{_search_value(order_id)}"
        if attempt is not None:
            query += f" AND metadata['attempt']:{_search_value(str(attempt))}"
        with _translated_errors():
            page = self.client.v1.payment_intents.search(params={"query": query, "limit": 100})
            found = [_intent_result(intent) for intent in page.auto_paging_iter()]
        # Search is eventually consistent at Stripe and matches loosely: check what it found.
        return [
            intent
            for intent in found
            if intent.metadata.get("order_id") == order_id
            and (attempt is None or intent.metadata.get("attempt") == str(attempt))
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

    def list_events(
        self, *, created_after: int, types: list[str], limit: int | None = 100
    ) -> list[WebhookEventData]:
        with _translated_errors():
            page = self.client.v1.events.list(
                params={"created": {"gt": created_after}, "types": types, "limit": min(limit or 100, 100)}
            )
            events = []
            for event in page.auto_paging_iter():
                events.append(_plain(event))
                if limit is not None and len(events) >= limit:
                    break
        # Stripe lists newest first; a cursor moves oldest first.
        events.sort(key=lambda e: (int(e.get("created") or 0), str(e.get("id"))))
        return [self.parse_event(event) for event in events]

    def probe(self) -> str:
        """Read the account's balance (GET /v1/balance): proves the key and the connection and
        changes nothing. Bounded by PROBE_TIMEOUT_SECONDS (whole seconds, at least one)."""
        timeout = max(1, math.ceil(settings.PROBE_TIMEOUT_SECONDS))
        client = _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, timeout)
        with _translated_errors():
            balance = _plain(client.v1.balance.retrieve())
        funds = balance.get("available") or []  # a list of {amount, currency, source_types}
        currencies = sorted({str(f.get("currency", "")).upper() for f in funds if isinstance(f, dict)} - {""})
        return f"balance read ({', '.join(currencies) or 'no funds'})"

    def create_setup_intent(self, *, idempotency_key: str) -> str:
        with _translated_errors():
            setup = self.client.v1.setup_intents.create(
                params={"payment_method_types": ["card"]}, options={"idempotency_key": idempotency_key}
            )
        return setup.client_secret

    def ensure_webhook_endpoint(self, *, url: str, events: list[str]) -> tuple[str, str, bool]:
        """Create the webhook endpoint at `url` with `events`, or update the one already there
        (enabled again, with exactly `events`). Returns (endpoint id, signing secret, created):
        Stripe reveals the secret only when it creates an endpoint, so it is "" on an update."""
        endpoints = self.client.v1.webhook_endpoints
        with _translated_errors():
            existing = [e for e in endpoints.list(params={"limit": 100}).auto_paging_iter() if e.url == url]
            if existing:
                endpoint = endpoints.update(
                    existing[0].id, params={"enabled_events": events, "disabled": False}
                )
                return endpoint.id, "", False
            endpoint = endpoints.create(
                params={
                    "url": url,
                    "enabled_events": events,
                    "api_version": stripe.api_version,
                    "description": "Cloud Integration System: payments, refunds, disputes",
                }
            )
        return endpoint.id, endpoint.secret or "", True

    def verify_webhook(self, payload: bytes, signature: str) -> WebhookEventData:
        """Verify as Stripe documents: HMAC-SHA256 of `t.body` with the endpoint's secret, and
        `t` within the tolerance of now in either direction. Any body that is not UTF-8, not
        JSON, nested too deep or not an event is refused the same way (`InvalidWebhook`)."""
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidWebhook("The body is not UTF-8.") from exc
        tolerance = int(settings.STRIPE_WEBHOOK_TOLERANCE)
        if not signature.isascii():
            raise InvalidWebhook("The Stripe-Signature header is not ASCII.")
        try:
            stripe.WebhookSignature.verify_header(text, signature, settings.STRIPE_WEBHOOK_SECRET, tolerance)
        except stripe.SignatureVerificationError as exc:
            # The SDK's message names what failed (missing header, bad signature, old timestamp)
            # and never the secret.
            raise InvalidWebhook(str(exc).split(". Read it")[0]) from exc
        except (TypeError, ValueError) as exc:
            raise InvalidWebhook("The Stripe-Signature header is malformed.") from exc
        # The SDK refuses only old timestamps; a signature dated in the future is refused too.
        timestamp = int(dict(part.split("=", 1) for part in signature.split(",") if "=" in part)["t"])
        if timestamp > time.time() + tolerance:
            raise InvalidWebhook(f"Timestamp outside the tolerance zone ({timestamp}): in the future")
        try:
            event = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidWebhook("The event is not JSON, or is nested too deep.") from exc
        if not isinstance(event, dict):
            raise InvalidWebhook("The event is not in Stripe's format.")
        return self.parse_event(event)

    def parse_event(self, payload: dict[str, Any]) -> WebhookEventData:
        """The event in the shape of the pinned API version: an intent, a refund or a charge
        (with the total refunded, never a refund list), by its object's type."""
        try:
            obj = payload["data"]["object"]
            kind = obj.get("object")
            return WebhookEventData(
                id=str(payload["id"]),
                type=str(payload["type"]),
                created=int(payload["created"]),
                payload=payload,
                intent=_intent_result(obj) if kind == "payment_intent" else None,
                refund=_refund_result(obj) if kind == "refund" else None,
                charge=_charge_result(obj) if kind == "charge" else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidWebhook("The event is not in Stripe's format.") from exc
