"""Stripe's objects and events in the shape of the API version the installed `stripe` library
pins (`stripe.api_version`), for webhook tests: never localstripe's older dialect.

Each builder starts from Stripe's own published example object (`stripe_fixtures3.json`, a copy
of `openapi/fixtures3.json` from github:stripe/openapi) and sets only what a test is about, so
every field the real API sends is there, and none it stopped sending is (a PaymentIntent has no
`charges` list and a Charge no `refunds` list since 2022-11-15). `signed()` signs an event the
way Stripe documents it, with our own HMAC rather than the SDK we verify with.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import time
from functools import cache
from pathlib import Path
from typing import Any

import stripe

API_VERSION = stripe.api_version
FIXTURES_PATH = Path(__file__).with_name("stripe_fixtures3.json")


@cache
def _fixtures() -> dict[str, Any]:
    return json.loads(FIXTURES_PATH.read_text())["resources"]


def published(kind: str) -> dict[str, Any]:
    """A fresh copy of Stripe's published example of `kind` ("payment_intent", "charge", ...)."""
    return copy.deepcopy(_fixtures()[kind])


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


def payment_intent(
    *,
    order_id: str,
    attempt: int = 1,
    amount: int = 2900,
    currency: str = "usd",
    status: str = "succeeded",
    intent_id: str | None = None,
    amount_received: int | None = None,
    metadata: dict[str, str] | None = None,
    decline: tuple[str, str] | None = None,
    charge_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A PaymentIntent as the payments app creates them: our `order_id` and `attempt` in its
    metadata. `decline` is (decline_code, message) for a failed attempt."""
    intent = published("payment_intent")
    intent_id = intent_id or new_id("pi")
    succeeded = status == "succeeded"
    intent.update(
        id=intent_id,
        amount=amount,
        amount_capturable=0,
        amount_received=amount if amount_received is None and succeeded else (amount_received or 0),
        automatic_payment_methods=None,
        canceled_at=now() if status == "canceled" else None,
        cancellation_reason="requested_by_customer" if status == "canceled" else None,
        client_secret=f"{intent_id}_secret_{secrets.token_hex(8)}",
        created=created or now(),
        currency=currency,
        last_payment_error=None,
        latest_charge=(charge_id or new_id("ch"))
        if status in {"succeeded", "processing"} or decline
        else None,
        metadata={"order_id": order_id, "attempt": str(attempt)} if metadata is None else metadata,
        next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}} if status == "requires_action" else None,
        payment_method=new_id("pm"),
        payment_method_configuration_details=None,
        processing=None,
        status=status,
        transfer_data=None,
    )
    if decline is not None:
        code, message = decline
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": code,
            "message": message,
            "charge": intent["latest_charge"],
        }
    return intent


def charge(
    intent: dict[str, Any],
    *,
    amount_refunded: int = 0,
    status: str = "succeeded",
    charge_id: str | None = None,
) -> dict[str, Any]:
    """The Charge of `intent` (its `latest_charge`): the total refunded, no refunds list."""
    obj = published("charge")
    obj.pop("refunds", None)  # only there when expanded, which a webhook cannot ask for
    amount = intent["amount"]
    obj.update(
        id=charge_id or intent.get("latest_charge") or new_id("ch"),
        amount=amount,
        amount_captured=amount if status == "succeeded" else 0,
        amount_refunded=amount_refunded,
        balance_transaction=new_id("txn"),
        captured=status == "succeeded",
        created=now(),
        currency=intent["currency"],
        metadata=dict(intent["metadata"]),
        paid=status == "succeeded",
        payment_intent=intent["id"],
        refunded=amount_refunded >= amount,
        status=status,
        failure_code="card_declined" if status == "failed" else None,
        failure_message="Your card was declined." if status == "failed" else None,
    )
    return obj


def refund(
    intent: dict[str, Any],
    *,
    amount: int,
    status: str = "succeeded",
    our_refund_id: str | None = None,
    refund_id: str | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """A Refund of `intent`; `our_refund_id` is the `refund_id` the app puts in its metadata
    (absent for a refund made in Stripe's Dashboard)."""
    obj = published("refund")
    obj.update(
        id=refund_id or new_id("re"),
        amount=amount,
        balance_transaction=new_id("txn"),
        charge=intent.get("latest_charge") or new_id("ch"),
        created=now(),
        currency=intent["currency"],
        metadata={"refund_id": our_refund_id, "order_id": intent["metadata"].get("order_id", "")}
        if our_refund_id
        else {},
        payment_intent=intent["id"],
        status=status,
    )
    if status == "failed":
        obj["failure_reason"] = failure_reason or "expired_or_canceled_card"
        obj["failure_balance_transaction"] = new_id("txn")
    return obj


def setup_intent() -> dict[str, Any]:
    obj = published("setup_intent")
    setup_id = new_id("seti")
    obj.update(
        id=setup_id,
        client_secret=f"{setup_id}_secret_{secrets.token_hex(8)}",
        last_setup_error=None,
        next_action=None,
        payment_method_configuration_details=None,
    )
    return obj


def dispute(
    intent: dict[str, Any], *, amount: int | None = None, reason: str = "fraudulent"
) -> dict[str, Any]:
    obj = published("dispute")
    obj.update(
        id=new_id("dp"),
        amount=intent["amount"] if amount is None else amount,
        charge=intent.get("latest_charge") or new_id("ch"),
        created=now(),
        currency=intent["currency"],
        payment_intent=intent["id"],
        reason=reason,
        status="needs_response",
    )
    return obj


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int | None = None,
    event_id: str | None = None,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An Event of `event_type` about `obj`, stamped with the pinned API version."""
    evt = published("event")
    evt.update(
        id=event_id or new_id("evt"),
        api_version=API_VERSION,
        created=created or now(),
        data={"object": copy.deepcopy(obj)},
        livemode=False,
        pending_webhooks=1,
        request={"id": new_id("req"), "idempotency_key": None},
        type=event_type,
    )
    if previous_attributes is not None:
        evt["data"]["previous_attributes"] = previous_attributes
    return evt


def signature(body: bytes, *, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends: `t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`."""
    t = now() if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def signed(evt: dict[str, Any], *, secret: str, timestamp: int | None = None) -> tuple[bytes, str]:
    """The body Stripe posts for `evt` (pretty-printed JSON, as Stripe sends it) and its signature."""
    body = json.dumps(evt, indent=2).encode()
    return body, signature(body, secret=secret, timestamp=timestamp)


def deliver(
    client: Any, evt: dict[str, Any], *, secret: str | None = None, timestamp: int | None = None
) -> Any:
    """POST `evt` to the webhook endpoint as Stripe would, through a Django test `client`."""
    from tests.payments.conftest import WEBHOOK_SECRET

    body, header = signed(evt, secret=secret or WEBHOOK_SECRET, timestamp=timestamp)
    return client.post(
        "/webhooks/stripe", body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
    )
