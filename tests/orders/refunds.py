"""A paid order partly refunded by staff, with their reason and note: words a customer must
never read (tests/orders/test_api_internal_words.py, test_order_page_browser.py)."""

from __future__ import annotations

from typing import Any

from orders import services as order_services
from orders.domain import Actor, Order
from orders.repositories import OrderRepository
from payments import services as payment_services
from tests.payments.fakes import FakeGateway

INTERNAL_REASON = "Goodwill: customer threatened a chargeback"
STAFF_NOTE = "Checked with the warehouse: box crushed"


def partly_refunded(*, order: Order, staff: Any, repository: OrderRepository) -> Order:
    """`order` (two mugs, 29.00) paid through a fake gateway, then 12.50 of it refunded by `staff`
    with INTERNAL_REASON as the reason, and STAFF_NOTE added as their note."""
    gateway = FakeGateway()
    payment_services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("test"), gateway=gateway
    )
    by_staff = Actor(kind="staff", user_id=staff.pk)
    payment_services.payment_refund(
        order_id=order.id,
        amount_minor=1250,
        reason=INTERNAL_REASON,
        actor=by_staff,
        requested_by=staff,
        gateway=gateway,
    )
    order_services.order_add_note(repository=repository, order_id=order.id, actor=by_staff, text=STAFF_NOTE)
    return order
