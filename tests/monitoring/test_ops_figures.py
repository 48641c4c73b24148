"""What /ops/ says about a delivery that failed, was given up, retried by staff and then delivered.

Reported by an operator who watched a real outage: "Last error" read "3 min ago" while errors
came every 15 s and "0 s ago" right after a successful retry; the delivered row still read "Gave
up after 8 attempts" with attempts reset to 1; one manual resend pushed "event → delivered p95"
to minutes. The clock is Django's `timezone.now`, set to explicit times, so every figure is exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from integrations import services
from integrations.adapters.base import DeliveryError
from integrations.models import Delivery, DeliveryState
from integrations.resilience import CircuitBreaker, shared_cache
from monitoring import selectors
from monitoring.models import MetricBucket
from orders import services as order_services
from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from tests.integrations.fakes import FakeAdapter
from tests.monitoring.test_ops_page import text_of

UNAVAILABLE = DeliveryError(
    transient=True,
    error_class="ServiceUnavailableError",
    message="503 try again later",
    provider_status=503,
)
STAFF = Actor.system("staff")
T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)


class Clock:
    """`timezone.now` for the test: stands still until moved."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def move(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(T0)
    monkeypatch.setattr(timezone, "now", clock)
    return clock


@pytest.fixture
def three_attempts(settings: Any) -> None:
    """Email gives up after three attempts; the circuit stays closed through them."""
    integrations = copy.deepcopy(settings.INTEGRATIONS)
    integrations["email"]["retry"] = {"base": 1.0, "cap": 4.0, "max_attempts": 3}
    settings.INTEGRATIONS = integrations
    settings.BREAKER_FAILURE_THRESHOLD = 100
    for name in integrations:
        CircuitBreaker(name).reset()
        for key in (f"pause:{name}", f"ratelimit:{name}", f"dispatch-queued:{name}"):
            shared_cache().delete(key)


def paid_order(place: Callable[..., Order], repository: OrderRepository, customer: Any) -> Order:
    order = order_services.order_transition(
        repository=repository, order_id=place(customer=customer).id, to_status=OrderStatus.PAID, actor=STAFF
    )
    services.outbox_relay(dispatch=False)
    return order


def email_card(client: Client) -> str:
    return text_of(client.get("/ops/").content.decode(), "integration-email")


def lag_count(integration: str) -> int:
    return sum(
        MetricBucket.objects.filter(name="delivery.lag", label=integration).values_list("count", flat=True)
    )


@pytest.mark.django_db
def test_a_delivery_given_up_then_retried_and_delivered_reads_as_delivered_with_its_history(
    clock: Clock,
    three_attempts: None,
    place: Callable[..., Order],
    repository: OrderRepository,
    customer: Any,
    ops_client: Client,
) -> None:
    order = paid_order(place, repository, customer)
    failing = FakeAdapter(name="email", script=[UNAVAILABLE] * 3)

    # Three failures, 15 s apart: the last one gives up.
    for _ in range(3):
        services.deliveries_dispatch(integration="email", adapter=failing)
        clock.move(seconds=15)
    given_up_at = T0 + timedelta(seconds=30)
    delivery = Delivery.objects.get(order_id=order.id, integration="email", event_type="order.paid")
    assert (delivery.state, delivery.attempts, delivery.last_error_at) == (DeliveryState.DEAD, 3, given_up_at)
    assert delivery.last_error_message == "Gave up after 3 attempts: 503 try again later"

    # 1. "Last error" is when the newest error happened, 15 s before now: not the row's creation.
    [overview] = [entry for entry in selectors.integrations_overview() if entry["name"] == "email"]
    assert overview["last_error"]["last_error_at"] == given_up_at
    card = email_card(ops_client)
    assert "Last error 15 s ago (HTTP 503): ServiceUnavailableError Gave up after 3 attempts" in card
    assert "3 attempts" in card  # the dead letter

    # Staff retry it a minute later; it is delivered 15 s after that.
    clock.move(seconds=45)
    retried = services.delivery_retry(delivery_id=delivery.id, actor=STAFF)
    assert (retried.state, retried.attempts, retried.earlier_attempts) == (DeliveryState.PENDING, 0, 3)
    assert retried.retried_at == T0 + timedelta(seconds=90)
    clock.move(seconds=15)
    assert services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email")).succeeded == 1
    delivery.refresh_from_db()
    assert (delivery.state, delivery.total_attempts, delivery.last_error_at) == (
        DeliveryState.SUCCEEDED,
        4,
        given_up_at,
    )

    # 1. A success is no error time: still the failure's time, now 1 min 15 s ago, as history.
    card = email_card(ops_client)
    assert "Last success 0 s ago" in card
    assert "Last error 1 min 15 s ago (HTTP 503): ServiceUnavailableError" in card
    assert "That delivery has since been delivered." in card
    assert "Dead letters 0" in card

    # 2. The order's story: delivered, four attempts in all (one since the retry), the failure
    #    only as what happened before it was delivered.
    story = text_of(ops_client.get("/ops/", {"order": str(order.id)}).content.decode(), "story")
    row = next(line for line in story.split("email ")[1:] if line.startswith("order.paid"))
    assert "Succeeded 4 (1 since the retry at 09:01:30)" in row
    assert "Last failure at 09:00:30" in row
    assert "before it was delivered: ServiceUnavailableError (HTTP 503) Gave up after 3 attempts" in row


@pytest.mark.django_db
def test_a_retry_or_a_resend_is_no_slow_delivery(
    clock: Clock,
    three_attempts: None,
    place: Callable[..., Order],
    repository: OrderRepository,
    customer: Any,
    ops_client: Client,
) -> None:
    order = paid_order(place, repository, customer)
    # Delivered 2 s after the order was paid: that is the figure.
    clock.move(seconds=2)
    services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email"))
    services.deliveries_dispatch(integration="sns", adapter=FakeAdapter(name="sns"))
    selectors.metrics_summary("1h")  # flushes this process's figures
    assert lag_count("email") == lag_count("sns") == 1

    # Staff resend the email 20 minutes later, and a dead SNS delivery is retried: no lag counted.
    clock.move(minutes=20)
    services.delivery_resend_email(order_id=order.id, actor=STAFF)
    sns = Delivery.objects.get(order_id=order.id, integration="sns", event_type="order.paid")
    Delivery.objects.filter(id=sns.id).update(state=DeliveryState.DEAD)
    services.delivery_retry(delivery_id=sns.id, actor=STAFF)
    assert services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email")).succeeded == 1
    assert services.deliveries_dispatch(integration="sns", adapter=FakeAdapter(name="sns")).succeeded == 1
    summary = selectors.metrics_summary("1h")
    assert lag_count("email") == lag_count("sns") == 1
    assert summary["integrations"]["email"]["lag"]["p95_ms"] <= 2000

    html = ops_client.get("/ops/").content.decode()
    help_text = text_of(html, "lag-help")
    assert "automatic deliveries only" in help_text and "resent email" in help_text
    assert "ms" in text_of(html, "integration-email").split("Event → delivered p95 (1h)")[1][:12]


@pytest.mark.django_db
def test_the_row_change_of_a_claim_is_recorded(
    clock: Clock,
    three_attempts: None,
    place: Callable[..., Order],
    repository: OrderRepository,
    customer: Any,
) -> None:
    """bulk_update skips auto_now: the ledger's `updated_at` follows each attempt all the same."""
    order = paid_order(place, repository, customer)
    clock.move(seconds=7)
    services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email", script=[UNAVAILABLE]))
    delivery = Delivery.objects.get(order_id=order.id, integration="email", event_type="order.paid")
    assert delivery.updated_at == delivery.last_error_at == T0 + timedelta(seconds=7)


@pytest.mark.django_db
def test_a_retried_delivery_that_dies_again_counts_every_attempt(
    clock: Clock,
    three_attempts: None,
    place: Callable[..., Order],
    repository: OrderRepository,
    customer: Any,
    ops_client: Client,
) -> None:
    order = paid_order(place, repository, customer)
    failing = FakeAdapter(name="email", script=[UNAVAILABLE] * 6)
    for _ in range(3):
        services.deliveries_dispatch(integration="email", adapter=failing)
        clock.move(seconds=15)
    delivery = Delivery.objects.get(order_id=order.id, integration="email", event_type="order.paid")
    services.delivery_retry(delivery_id=delivery.id, actor=STAFF)

    # Queued again: the story says so, with the failure before it.
    story = text_of(ops_client.get("/ops/", {"order": str(order.id)}).content.decode(), "story")
    assert "Pending 3 (0 since the retry at 09:00:45)" in story
    assert "Queued again at 09:00:45; before that: ServiceUnavailableError (HTTP 503)" in story

    for _ in range(3):  # a fresh series of three attempts, given up again
        services.deliveries_dispatch(integration="email", adapter=failing)
        clock.move(seconds=15)
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.total_attempts) == (DeliveryState.DEAD, 3, 6)
    assert delivery.last_error_message == "Gave up after 6 attempts: 503 try again later"
    assert delivery.last_error_at == T0 + timedelta(seconds=75)
    assert "6 attempts" in text_of(ops_client.get("/ops/").content.decode(), "integration-email")
