"""Reads of the payments app."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from orders import selectors as order_selectors
from orders.domain import OrderError, OrderNotFound
from orders.repositories import get_order_repository
from payments.models import Payment, PaymentStatus, RefundStatus


def refunded_minor(payment: Payment) -> int:
    """What is refunded or being refunded: pending refunds count, so two at once cannot overshoot."""
    total = payment.refunds.filter(status__in=[RefundStatus.PENDING, RefundStatus.SUCCEEDED]).aggregate(
        total=Sum("amount_minor")
    )["total"]
    return int(total or 0)


def payments_of_order(*, order_id: uuid.UUID) -> QuerySet[Payment]:
    return Payment.objects.filter(order_id=order_id).prefetch_related("refunds").order_by("attempt")


def payment_latest(*, order_id: uuid.UUID) -> Payment | None:
    return payments_of_order(order_id=order_id).order_by("-attempt").first()


class PaymentNotFound(OrderNotFound):
    """No payment the viewer may see has this id: names only the id that was asked for (never the
    order behind someone else's payment). An `OrderNotFound`, so it is answered 404 alike."""

    def __init__(self, payment_id: uuid.UUID | str) -> None:
        OrderError.__init__(self, f"Payment {payment_id} was not found.")
        self.order_id = None
        self.payment_id = payment_id


def payment_get(
    *,
    payment_id: uuid.UUID | str,
    user: AbstractBaseUser | AnonymousUser | None,
    guest_order_ids: Collection[str] = (),
) -> Payment:
    """The payment if `user` may see its order; `PaymentNotFound` otherwise (answered as 404)."""
    try:
        payment = Payment.objects.prefetch_related("refunds").get(id=uuid.UUID(str(payment_id)))
    except (ValueError, Payment.DoesNotExist) as exc:
        raise PaymentNotFound(payment_id) from exc
    try:
        order_selectors.order_get(
            repository=get_order_repository(),
            order_id=payment.order_id,
            user=user,
            guest_order_ids=guest_order_ids,
        )
    except OrderNotFound as exc:
        raise PaymentNotFound(payment_id) from exc
    return payment


def refund_position(order_id: uuid.UUID) -> dict[str, Any]:
    """What was paid for the order, what is refunded and what is left (minor units)."""
    payment = (
        Payment.objects.filter(order_id=order_id, status=PaymentStatus.SUCCEEDED).order_by("attempt").first()
    )
    if payment is None:
        return {"currency": "", "paid": 0, "refunded": 0, "left": 0}
    refunded = refunded_minor(payment)
    return {
        "currency": payment.currency,
        "paid": payment.amount_received_minor,
        "refunded": refunded,
        "left": payment.amount_received_minor - refunded,
    }


def order_has_open_payment(order_id: uuid.UUID) -> bool:
    """Is a payment of this order under way? Registered in ORDER_EXPIRY_HOLDS: the expiry of
    unpaid orders (in orders, which must not import payments) leaves such an order for later.

    Money moving (`processing`) or arrived and held for staff (`review`) always holds it. A
    payment waiting on the customer (`requires_action`, e.g. 3-D Secure) or on our own claim
    (`creating`) holds it only while it changed within ORDER_PAYMENT_TIMEOUT_MINUTES: an
    abandoned one must not keep stock forever, and should it succeed after all, the order being
    cancelled makes it an unexpected payment, refunded automatically (`payment_reverse`).
    """
    recent = timezone.now() - timedelta(minutes=settings.ORDER_PAYMENT_TIMEOUT_MINUTES)
    return (
        Payment.objects.filter(order_id=order_id)
        .filter(
            Q(status__in=[PaymentStatus.PROCESSING, PaymentStatus.REVIEW])
            | Q(status__in=[PaymentStatus.CREATING, PaymentStatus.REQUIRES_ACTION], updated_at__gte=recent)
        )
        .exists()
    )


def payment_succeeded(*, order_id: uuid.UUID) -> Payment | None:
    """The payment that paid the order (at most one can), or None."""
    return Payment.objects.filter(order_id=order_id, status=PaymentStatus.SUCCEEDED).first()
