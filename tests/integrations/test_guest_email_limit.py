"""Email to anyone (issue 12, point 5): at most GUEST_EMAIL_MAX_PER_HOUR emails an hour to one
guest address; the rest are skipped, final and visible in the delivery ledger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from integrations import services
from integrations.adapters.base import DeliveryError
from integrations.models import Delivery, DeliveryState
from orders import services as order_services
from orders.domain import Actor, Order
from orders.models import Product
from orders.repositories import OrderRepository
from tests.integrations.fakes import FakeAdapter

pytestmark = pytest.mark.django_db

VICTIM = "someone-else@example.com"


@pytest.fixture(autouse=True)
def _limit(settings: Any, mug: Any) -> None:
    settings.GUEST_EMAIL_MAX_PER_HOUR = 5
    Product.objects.filter(pk=mug.pk).update(stock=1000)


@pytest.fixture
def cancelled(place: Callable[..., Order], repository: OrderRepository) -> Callable[..., Order]:
    """Place an order and cancel it: one `order.cancelled` email to its address."""

    def make(**kwargs: Any) -> Order:
        order = place(**kwargs)
        return order_services.order_cancel(
            repository=repository, order_id=order.id, actor=Actor(kind="guest")
        )

    return make


def dispatch_email(adapter: FakeAdapter) -> services.DispatchReport:
    services.outbox_relay(dispatch=False)
    return services.deliveries_dispatch(integration="email", adapter=adapter, budget_seconds=30)


def emails(order: Order) -> list[Delivery]:
    return list(Delivery.objects.filter(integration="email", order_id=order.id))


def test_the_sixth_email_to_one_guest_address_in_an_hour_is_skipped(cancelled: Callable[..., Order]) -> None:
    orders = [cancelled(email=VICTIM) for _ in range(6)]
    adapter = FakeAdapter(name="email")

    report = dispatch_email(adapter)

    assert (report.succeeded, report.skipped, report.dead, report.retrying) == (5, 1, 0, 0)
    assert len(adapter.delivered) == 5
    states = [d.state for order in orders for d in emails(order)]
    assert sorted(states) == [DeliveryState.SKIPPED] + [DeliveryState.SUCCEEDED] * 5
    # In the ledger, with the reason; final: not claimed again, not dead-lettered.
    skipped = Delivery.objects.get(integration="email", state=DeliveryState.SKIPPED)
    assert skipped.last_error_class == "GuestEmailLimit"
    assert "5 emails to this guest address in the last hour" in skipped.last_error_message
    assert skipped.dead_at is None and skipped.lease_expires_at is None
    assert dispatch_email(adapter).calls == 0
    assert Delivery.objects.get(id=skipped.id).state == DeliveryState.SKIPPED
    # The other integrations are not limited.
    assert Delivery.objects.filter(integration="sns", order_id__in=[o.id for o in orders]).count() == 6

    # Another guest address has its own count.
    other = cancelled(email="another@example.com")
    assert dispatch_email(adapter).succeeded == 1
    assert [d.state for d in emails(other)] == [DeliveryState.SUCCEEDED]

    # An hour later the address may be written to again.
    with time_machine.travel(timezone.now() + timedelta(minutes=61), tick=True):
        later = cancelled(email=VICTIM)
        assert dispatch_email(adapter).succeeded == 1
        assert [d.state for d in emails(later)] == [DeliveryState.SUCCEEDED]


def test_customers_with_accounts_are_not_limited(cancelled: Callable[..., Order], customer: Any) -> None:
    orders = [cancelled(customer=customer) for _ in range(7)]
    adapter = FakeAdapter(name="email")

    report = dispatch_email(adapter)

    assert (report.succeeded, report.skipped) == (7, 0)
    assert all(d.state == DeliveryState.SUCCEEDED for order in orders for d in emails(order))


def test_a_retried_email_is_counted_once(cancelled: Callable[..., Order], settings: Any) -> None:
    email = {**settings.INTEGRATIONS["email"], "retry": {"base": 0.0, "cap": 0.0, "max_attempts": 8}}
    settings.INTEGRATIONS = {**settings.INTEGRATIONS, "email": email}
    first = cancelled(email=VICTIM)
    adapter = FakeAdapter(
        name="email",
        script=[DeliveryError(transient=True, error_class="HTTPError", message="503", provider_status=503)]
        * 3,
    )
    # Three failed attempts of the first email, then it goes through.
    for _ in range(4):
        dispatch_email(adapter)
    assert [d.state for d in emails(first)] == [DeliveryState.SUCCEEDED]
    assert emails(first)[0].attempts == 4

    # It used one of the five, not four: four more still go.
    more = [cancelled(email=VICTIM) for _ in range(5)]
    report = dispatch_email(adapter)
    assert (report.succeeded, report.skipped) == (4, 1)
    assert sum(d.state == DeliveryState.SKIPPED for order in more for d in emails(order)) == 1
