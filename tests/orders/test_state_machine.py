"""The status state machine: every legal move allowed and recorded, every other one refused."""

from __future__ import annotations

import itertools
import uuid

import pytest

from orders.domain import (
    TRANSITIONS,
    Actor,
    EventType,
    IllegalTransition,
    Order,
    OrderStatus,
    ShippingAddress,
    utcnow,
)

S = OrderStatus
LEGAL = {
    (S.PENDING_PAYMENT, S.PAID),
    (S.PAID, S.FULFILLED),
    (S.PENDING_PAYMENT, S.PAYMENT_FAILED),
    (S.PAYMENT_FAILED, S.PENDING_PAYMENT),
    (S.PENDING_PAYMENT, S.CANCELLED),
    (S.PAYMENT_FAILED, S.CANCELLED),
    (S.PAID, S.PARTIALLY_REFUNDED),
    (S.PARTIALLY_REFUNDED, S.REFUNDED),
    (S.PAID, S.REFUNDED),
}
ALL_PAIRS = list(itertools.product(OrderStatus, OrderStatus))


def make_order(status: OrderStatus) -> Order:
    now = utcnow()
    return Order(
        id=uuid.uuid4(),
        status=status,
        currency="USD",
        lines=[],
        subtotal_minor=0,
        shipping_minor=0,
        total_minor=0,
        email="a@example.com",
        shipping_address=ShippingAddress(name="A", line1="B", city="C", postal_code="D", country="GB"),
        created_at=now,
        updated_at=now,
    )


def test_the_table_is_exactly_the_specified_machine() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL


@pytest.mark.parametrize(("from_status", "to_status"), sorted(LEGAL))
def test_legal_transition_moves_and_records_an_event(
    from_status: OrderStatus, to_status: OrderStatus
) -> None:
    order = make_order(from_status)
    event = order.transition_to(to_status, actor=Actor(kind="staff", user_id=7), data={"why": "test"})
    assert order.status == to_status
    assert event.type == EventType.STATUS_CHANGED
    assert (event.from_status, event.to_status) == (from_status, to_status)
    assert event.actor == "staff:7"
    assert event.data == {"why": "test"}
    assert order.pending_events == [event]
    assert event.sequence == 1


@pytest.mark.parametrize(
    ("from_status", "to_status"), [pair for pair in ALL_PAIRS if pair not in LEGAL], ids=str
)
def test_illegal_transition_raises_and_changes_nothing(
    from_status: OrderStatus, to_status: OrderStatus
) -> None:
    order = make_order(from_status)
    with pytest.raises(IllegalTransition) as raised:
        order.transition_to(to_status, actor=Actor.system())
    assert order.status == from_status
    assert order.pending_events == []
    assert str(from_status) in raised.value.message and str(to_status) in raised.value.message


def test_event_sequence_numbers_follow_each_other() -> None:
    order = make_order(S.PENDING_PAYMENT)
    order.transition_to(S.PAYMENT_FAILED, actor=Actor.system())
    order.transition_to(S.PENDING_PAYMENT, actor=Actor.system())
    order.transition_to(S.PAID, actor=Actor.system())
    assert [e.sequence for e in order.pending_events] == [1, 2, 3]
