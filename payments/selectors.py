"""Reads of the payments app."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from orders import selectors as order_selectors
from orders.domain import OrderNotFound
from orders.repositories import get_order_repository
from payments.models import Payment


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
