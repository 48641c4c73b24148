"""What the payment services share: the order statuses they act on, staff alerts, transitions."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction

from orders import services as order_services
from orders.domain import STOCK_HOLDING_STATUSES, Actor, OrderStatus
from orders.repositories import OrderRepository

logger = logging.getLogger(__name__)

# An order can be paid while it holds its stock: awaiting payment, or after a failed attempt.
PAYABLE_STATUSES = STOCK_HOLDING_STATUSES
REFUNDABLE_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED})


def _alert(message: str, *args: Any, extra: dict[str, Any]) -> None:
    """Log an event that alerts staff (monitoring.observer), once the transaction commits: a
    change that rolls back alerts no one, and the alert's own writes never wait on our locks."""
    transaction.on_commit(lambda: logger.error(message, *args, extra=extra))


def _transition(
    repository: OrderRepository,
    order_id: uuid.UUID,
    to_status: OrderStatus,
    actor: Actor,
    data: dict[str, Any],
) -> None:
    order_services.order_transition(
        repository=repository, order_id=order_id, to_status=to_status, actor=actor, data=data
    )
