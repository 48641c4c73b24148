"""django-q2 tasks of the orders app (scheduled by migration 0004): each calls the services."""

from __future__ import annotations

from orders import services
from orders.repositories import get_order_repository


def expire_unpaid_orders() -> str:
    """Every minute: cancel orders unpaid ORDER_PAYMENT_TIMEOUT_MINUTES after they were placed,
    then settle stock changes whose order write was not seen to end (a crash, a timeout)."""
    repository = get_order_repository()
    report = services.orders_expire_unpaid(repository=repository)
    settled = services.stock_changes_settle(repository=repository)
    return (
        f"cancelled {report.cancelled} unpaid order(s); {report.held} held by a payment under way,"
        f" {report.skipped} changed meanwhile; settled {settled} stock change(s) late"
    )
