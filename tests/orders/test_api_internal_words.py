"""The orders API shows a customer their order's history without staff's notes and reasons, or
provider ids; staff read all of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orders import services as order_services
from orders.domain import Actor, Order
from tests.orders.refunds import INTERNAL_REASON, STAFF_NOTE, partly_refunded

pytestmark = pytest.mark.django_db


@pytest.fixture
def refunded(place: Callable[..., Order], customer: Any, staff: Any, repository: Any) -> Order:
    order = partly_refunded(
        order=place(customer=customer, lines={"MUG-1": 2}), staff=staff, repository=repository
    )
    order_services.order_add_note(
        repository=repository,
        order_id=order.id,
        actor=Actor(kind="customer", user_id=customer.pk),
        text="Thanks",
    )
    return order


def test_a_customer_reads_amounts_and_their_own_note_not_staffs_words(
    api_as: Callable[[Any], Any], customer: Any, refunded: Order
) -> None:
    response = api_as(customer).get(f"/api/orders/{refunded.id}")

    assert response.status_code == 200
    text = response.content.decode()
    assert INTERNAL_REASON not in text and STAFF_NOTE not in text and "re_fake_" not in text
    events = response.json()["events"]
    refund = next(e for e in events if e["type"] == "refund_recorded")
    assert refund["data"] == {"amount_minor": 1250, "currency": "USD"}
    assert [e["data"] for e in events if e["type"] == "note_added"] == [{"text": "Thanks"}]


def test_staff_read_the_whole_history(api_as: Callable[[Any], Any], staff: Any, refunded: Order) -> None:
    response = api_as(staff).get(f"/api/orders/{refunded.id}")

    assert response.status_code == 200
    text = response.content.decode()
    assert INTERNAL_REASON in text and STAFF_NOTE in text
