"""Reads of the payments app."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet, Sum

from orders import selectors as order_selectors
from orders.domain import OrderNotFound
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


def payment_get(
    *,
    payment_id: uuid.UUID | str,
    user: AbstractBaseUser | AnonymousUser | None,
    guest_order_ids: Collection[str] = (),
) -> Payment:
    """The payment if `user` may see its order; `OrderNotFound` otherwise (answered as 404)."""
    try:
        payment = Payment.objects.prefetch_related("refunds").get(id=uuid.UUID(str(payment_id)))
    except (ValueError, Payment.DoesNotExist) as exc:
        raise OrderNotFound(payment_id) from exc
    order_selectors.order_get(
        repository=get_order_repository(),
        order_id=payment.order_id,
        user=user,
        guest_order_ids=guest_order_ids,
    )
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
