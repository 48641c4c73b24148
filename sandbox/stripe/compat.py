"""localstripe, made to answer in the shape of the API version the installed `stripe` pins.

localstripe 1.15 renders objects as Stripe did around 2017-2020. Rather than edit site-packages,
`install()` patches a few of its classes from here, once per process (the sandbox is dev and
test tooling only; the patches are process-wide, like localstripe's own module-level store):

- `StripeObject._export` renders every object through `_SHAPERS` (PaymentIntent without
  `charges`, with `amount_received` and `latest_charge` as an id; Charge without `refunds` unless
  expanded, with `amount_refunded` net of failed refunds; Refund with `payment_intent`, `status`
  and `failure_reason`; Event with `api_version`, `pending_webhooks`, `request`; lists without
  localstripe's `total_count`) and expands ids itself, so `expand[]=latest_charge` and nested
  paths such as `latest_charge.refunds` work.
- `PaymentIntent.__init__` refuses amounts under Stripe's minimum charge; it and `_api_cancel`
  keep what localstripe drops (`payment_method_types`, `canceled_at`, `cancellation_reason`).
- `Event.__init__` records its order and the API request that caused it.
- `PaymentMethod._try_get_canonical_test_article` knows `pm_card_refundFail` (4000000000005126).
- `resources.schedule_webhook` goes to `events.schedule`, our signed delivery.

Current shapes: `openapi/fixtures3.json` of github:stripe/openapi (tests/payments/
stripe_fixtures3.json) and the types of the installed `stripe` package.

Left out: card errors carry no `decline_code` (the app records `decline_code or code`, so adding
it would change recorded failure codes from `card_declined` to `generic_decline`); localstripe
emits `payment_intent.succeeded` / `payment_failed` but not Stripe's `payment_intent.created`,
`charge.succeeded`, `charge.failed` or `charge.updated`; fields localstripe does not model
(shipping, transfers, Connect) are present as Stripe's nulls.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import time
from typing import Any

from localstripe import resources
from localstripe.errors import UserError
from localstripe.resources import (
    Charge,
    Event,
    PaymentIntent,
    PaymentMethod,
    Refund,
    StripeObject,
    store,
)

from sandbox.stripe import rules

# The API request being served, for the `request` of the events it causes: {"id", "idempotency_key"}.
CURRENT_REQUEST: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "stripe_sandbox_request", default=None
)

# Stripe's test payment method whose refunds fail later (docs.stripe.com/testing#refunds).
REFUND_FAIL_CARD = "4000000000005126"
REFUND_FAILURE_REASON = "expired_or_canceled_card"

_ORIGINAL: dict[str, Any] = {}
_EVENT_ORDER = itertools.count(1)


def api_version() -> str:
    """The version the installed `stripe` library pins: the one the stand-in speaks."""
    import stripe  # dev tooling: the version is the library's, never a copy of it

    return str(stripe.api_version)


# ----------------------------------------------------------------------------------- helpers


def objects(kind: str) -> list[Any]:
    """The stored objects of one kind, oldest first (localstripe's store keeps insertion order)."""
    prefix = kind + ":"
    return [value for key, value in list(store.items()) if key.startswith(prefix)]


def refunds_of(charge_id: str) -> list[Any]:
    return [refund for refund in objects("refund") if refund.charge == charge_id]


def amount_refunded(charge: Any) -> int:
    """What is refunded on `charge`: failed refunds give their amount back, as at Stripe."""
    return sum(r.amount for r in refunds_of(charge.id) if getattr(r, "status", "succeeded") != "failed")


def card_number(payment_method_id: str | None) -> str:
    if not payment_method_id:
        return ""
    try:
        method = PaymentMethod._api_retrieve(payment_method_id)
    except UserError:
        return ""
    return str(getattr(method, "_card_number", ""))


def _pop(obj: dict[str, Any], *keys: str) -> None:
    for key in keys:
        obj.pop(key, None)


def _defaults(obj: dict[str, Any], **values: Any) -> None:
    for key, value in values.items():
        obj.setdefault(key, value)


def check_expand(expand: Any) -> list[str]:
    if expand is None:
        return []
    if isinstance(expand, str):
        expand = [expand]
    if not isinstance(expand, list) or not all(isinstance(path, str) for path in expand):
        raise rules.invalid_request("Invalid array", code="parameter_invalid_array", param="expand")
    if any(len(path.split(".")) > 4 for path in expand):
        raise rules.invalid_request("You cannot expand more than 4 levels of a property", param="expand")
    return expand


def expand_path(obj: Any, path: str) -> None:
    if isinstance(obj, list):
        for item in obj:
            expand_path(item, path)
        return
    if not isinstance(obj, dict):
        return
    head, _, rest = path.partition(".")
    if head not in obj:
        raise rules.invalid_request(f"This property cannot be expanded ({head}).", param="expand")
    value = obj[head]
    if isinstance(value, str):
        cls = StripeObject._get_class_for_id(value) or (PaymentMethod if value.startswith("pm_") else None)
        if cls is None:
            raise rules.invalid_request(f"This property cannot be expanded ({head}).", param="expand")
        obj[head] = cls._api_retrieve(value)._export(expand=[rest] if rest else None)
    elif rest and value is not None:
        expand_path(value, rest)


# ------------------------------------------------------------------------------------ shapes


def _shape_payment_intent(intent: Any, obj: dict[str, Any], expand: list[str]) -> None:
    charge = intent.latest_charge
    status = obj.get("status")
    _pop(obj, "charges", "invoice")
    obj["latest_charge"] = charge.id if charge is not None else None
    obj["amount_received"] = intent.amount if status == "succeeded" else 0
    obj["amount_capturable"] = intent.amount if status == "requires_capture" else 0
    obj["payment_method_types"] = list(getattr(intent, "_payment_method_types", None) or ["card"])
    obj["canceled_at"] = getattr(intent, "_canceled_at", None)
    obj["cancellation_reason"] = getattr(intent, "_cancellation_reason", None)
    error = obj.get("last_payment_error")
    if error:
        kind = (
            "invalid_request_error"
            if error.get("code") == "payment_intent_authentication_failure"
            else "card_error"
        )
        obj["last_payment_error"] = {**error, "type": kind}
    _defaults(
        obj,
        amount_details={"tip": {}},
        application=None,
        application_fee_amount=None,
        automatic_payment_methods=None,
        confirmation_method="automatic",
        description=None,
        excluded_payment_method_types=None,
        on_behalf_of=None,
        payment_method_configuration_details=None,
        payment_method_options={},
        processing=None,
        receipt_email=None,
        review=None,
        setup_future_usage=None,
        shipping=None,
        statement_descriptor=None,
        statement_descriptor_suffix=None,
        transfer_data=None,
        transfer_group=None,
    )


def _card_details(payment_method_id: str | None) -> dict[str, Any] | None:
    try:
        method = PaymentMethod._api_retrieve(payment_method_id) if payment_method_id else None
    except UserError:
        return None
    card = getattr(method, "card", None)
    if not isinstance(card, dict):
        return None
    brand = card.get("brand", "visa")
    return {
        "card": {
            "amount_authorized": None,
            "brand": brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": card.get("country"),
            "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"),
            "fingerprint": card.get("fingerprint"),
            "funding": card.get("funding"),
            "last4": card.get("last4"),
            "network": brand,
            "three_d_secure": None,
            "wallet": None,
        },
        "type": "card",
    }


def _shape_charge(charge: Any, obj: dict[str, Any], expand: list[str]) -> None:
    _pop(obj, "invoice")
    if not any(path == "refunds" or path.startswith("refunds.") for path in expand):
        _pop(obj, "refunds")
    refunded = amount_refunded(charge)
    succeeded = obj.get("status") == "succeeded"
    obj["amount_refunded"] = refunded
    obj["refunded"] = charge.amount > 0 and refunded >= charge.amount
    obj["amount_captured"] = charge.amount if succeeded and charge.captured else 0
    obj["outcome"] = (
        {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        }
        if obj.get("status") != "failed"
        else {
            "network_status": "declined_by_network",
            "reason": "generic_decline",
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        }
    )
    _defaults(
        obj,
        application=None,
        application_fee=None,
        application_fee_amount=None,
        billing_details={
            "address": {
                "city": None,
                "country": None,
                "line1": None,
                "line2": None,
                "postal_code": None,
                "state": None,
            },
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        calculated_statement_descriptor=None,
        disputed=False,
        failure_balance_transaction=None,
        fraud_details={},
        on_behalf_of=None,
        payment_method_details=_card_details(charge.payment_method),
        receipt_url=None,
        review=None,
        shipping=None,
        source_transfer=None,
        statement_descriptor_suffix=None,
        transfer_data=None,
        transfer_group=None,
    )


def _shape_refund(refund: Any, obj: dict[str, Any], expand: list[str]) -> None:
    _pop(obj, "date", "livemode")  # a Refund has no `livemode` in the current API
    with contextlib.suppress(UserError):
        obj["payment_intent"] = Charge._api_retrieve(refund.charge).payment_intent
    obj["status"] = getattr(refund, "status", "succeeded")
    if obj["status"] == "failed":
        obj["failure_reason"] = getattr(refund, "_failure_reason", REFUND_FAILURE_REASON)
    obj["reason"] = getattr(refund, "_reason", None)
    _defaults(obj, receipt_number=None, source_transfer_reversal=None, transfer_reversal=None)


def _shape_setup_intent(setup: Any, obj: dict[str, Any], expand: list[str]) -> None:
    _defaults(
        obj,
        application=None,
        automatic_payment_methods=None,
        cancellation_reason=None,
        description=None,
        excluded_payment_method_types=None,
        flow_directions=None,
        last_setup_error=None,
        latest_attempt=None,
        mandate=None,
        on_behalf_of=None,
        payment_method_configuration_details=None,
        payment_method_options={},
        single_use_mandate=None,
    )


def _shape_payment_method(method: Any, obj: dict[str, Any], expand: list[str]) -> None:
    address = {
        "city": None,
        "country": None,
        "line1": None,
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    given = obj.get("billing_details") or {}
    obj["billing_details"] = {
        "address": {**address, **(given.get("address") or {})},
        "email": given.get("email"),
        "name": given.get("name"),
        "phone": given.get("phone"),
        "tax_id": given.get("tax_id"),
    }
    card = obj.get("card")
    if isinstance(card, dict):
        brand = card.get("brand", "visa")
        obj["card"] = {
            **card,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "display_brand": brand,
            "generated_from": None,
            "networks": {"available": [brand], "preferred": None},
            "regulated_status": None,
            "wallet": None,
        }
    _defaults(obj, allow_redisplay="unspecified")


def _shape_event(event: Any, obj: dict[str, Any], expand: list[str]) -> None:
    obj["api_version"] = api_version()
    obj["pending_webhooks"] = getattr(event, "_pending_webhooks", 0)
    obj["request"] = dict(getattr(event, "_request", None) or {"id": None, "idempotency_key": None})
    previous = getattr(event, "_previous_attributes", None)
    if previous:
        obj["data"] = {**obj["data"], "previous_attributes": dict(previous)}


def _shape_list(listing: Any, obj: dict[str, Any], expand: list[str]) -> None:
    _pop(obj, "total_count")


_SHAPERS = {
    "payment_intent": _shape_payment_intent,
    "charge": _shape_charge,
    "refund": _shape_refund,
    "setup_intent": _shape_setup_intent,
    "payment_method": _shape_payment_method,
    "event": _shape_event,
    "list": _shape_list,
}


def _export(self: Any, expand: Any = None) -> dict[str, Any]:
    paths = check_expand(expand)
    obj = _ORIGINAL["export"](self, expand=None)
    shaper = _SHAPERS.get(getattr(self, "object", None) or "")
    if shaper is not None:
        shaper(self, obj, paths)
    for path in paths:
        expand_path(obj, path)
    return obj


# ----------------------------------------------------------------------- behaviour patches


def _payment_intent_init(self: Any, *args: Any, **kwargs: Any) -> None:
    rules.check_charge_amount(kwargs.get("amount"), kwargs.get("currency"))
    _ORIGINAL["pi_init"](self, *args, **kwargs)
    self._payment_method_types = kwargs.get("payment_method_types") or ["card"]


def _payment_intent_cancel(
    cls: Any,
    id: str,  # noqa: A002 - localstripe's route passes `id=`
    cancellation_reason: Any = None,
    **kwargs: Any,
) -> Any:
    intent = _ORIGINAL["pi_cancel"].__func__(cls, id, **kwargs)
    intent._canceled_at = int(time.time())
    intent._cancellation_reason = cancellation_reason
    return intent


def _event_init(self: Any, event_type: str, data: Any) -> None:
    _ORIGINAL["event_init"](self, event_type, data)
    self._seq = next(_EVENT_ORDER)
    self._request = dict(CURRENT_REQUEST.get() or {"id": None, "idempotency_key": None})
    self._pending_webhooks = 0


def _canonical_test_article(cls: Any, method_id: str) -> Any:
    if method_id == "pm_card_refundFail":
        return PaymentMethod(
            type="card",
            card={"number": REFUND_FAIL_CARD, "exp_month": "12", "exp_year": "2034", "cvc": "123"},
        )
    return _ORIGINAL["canonical"].__func__(cls, method_id)


def install() -> None:
    """Patch localstripe once per process (see the module's docstring)."""
    if _ORIGINAL:
        return
    from sandbox.stripe import events

    _ORIGINAL["export"] = StripeObject._export
    _ORIGINAL["pi_init"] = PaymentIntent.__init__
    _ORIGINAL["pi_cancel"] = PaymentIntent.__dict__["_api_cancel"]
    _ORIGINAL["event_init"] = Event.__init__
    _ORIGINAL["canonical"] = PaymentMethod.__dict__["_try_get_canonical_test_article"]
    StripeObject._export = _export
    PaymentIntent.__init__ = _payment_intent_init
    PaymentIntent._api_cancel = classmethod(_payment_intent_cancel)
    Event.__init__ = _event_init
    PaymentMethod._try_get_canonical_test_article = classmethod(_canonical_test_article)
    resources.schedule_webhook = events.schedule
    # localstripe's app bound its `POST /v1/payment_intents/{id}/cancel` route to the original
    # method at import: the `api` module routes that path to the patched one.


def make_refund(*, charge: Any, amount: int, metadata: dict[str, Any], reason: str | None) -> Any:
    """A localstripe Refund of `charge`, with what localstripe does not keep."""
    refund = Refund(charge=charge.id, amount=amount, metadata=metadata)
    refund._reason = reason
    return refund
