"""What publishes a change: the order page's stream hears of payments, refunds and its email's
deliveries; /ops/'s of deliveries, errors and alerts. Transactional tests: a change is published
when its transaction commits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.utils import timezone

from integrations import services as integration_services
from integrations.models import Delivery, DeliveryState
from live import services as live
from monitoring import services as monitoring_services
from orders.domain import Actor, Order
from payments import services as payment_services
from tests.payments.fakes import FakeGateway

pytestmark = pytest.mark.django_db(transaction=True)

ACTOR = Actor.system("test")


def version(channel: str) -> str | None:
    return live.versions([channel])[channel]


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    return place(customer=customer, lines={"MUG-1": 2})


def test_paying_and_refunding_publish_the_order(order: Order) -> None:
    channel = live.order_channel(order.id)
    fake = FakeGateway()
    placed = version(channel)
    payment_services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=ACTOR, gateway=fake
    )
    paid = version(channel)
    assert paid != placed
    payment_services.payment_refund(order_id=order.id, amount_minor=500, actor=ACTOR, gateway=fake)
    assert version(channel) != paid


def test_a_delivery_sent_again_publishes_its_order_and_ops(order: Order) -> None:
    delivery = Delivery.objects.create(
        idempotency_key=f"email:{order.id}:order.paid:1",
        integration="email",
        order_id=order.id,
        event_type="order.paid",
        order_version=1,
        payload={},
        state=DeliveryState.DEAD,
        next_attempt_at=timezone.now(),
    )
    before, ops_before = version(live.order_channel(order.id)), version(live.OPS)
    integration_services.delivery_retry(delivery_id=delivery.id, actor=ACTOR)
    assert version(live.order_channel(order.id)) != before and version(live.OPS) != ops_before


def test_recorded_errors_and_alerts_publish_ops() -> None:
    monitoring_services.error_record(source="delivery", error_class="Boom", message="it broke")
    after_error = version(live.OPS)
    assert after_error
    monitoring_services.alert_raise(subject="email", kind="dead_letter", message="an email is dead")
    after_alert = version(live.OPS)
    assert after_alert != after_error
    monitoring_services.alert_raise(subject="email", kind="dead_letter", message="another")  # the same alert
    assert version(live.OPS) != after_alert
