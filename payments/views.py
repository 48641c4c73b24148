"""The payment page of an order and the three JSON endpoints its script calls.

Card details never reach this server: Stripe.js turns them into a payment method by confirming a
SetupIntent with Stripe, and the page sends us only the `pm_...` id. The flow
(`static/js/checkout.js`):

1. `POST .../pay/setup`   → a SetupIntent's client secret for `stripe.confirmCardSetup`;
2. `POST .../pay/confirm` → `{"payment_method": "pm_..."}`: `payment_confirm` charges it;
3. `POST .../pay/sync`    → after the bank's check in the browser (3-D Secure), ask Stripe how the
   latest payment stands (`payment_sync`).

Thin views: who may see the order is `orders.selectors.order_get`'s decision, paying is
`payments.services`'; these read the request, call one of them and answer. The JSON answers are
`{"status", "message"}` plus `client_secret` (requires_action), `redirect` (the order page) and
`code` (errors).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_safe

from access.throttling import rate_limit
from config.parsers import parse_json
from orders import selectors as order_selectors
from orders import services as order_services
from orders.domain import Actor, Order, OrderError, OrderNotFound, OrderStatus
from orders.repositories import get_order_repository
from orders.views import GUEST_ORDERS
from payments import selectors, services
from payments.gateways.base import GatewayError, GatewayRequestRefused
from payments.models import Payment, PaymentStatus

logger = logging.getLogger(__name__)

# A Stripe PaymentMethod id: the only thing about a card this server accepts.
PAYMENT_METHOD_ID = re.compile(r"pm_[A-Za-z0-9_]{1,250}")
MAX_BODY_BYTES = 4096

TRY_AGAIN = "The payment service could not be reached. Nothing was charged; please try again in a moment."


class BadInput(Exception):
    """The request itself is malformed (answered 400)."""


JsonView = Callable[[HttpRequest, uuid.UUID], JsonResponse]


# --- the page -------------------------------------------------------------------------------
@require_safe
def pay_page(request: HttpRequest, order_id: uuid.UUID) -> HttpResponse:
    try:
        order = _visible_order(request, order_id)
    except OrderNotFound as exc:
        raise Http404("No such order.") from exc
    if order.status not in services.PAYABLE_STATUSES:
        messages.info(request, _not_payable_message(order))
        return redirect("orders:order_detail", order_id=order.id)
    return render(
        request,
        "payments/pay.html",
        {
            "order": order,
            "attempts": selectors.payments_of_order(order_id=order.id),
            "stripe_js_url": settings.STRIPE_JS_URL,
            "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
            "test_mode": settings.STRIPE_PUBLISHABLE_KEY.startswith("pk_test_"),
        },
    )


# --- the JSON endpoints ---------------------------------------------------------------------
def json_endpoint(view: JsonView) -> JsonView:
    """POST only; domain errors become JSON answers with a message the page can show as is."""

    @wraps(view)
    def wrapper(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
        if request.method != "POST":
            response = _error(405, "method_not_allowed", "Use POST.")
            response["Allow"] = "POST"
            return response
        try:
            return view(request, order_id)
        except BadInput as exc:
            return _error(400, "invalid", str(exc))
        except OrderNotFound:
            return _error(404, "not_found", "No such order.")
        except services.PaymentNotAllowed as exc:
            return _error(409, "not_payable", exc.message, redirect=_order_url(order_id))
        except services.PaymentInProgress as exc:
            return _error(409, "payment_in_progress", exc.message)
        except services.PaymentConflict as exc:
            return _error(409, "idempotency_conflict", exc.message)
        except GatewayError:
            logger.warning("Payment provider unavailable for order %s", order_id, exc_info=True)
            return _error(503, "payment_provider_unavailable", TRY_AGAIN)
        except GatewayRequestRefused as exc:
            logger.error("Payment provider refused a request for order %s: %s", order_id, exc)
            return _error(
                502,
                "payment_refused",
                "The payment service refused the request. Please try another card, or try again later.",
            )
        except OrderError as exc:  # e.g. the order changed at the same moment
            return _error(409, "conflict", exc.message)

    return wrapper


@json_endpoint
def pay_setup(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
    """A fresh SetupIntent for this try: Stripe.js confirms it with the card details."""
    order = _visible_order(request, order_id)
    if order.status not in services.PAYABLE_STATUSES:
        raise services.PaymentNotAllowed(_not_payable_message(order))
    secret = services.payment_setup_start(order_id=order.id)
    return JsonResponse({"status": "ready", "message": "", "client_secret": secret})


@rate_limit("payment_confirm", methods=("POST",))
@json_endpoint
def pay_confirm(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
    """Charge the order with the payment method Stripe.js made from the card."""
    payment_method = _payment_method_from(request)
    order = _visible_order(request, order_id)
    payment = services.payment_confirm(
        order_id=order.id, payment_method=payment_method, actor=_actor(request, order)
    )
    return _payment_answer(request, order, payment)


@json_endpoint
def pay_sync(request: HttpRequest, order_id: uuid.UUID) -> JsonResponse:
    """How the latest payment stands now, asked of Stripe (after 3-D Secure in the browser)."""
    order = _visible_order(request, order_id)
    latest = selectors.payment_latest(order_id=order.id)
    if latest is None:
        return _error(409, "no_payment", "There is no payment to check yet.")
    payment = services.payment_sync(payment_id=latest.id, actor=_actor(request, order))
    return _payment_answer(request, order, payment)


# --- helpers --------------------------------------------------------------------------------
def _visible_order(request: HttpRequest, order_id: uuid.UUID) -> Order:
    return order_selectors.order_get(
        repository=get_order_repository(),
        order_id=order_id,
        user=request.user,
        guest_order_ids=request.session.get(GUEST_ORDERS, []),
    )


def _actor(request: HttpRequest, order: Order) -> Actor:
    return order_services.actor_for(request.user, guest_email=order.email)


def _payment_method_from(request: HttpRequest) -> str:
    if len(request.body) > MAX_BODY_BYTES:
        raise BadInput("The request is too large.")
    try:
        body = parse_json(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput("The request body must be JSON.") from exc
    if not isinstance(body, dict):
        raise BadInput('The request body must be a JSON object: {"payment_method": "pm_..."}.')
    payment_method = body.get("payment_method")
    if not isinstance(payment_method, str) or not PAYMENT_METHOD_ID.fullmatch(payment_method):
        raise BadInput("payment_method must be a Stripe payment method id (pm_...).")
    return payment_method


def _payment_answer(request: HttpRequest, order: Order, payment: Payment) -> JsonResponse:
    body: dict[str, Any] = {"status": payment.status, "attempt": payment.attempt}
    if payment.status == PaymentStatus.SUCCEEDED:
        messages.success(request, "Payment received. Thank you!")
        return JsonResponse(body | {"message": "Payment received.", "redirect": _order_url(order.id)})
    if payment.status == PaymentStatus.REQUIRES_ACTION:
        return JsonResponse(
            body
            | {
                "message": "Your bank asks you to confirm this payment.",
                "client_secret": payment.client_secret,
            }
        )
    if payment.status in {PaymentStatus.FAILED, PaymentStatus.CANCELED}:
        message = payment.failure_message or "The payment did not go through. Please try another card."
        return JsonResponse(body | {"message": message, "code": payment.failure_code}, status=402)
    # creating or processing: Stripe (or another request of ours) is still on it.
    messages.info(request, "Your payment is being processed; this page shows when it is paid.")
    return JsonResponse(
        body | {"message": "Your payment is being processed.", "redirect": _order_url(order.id)},
        status=202,
    )


def _error(status: int, code: str, message: str, **extra: str) -> JsonResponse:
    return JsonResponse({"status": "error", "code": code, "message": message, **extra}, status=status)


def _order_url(order_id: uuid.UUID) -> str:
    return reverse("orders:order_detail", args=[order_id])


def _not_payable_message(order: Order) -> str:
    if order.status in {OrderStatus.PAID, OrderStatus.FULFILLED}:
        return "This order is already paid."
    if order.status == OrderStatus.CANCELLED:
        return "This order is cancelled, so it cannot be paid."
    return f"This order is {order.status.label.lower()}: there is nothing to pay."
