"""What the customer's order page shows of the payment: which card paid, and what happens next.

Use: {% load payment_display %}{% paid_with order %} (the order page is the orders app's; the
payment is this app's, so the order page asks for it through this tag)."""

from __future__ import annotations

from typing import Any

from django import template

from orders.domain import Order, OrderStatus
from payments import selectors

register = template.Library()

# Statuses in which the order has been paid (the money may since have gone back, in part or all).
PAID_STATUSES = {
    OrderStatus.PAID,
    OrderStatus.FULFILLED,
    OrderStatus.PARTIALLY_REFUNDED,
    OrderStatus.REFUNDED,
}


@register.inclusion_tag("orders/_paid_with.html")
def paid_with(order: Order) -> dict[str, Any]:
    paid = order.status in PAID_STATUSES
    payment = selectors.payment_succeeded(order_id=order.id) if paid else None
    return {
        "order": order,
        "paid": paid,
        "payment": payment,
        "awaiting_shipment": order.status == OrderStatus.PAID,
        "shipped": order.status == OrderStatus.FULFILLED,
    }
