"""A refund of more than is left is refused in money, the way staff read it: the admin's message
when another refund got there first (the race the form cannot see), and the API's error, whose
`code` and field stay those of every validation error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory

from orders.domain import Actor, Order
from payments import services
from payments.admin import refund_orders

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("repository")]


@pytest.fixture
def paid(stripe_api: str, place: Callable[..., Order], customer: Any) -> Order:
    order = place(customer=customer, lines={"MUG-1": 2})  # $29.00
    services.payment_confirm(order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("t"))
    return order


def test_the_admin_says_what_is_left_in_money_when_another_refund_got_there_first(
    paid: Order, staff: Any
) -> None:
    # The form allowed $29.00; before it was sent, another refund of $20.00 went through.
    services.payment_refund(order_id=paid.id, amount_minor=2000, actor=Actor.system("other"))
    request = RequestFactory().post("/admin/")
    request.user = staff
    request.session = {}
    request._messages = FallbackStorage(request)

    refund_orders(request, [paid], amount_minor=2900, reason="")

    assert [str(m) for m in get_messages(request)] == [
        f"Order {paid.reference} not refunded: At most $9.00 can still be refunded."
    ]


def test_the_service_error_keeps_its_code_and_field(paid: Order) -> None:
    with pytest.raises(services.RefundRefused) as refused:
        services.payment_refund(order_id=paid.id, amount_minor=2901, actor=Actor.system("t"))
    assert refused.value.code == "invalid"
    assert refused.value.http_status == 400
    assert refused.value.fields == {"amount_minor": ["At most $29.00 can still be refunded."]}
    assert "minor units" not in refused.value.message
