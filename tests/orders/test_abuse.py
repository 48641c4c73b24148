"""Abuse of the shop closed (issue 12, point 5): unpaid orders expire and give their stock back,
and an anonymous client can hold only so many units in unpaid orders."""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils.module_loading import import_string
from rest_framework.test import APIClient

from integrations.adapters.base import DeliveryRequest
from integrations.adapters.sendgrid import render_email
from orders import services, tasks
from orders.domain import Actor, HoldLimitExceeded, Order, OrderStatus
from orders.models import Product
from orders.repositories import OrderRepository
from orders.repositories.orm import DjangoOrderRepository
from orders.services import LineRequest
from payments.models import Payment, PaymentStatus
from tests.concurrency import race
from tests.conftest import ADDRESS, ADDRESS_JSON
from tests.orders.factories import ProductFactory, UserFactory

TIMEOUT = 60


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = TIMEOUT
    settings.ORDER_ANON_HOLD_MAX_UNITS = 20
    # Pages of two: the sweep pages through orders that leave the listing as it cancels them.
    settings.ORDER_EXPIRY_BATCH = 2


@pytest.fixture
def clock() -> Iterator[Callable[[Any], None]]:
    """`clock(when)` moves the clock to `when` (and keeps it ticking) until the test ends."""
    travellers: list[Any] = []

    def move(when: Any) -> None:
        if travellers:
            travellers.pop().stop()
        traveller = time_machine.travel(when, tick=True)
        traveller.start()
        travellers.append(traveller)

    yield move
    for traveller in travellers:
        traveller.stop()


def stock(sku: str = "MUG-1") -> int:
    return Product.objects.get(sku=sku).stock


def expire(repository: OrderRepository) -> services.ExpiryReport:
    return services.orders_expire_unpaid(repository=repository)


# --- expiry -----------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.django_db
def test_an_unpaid_order_expires_gives_its_stock_back_and_tells_the_customer(
    repository: OrderRepository, place: Callable[..., Order], clock: Callable[[Any], None]
) -> None:
    unpaid = place(lines={"MUG-1": 3})
    failed = place(lines={"MUG-1": 1})
    services.order_transition(
        repository=repository, order_id=failed.id, to_status=OrderStatus.PAYMENT_FAILED, actor=Actor.system()
    )
    paid = place(lines={"MUG-1": 2})
    services.order_transition(
        repository=repository, order_id=paid.id, to_status=OrderStatus.PAID, actor=Actor.system()
    )
    assert stock() == 10 - 3 - 1 - 2

    # One minute short of the timeout nothing is due.
    clock(unpaid.created_at + timedelta(minutes=TIMEOUT - 1))
    assert expire(repository) == services.ExpiryReport()
    later = place(lines={"MUG-1": 1})  # placed now: not due for another hour
    assert stock() == 3

    clock(unpaid.created_at + timedelta(minutes=TIMEOUT, seconds=5))
    report = expire(repository)

    assert report == services.ExpiryReport(cancelled=2)
    assert stock() == 3 + 3 + 1  # both unpaid orders' units are back; the paid order keeps its 2
    assert repository.get(unpaid.id).status == OrderStatus.CANCELLED
    assert repository.get(failed.id).status == OrderStatus.CANCELLED
    assert repository.get(paid.id).status == OrderStatus.PAID
    assert repository.get(later.id).status == OrderStatus.PENDING_PAYMENT

    # The audit trail says who and why, like any cancel.
    event = repository.events(unpaid.id)[-1]
    assert (event.from_status, event.to_status) == (OrderStatus.PENDING_PAYMENT, OrderStatus.CANCELLED)
    assert event.actor == "system:expiry"
    assert event.data == {"reason": f"Not paid within {TIMEOUT} minutes"}

    # The customer is told, in the same atomic write, and the email says nothing was charged.
    [message] = [m for m in repository.outbox(unpaid.id) if m.event_type == "order.cancelled"]
    subject, text, _ = render_email(
        DeliveryRequest(
            delivery_id=message.id,
            idempotency_key="email:test",
            event_type=message.event_type,
            order_id=unpaid.id,
            order_version=message.order_version,
            payload=message.payload,
        )
    )
    assert "has been cancelled" in subject
    assert "You have not been charged." in text

    # Idempotent: the next run finds nothing more to do.
    assert expire(repository) == services.ExpiryReport()
    assert stock() == 7
    assert [e.to_status for e in repository.events(unpaid.id)].count(OrderStatus.CANCELLED) == 1


@pytest.mark.e2e
@pytest.mark.django_db
def test_an_order_whose_payment_is_under_way_waits_until_the_payment_is_over(
    repository: OrderRepository, place: Callable[..., Order], clock: Callable[[Any], None]
) -> None:
    processing = place(lines={"MUG-1": 2})
    abandoned = place(lines={"MUG-1": 1})

    def payment(order: Order, status: PaymentStatus) -> Payment:
        return Payment.objects.create(
            order_id=order.id, attempt=1, amount_minor=order.total_minor, currency="USD", status=status
        )

    money_moving = payment(processing, PaymentStatus.PROCESSING)
    # 3-D Secure started when the order was placed and never finished.
    payment(abandoned, PaymentStatus.REQUIRES_ACTION)

    clock(processing.created_at + timedelta(minutes=TIMEOUT + 1))
    report = expire(repository)

    assert report == services.ExpiryReport(cancelled=1, held=1)
    assert repository.get(processing.id).status == OrderStatus.PENDING_PAYMENT
    # A payment waiting on the customer for longer than the timeout holds nothing (should it
    # succeed after all, payments refunds it: the order is cancelled).
    assert repository.get(abandoned.id).status == OrderStatus.CANCELLED
    assert stock() == 10 - 2

    # Once the payment is over (it failed), the next run expires the order.
    money_moving.status = PaymentStatus.FAILED
    money_moving.save()
    assert expire(repository) == services.ExpiryReport(cancelled=1)
    assert repository.get(processing.id).status == OrderStatus.CANCELLED
    assert stock() == 10


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_cancel_each_order_once(clock: Callable[[Any], None]) -> None:
    Product.objects.create(sku="RACE-1", name="Race", price_minor=100, stock=50)
    orders = [
        services.order_place(
            repository=DjangoOrderRepository(),
            actor=Actor(kind="guest"),
            customer_id=None,
            email="race@example.com",
            lines=[LineRequest("RACE-1", 2)],
            shipping_address=ADDRESS,
        )[0]
        for _ in range(6)
    ]
    assert stock("RACE-1") == 50 - 12
    clock(orders[-1].created_at + timedelta(minutes=TIMEOUT + 1))

    reports = race(3, lambda i: services.orders_expire_unpaid(repository=DjangoOrderRepository()))

    assert all(isinstance(r, services.ExpiryReport) for r in reports), reports
    assert sum(r.cancelled for r in reports) == 6, reports
    assert stock("RACE-1") == 50  # each order's stock came back exactly once
    repository = DjangoOrderRepository()
    for order in orders:
        statuses = [e.to_status for e in repository.events(order.id)]
        assert statuses == [OrderStatus.PENDING_PAYMENT, OrderStatus.CANCELLED]
        assert [m.event_type for m in repository.outbox(order.id)] == ["order.cancelled"]


@pytest.mark.django_db
def test_a_cancel_that_loses_a_race_is_skipped_not_fatal(
    repository: OrderRepository, place: Callable[..., Order], clock: Callable[[Any], None]
) -> None:
    order = place(lines={"MUG-1": 1})
    report = services.ExpiryReport()
    services.order_transition(
        repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=Actor.system()
    )
    # The order was listed as unpaid, then paid before the cancel: skipped.
    services._expire(repository, order.id, reason="test", holds=[], report=report)
    assert report == services.ExpiryReport(skipped=1)
    assert repository.get(order.id).status == OrderStatus.PAID


@pytest.mark.django_db
def test_the_expiry_runs_every_minute_as_a_django_q2_schedule(
    repository: OrderRepository, place: Callable[..., Order], clock: Callable[[Any], None]
) -> None:
    from django.apps import apps
    from django_q.models import Schedule

    migration = importlib.import_module("orders.migrations.0004_expiry_schedule")
    migration.create_schedule(apps, None)
    migration.create_schedule(apps, None)  # idempotent

    schedule = Schedule.objects.get(name="orders-expire-unpaid")
    assert schedule.func == "orders.tasks.expire_unpaid_orders"
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)
    assert import_string(schedule.func) is tasks.expire_unpaid_orders
    # pytest runs without migrations: the dependencies must name migrations that exist.
    for app, name in migration.Migration.dependencies:
        importlib.import_module(f"{app}.migrations.{name}")
    assert import_string("payments.selectors.order_has_open_payment") is not None

    # The task is the sweep.
    order = place(lines={"MUG-1": 4})
    clock(order.created_at + timedelta(minutes=TIMEOUT + 1))
    assert tasks.expire_unpaid_orders().startswith("cancelled 1 unpaid order(s)")
    assert stock() == 10

    migration.remove_schedule(apps, None)
    assert not Schedule.objects.filter(name="orders-expire-unpaid").exists()


# --- anonymous hold limit -------------------------------------------------------------------
def order_body(quantity: int, sku: str = "BULK-1") -> dict[str, Any]:
    return {
        "lines": [{"sku": sku, "quantity": quantity}],
        "shipping_address": dict(ADDRESS_JSON),
        "email": "guest@example.com",
    }


@pytest.fixture
def bulk(db: None) -> Any:
    return ProductFactory(sku="BULK-1", name="Bulk", price_minor=100, stock=200)


@pytest.mark.e2e
@pytest.mark.django_db
def test_an_anonymous_address_holds_at_most_the_limit_until_an_order_is_paid_or_cancelled(
    repository: OrderRepository, bulk: Any
) -> None:
    guest = APIClient(REMOTE_ADDR="203.0.113.7")
    first = guest.post("/api/orders", order_body(8), format="json")
    second = guest.post("/api/orders", order_body(8), format="json")
    assert (first.status_code, second.status_code) == (201, 201), second.content

    # 16 held: 5 more would make 21.
    refused = guest.post("/api/orders", order_body(5), format="json")
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert body["code"] == "hold_limit_exceeded"
    assert "already hold 16 unpaid item(s); at most 20" in body["message"]
    assert stock("BULK-1") == 200 - 16  # the refused order reserved nothing

    # Up to the limit exactly is fine.
    assert guest.post("/api/orders", order_body(4), format="json").status_code == 201
    assert guest.post("/api/orders", order_body(1), format="json").status_code == 409

    # Another address, and a customer with an account, are not affected.
    assert (
        APIClient(REMOTE_ADDR="198.51.100.2").post("/api/orders", order_body(5), format="json").status_code
        == 201
    )
    customer = UserFactory(username="buyer")
    signed_in = APIClient(REMOTE_ADDR="203.0.113.7")
    signed_in.force_authenticate(customer)
    assert signed_in.post("/api/orders", order_body(20), format="json").status_code == 201

    # Cancelling an order frees its units...
    services.order_cancel(repository=repository, order_id=uuid.UUID(first.json()["id"]), actor=Actor.system())
    assert guest.post("/api/orders", order_body(5), format="json").status_code == 201
    assert guest.post("/api/orders", order_body(4), format="json").status_code == 409
    # ...and so does paying one.
    services.order_transition(
        repository=repository,
        order_id=uuid.UUID(second.json()["id"]),
        to_status=OrderStatus.PAID,
        actor=Actor.system(),
    )
    # 4 + 5 held now: 11 more is 20 exactly.
    assert guest.post("/api/orders", order_body(11), format="json").status_code == 201
    assert guest.post("/api/orders", order_body(1), format="json").status_code == 409


@pytest.mark.django_db
def test_an_expired_order_frees_its_units(
    repository: OrderRepository, bulk: Any, clock: Callable[[Any], None]
) -> None:
    guest = APIClient(REMOTE_ADDR="203.0.113.8")
    placed = guest.post("/api/orders", order_body(20), format="json")
    assert placed.status_code == 201
    assert guest.post("/api/orders", order_body(1), format="json").status_code == 409
    clock(repository.get(uuid.UUID(placed.json()["id"])).created_at + timedelta(minutes=TIMEOUT + 1))
    assert expire(repository).cancelled == 1
    assert guest.post("/api/orders", order_body(20), format="json").status_code == 201


@pytest.mark.e2e
@pytest.mark.django_db
def test_the_checkout_page_shows_the_hold_limit_as_a_form_error(
    repository: OrderRepository, bulk: Any
) -> None:
    client = Client(REMOTE_ADDR="203.0.113.9")

    def checkout(quantity: int) -> Any:
        session = client.session
        session["cart"] = {"BULK-1": quantity}
        session.save()
        page = client.get(reverse("orders:checkout"))
        key = re.search(r'name="idempotency_key" value="([0-9a-f-]{32,36})"', page.content.decode())
        assert key
        data = {**ADDRESS_JSON, "email": "guest@example.com", "notes": "", "idempotency_key": key.group(1)}
        return client.post(reverse("orders:checkout"), data)

    assert checkout(15).status_code == 302
    refused = checkout(6)
    assert refused.status_code == 200
    assert "at most 20 may be held at once" in " ".join(refused.context["form"].non_field_errors())
    assert "at most 20 may be held at once" in refused.content.decode()
    assert stock("BULK-1") == 200 - 15
    assert checkout(5).status_code == 302


@pytest.mark.django_db(transaction=True)
def test_requests_at_once_from_one_address_cannot_squeeze_past_the_limit() -> None:
    Product.objects.create(sku="BULK-1", name="Bulk", price_minor=100, stock=200)

    def place(i: int) -> Any:
        return services.order_place(
            repository=DjangoOrderRepository(),
            actor=Actor(kind="guest"),
            customer_id=None,
            email=f"g{i}@example.com",
            lines=[LineRequest("BULK-1", 8)],
            shipping_address=ADDRESS,
            client_address="203.0.113.10",
        )

    results = race(4, place)
    placed = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, HoldLimitExceeded)]
    assert (len(placed), len(refused)) == (2, 2), results
    assert stock("BULK-1") == 200 - 16
