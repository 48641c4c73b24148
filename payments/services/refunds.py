"""Refunds: asked by staff, automatic for unwanted charges, and applying what Stripe reports.

The sum of a payment's refunds never exceeds what it received; the order's status follows the
refunds that succeeded (paid, partially refunded, refunded), back again if one fails later.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Sum

from live import services as live
from orders import services as order_services
from orders.domain import CORRECTIONS, Actor, EventType, OrderStatus, can_transition
from orders.money import format_money
from orders.repositories import OrderRepository, get_order_repository
from payments.gateways.base import (
    GatewayRequestRefused,
    PaymentGateway,
    RefundRequest,
    RefundResult,
    get_payment_gateway,
)
from payments.models import Payment, PaymentStatus, Refund, RefundStatus
from payments.selectors import refunded_minor
from payments.services.common import REFUNDABLE_STATUSES, _alert, _transition
from payments.services.errors import PaymentNotAllowed, RefundRefused

logger = logging.getLogger(__name__)

# Who refunds a reversed payment (an unwanted charge) automatically.
REVERSE_ACTOR = Actor.system("payments")


def payment_refund(
    *,
    order_id: uuid.UUID,
    actor: Actor,
    amount_minor: int | None = None,
    reason: str = "",
    requested_by: Any = None,
    repository: OrderRepository | None = None,
    gateway: PaymentGateway | None = None,
) -> Refund:
    """Refund all that is left (no amount) or part of the order's payment.

    The sum of refunds never exceeds what was paid. A full refund makes the order `refunded`,
    a partial one `partially_refunded`.
    """
    repository = repository or get_order_repository()
    gateway = gateway or get_payment_gateway()
    order = repository.get(order_id)
    if order.status not in REFUNDABLE_STATUSES:
        raise PaymentNotAllowed(f"An order that is {order.status} cannot be refunded.")
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update()
            .filter(order_id=order_id, status=PaymentStatus.SUCCEEDED)
            .first()
        )
        if payment is None:
            raise PaymentNotAllowed("This order has no successful payment to refund.")
        left = payment.amount_received_minor - refunded_minor(payment)
        amount = left if amount_minor is None else amount_minor
        if amount <= 0:
            raise RefundRefused("A refund must be more than zero." if left else "Nothing is left to refund.")
        if amount > left:
            # Staff read this in the admin (a refund raced theirs): money, as the form says it.
            raise RefundRefused(f"At most {format_money(left, payment.currency)} can still be refunded.")
        refund = Refund.objects.create(
            payment=payment,
            amount_minor=amount,
            reason=reason[:500],
            actor=str(actor),
            requested_by=requested_by,
        )
        live.publish_order(order_id)
    return _refund_at_provider(refund, payment, gateway=gateway, actor=actor, repository=repository)


def _refund_at_provider(
    refund: Refund, payment: Payment, *, gateway: PaymentGateway, actor: Actor, repository: OrderRepository
) -> Refund:
    """Ask Stripe for the refund recorded (pending) as `refund`, under a key of its own, with our
    id in its metadata: whichever arrives first, this answer or Stripe's `refund.*` webhook,
    completes the same row."""
    try:
        result = gateway.refund(
            RefundRequest(
                intent_id=payment.intent_id or "",
                amount_minor=refund.amount_minor,
                idempotency_key=f"refund:{refund.id}",
                metadata={"refund_id": str(refund.id), "order_id": str(payment.order_id)},
            )
        )
    except GatewayRequestRefused as exc:
        Refund.objects.filter(id=refund.id, status=RefundStatus.PENDING).update(
            status=RefundStatus.FAILED, failure_message=str(exc)[:500]
        )
        logger.warning(
            "Stripe refused a refund of order %s: %s",
            payment.order_id,
            exc,
            extra={"event": "refund.refused", "order_id": payment.order_id, "error_class": "RefundRefused"},
        )
        raise RefundRefused(f"Stripe refused the refund: {exc}", field="non_field_errors") from exc
    return refund_apply(refund_id=refund.id, result=result, actor=actor, repository=repository)


# How far along a refund is (Stripe's statuses): a report never moves one back. A refund that
# succeeded may still fail later (the card was closed); failed and canceled are final.
_REFUND_RANK = {
    RefundStatus.PENDING: 0,
    RefundStatus.SUCCEEDED: 1,
    RefundStatus.FAILED: 2,
    RefundStatus.CANCELED: 2,
}


def _refund_status(reported: str) -> RefundStatus:
    return RefundStatus(reported) if reported in RefundStatus.values else RefundStatus.PENDING


def refund_apply(
    *, refund_id: uuid.UUID, result: RefundResult, actor: Actor, repository: OrderRepository | None = None
) -> Refund:
    """Record the provider's word on a refund and move the order to match (idempotent; a report
    that would move the refund back is ignored)."""
    repository = repository or get_order_repository()
    with transaction.atomic():
        # The payment first, then the refund: every path that locks both does so in this order.
        payment_id = Refund.objects.values_list("payment_id", flat=True).get(id=refund_id)
        Payment.objects.select_for_update().filter(id=payment_id).first()
        refund = Refund.objects.select_for_update().get(id=refund_id)
        before = RefundStatus(refund.status)
        after = _refund_status(result.status)
        if result.refund_id and not refund.provider_refund_id:
            refund.provider_refund_id = result.refund_id
            refund.save(update_fields=["provider_refund_id", "updated_at"])
        if _REFUND_RANK[after] <= _REFUND_RANK[before]:
            return refund
        refund.status = after
        refund.failure_message = (result.error_message or result.error_code)[:500]
        refund.save()
        live.publish_order(refund.payment.order_id)  # a refund landed (or failed): the page looks again
        payment = refund.payment
        event_data = {
            "refund_id": str(refund.id),
            "provider_refund_id": refund.provider_refund_id or "",
            "amount_minor": refund.amount_minor,
            "currency": payment.currency,
            "reason": refund.reason,
        }
        if after == RefundStatus.SUCCEEDED:
            order_services.order_record_refund(
                repository=repository, order_id=payment.order_id, actor=actor, data=event_data
            )
        elif before == RefundStatus.SUCCEEDED:
            # The money did not reach the customer after all: staff must act (another way to pay
            # them back), and the order no longer counts it.
            _alert(
                "Refund %s of order %s failed after it succeeded (%s): the customer got nothing back",
                refund.provider_refund_id or refund.id,
                payment.order_id,
                refund.failure_message or "no reason given",
                extra={"event": "refund.failed", "order_id": payment.order_id, "error_class": "RefundFailed"},
            )
            order_services.order_record_event(
                repository=repository,
                order_id=payment.order_id,
                event_type=EventType.REFUND_FAILED,
                actor=actor,
                data=event_data | {"failure": refund.failure_message},
            )
        _sync_order_refunds(repository, payment, actor)
    return refund


def _sync_order_refunds(repository: OrderRepository, payment: Payment, actor: Actor) -> None:
    """Derive the order's status from the refunds that succeeded: paid, partially refunded or
    refunded; forward as refunds succeed, back (a correction) when one fails later."""
    if payment.status != PaymentStatus.SUCCEEDED:
        return  # a reversed or held payment's refunds are not the order's
    done = int(
        payment.refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(total=Sum("amount_minor"))["total"]
        or 0
    )
    if done >= payment.amount_received_minor:
        target = OrderStatus.REFUNDED
    else:
        target = OrderStatus.PARTIALLY_REFUNDED if done else OrderStatus.PAID
    order = repository.get(payment.order_id)
    if order.status == target:
        return
    data = {"refunded_minor": done, "payment_id": str(payment.id)}
    if order.status in REFUNDABLE_STATUSES and can_transition(order.status, target):
        _transition(repository, order.id, target, actor, data)
    elif target in CORRECTIONS.get(order.status, frozenset()):
        order_services.order_correct_status(
            repository=repository,
            order_id=order.id,
            to_status=target,
            actor=actor,
            reason="refund_failed",
            data=data,
        )


def payment_reverse(
    *, payment_id: uuid.UUID, repository: OrderRepository | None = None, gateway: PaymentGateway | None = None
) -> Refund | None:
    """Refund what is left of a reversed payment (an unwanted charge), once: a refund already
    under way or done is not repeated. Returns the refund, or None when nothing is left."""
    repository = repository or get_order_repository()
    gateway = gateway or get_payment_gateway()
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(id=payment_id)
        if payment.status != PaymentStatus.REVERSED:
            return None
        left = payment.amount_received_minor - refunded_minor(payment)
        if left <= 0:
            return None
        refund = Refund.objects.create(
            payment=payment,
            amount_minor=left,
            reason=f"Automatic: {payment.review_reason}"[:500],
            actor=str(REVERSE_ACTOR),
        )
    return _refund_at_provider(refund, payment, gateway=gateway, actor=REVERSE_ACTOR, repository=repository)
