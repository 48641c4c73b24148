"""The whole fan-out against the stand-in servers with the real client libraries.

Dispatch runs in this process (the crash test runs a real django-q2 cluster): a paid order
reaches SendGrid, Sheets and SNS once each, however often its webhook is replayed; a failing
sink opens the circuit and everything arrives once after recovery; a permanent error is a dead
letter until fixed and replayed; Sheets appends in batches under the per-minute cap.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from integrations import services
from integrations.models import CircuitEvent, Delivery, DeliveryState
from integrations.resilience import CircuitBreaker, Pause, shared_cache
from orders import services as order_services
from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from orders.repositories.dynamodb import DynamoDbOrderRepository, create_tables
from payments import services as payment_services
from payments.gateways.stripe import StripeGateway
from tests.payments import stripe_objects
from tests.payments.fakes import FakeGateway
from tests.polling import DEADLINE_SECONDS, eventually
from tests.sqs import drain
from tests.stores import orders_in_dynamodb

# End to end: CI runs these a second time with orders in DynamoDB (`make test-dynamodb`), so
# every order is read through the configured repository, never the ORM.
pytestmark = [pytest.mark.django_db, pytest.mark.e2e, pytest.mark.usefixtures("repository")]

SHEET = "test-orders"


@pytest.fixture
def stand_ins(
    sendgrid_sandbox: Any,
    sheets_sandbox: Any,
    aws_sandbox: dict[str, Any],
    settings: Any,
    repository: OrderRepository,
) -> dict[str, Any]:
    """All three sinks, empty; Sheets flushes at once; breakers, pauses and limits cleared."""
    if isinstance(repository, DynamoDbOrderRepository):
        # moto keeps one state per process, whichever of its servers is asked: the reset of
        # `aws_sandbox` (after the module's `repository`, so after `dynamodb`) also dropped the
        # orders table. Put it back, empty.
        create_tables()
    settings.INTEGRATIONS = {
        name: config | ({"flush_seconds": 0.0} if name == "sheets" else {})
        for name, config in settings.INTEGRATIONS.items()
    }
    for name in settings.INTEGRATIONS:
        CircuitBreaker(name).reset()
        for key in (f"pause:{name}", f"ratelimit:{name}", f"dispatch-queued:{name}"):
            shared_cache().delete(key)
    return {"sendgrid": sendgrid_sandbox, "sheets": sheets_sandbox, "aws": aws_sandbox}


def dispatch_all() -> None:
    for name in services.integration_names():
        services.deliveries_dispatch(integration=name, budget_seconds=DEADLINE_SECONDS)


def emails_for(sandbox: Any, order: Order) -> list[dict[str, Any]]:
    return [m for m in sandbox.messages() if str(order.id) in json.dumps(m)]


def sheet_rows(sandbox: Any) -> list[list[str]]:
    return sandbox.values(SHEET)[1:]  # the header first


_GATEWAY = FakeGateway()  # one for the module: its intent ids never repeat


def pay(order: Order) -> Any:
    return payment_services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("t"), gateway=_GATEWAY
    )


def test_a_paid_order_reaches_every_sink_once_however_often_its_webhook_comes(
    stand_ins: dict[str, Any], place: Callable[..., Order], customer: Any, settings: Any
) -> None:
    order = place(customer=customer, lines={"MUG-1": 2})
    payment = pay(order)
    services.outbox_relay(dispatch=False)
    dispatch_all()

    rows = Delivery.objects.filter(order_id=order.id)
    assert sorted((d.integration, d.state) for d in rows) == [
        ("email", "succeeded"),
        ("sheets", "succeeded"),
        ("sns", "succeeded"),
    ]
    assert all(d.external_id for d in rows)

    # The same payment_intent.succeeded webhook, three times (and once more under another id).
    event = stripe_objects.event(
        "payment_intent.succeeded",
        stripe_objects.payment_intent(order_id=str(order.id), intent_id=payment.intent_id, amount=2900),
    )
    for event_id in ["evt_paid_once"] * 3 + ["evt_paid_again"]:
        payment_services.webhook_receive(event=StripeGateway().parse_event(event | {"id": event_id}))
    assert services.outbox_relay(dispatch=False) == 0
    dispatch_all()

    [email] = emails_for(stand_ins["sendgrid"], order)
    assert email["body"]["custom_args"]["idempotency_key"] == f"email:{order.id}:order.paid:v2"
    assert [row[0] for row in sheet_rows(stand_ins["sheets"])] == [str(order.id)]
    [notified] = drain(stand_ins["aws"]["queue_url"])
    assert (notified["event_type"], notified["order_id"], notified["schema_version"]) == (
        "order.paid",
        str(order.id),
        1,
    )
    assert Delivery.objects.filter(order_id=order.id).count() == 3


def test_a_refund_updates_the_row_in_place_and_tells_the_others(
    stand_ins: dict[str, Any],
    place: Callable[..., Order],
    customer: Any,
    repository: OrderRepository,
    settings: Any,
) -> None:
    order = place(customer=customer)
    pay(order)
    payment_services.payment_refund(order_id=order.id, actor=Actor.system("t"), gateway=_GATEWAY)
    services.outbox_relay(dispatch=False)
    dispatch_all()
    [row] = sheet_rows(stand_ins["sheets"])
    assert row[0] == str(order.id) and "refunded" in row
    assert sorted(m["event_type"] for m in drain(stand_ins["aws"]["queue_url"])) == [
        "order.paid",
        "order.refunded",
    ]
    subjects = [m["body"]["subject"] for m in emails_for(stand_ins["sendgrid"], order)]
    assert len(subjects) == 2


def test_a_failing_sink_opens_the_circuit_and_everything_arrives_once_after(
    stand_ins: dict[str, Any], place: Callable[..., Order], settings: Any
) -> None:
    settings.INTEGRATIONS = settings.INTEGRATIONS | {
        "email": settings.INTEGRATIONS["email"] | {"retry": {"base": 0.0, "cap": 0.0, "max_attempts": 100}}
    }
    settings.BREAKER_FAILURE_THRESHOLD = 5
    settings.BREAKER_COOLDOWN_SECONDS = 3600  # open stays open until the sink is back (below)
    sendgrid = stand_ins["sendgrid"]
    sendgrid.set_faults(fail_next=20, status=503)
    orders = [place() for _ in range(3)]
    for order in orders:
        pay(order)
    services.outbox_relay(dispatch=False)

    def email_attempts() -> int:
        return sum(Delivery.objects.filter(integration="email").values_list("attempts", flat=True))

    report = services.deliveries_dispatch(integration="email", budget_seconds=DEADLINE_SECONDS)
    assert report.waited_for == "circuit open"
    opened_at = email_attempts()
    assert opened_at == 5 * len(orders)  # five failing calls, each carrying the three waiting emails
    for _ in range(3):
        services.deliveries_dispatch(integration="email", budget_seconds=1)
    assert email_attempts() == opened_at

    settings.BREAKER_COOLDOWN_SECONDS = 0.05  # the sink recovers after its 20 failures
    eventually(
        lambda: (
            services.deliveries_dispatch(integration="email", budget_seconds=2).succeeded
            or not Delivery.objects.filter(integration="email")
            .exclude(state=DeliveryState.SUCCEEDED)
            .exists()
        ),
        what="the email circuit to close and the backlog to drain",
    )
    services.deliveries_dispatch(integration="email", budget_seconds=DEADLINE_SECONDS)
    assert set(Delivery.objects.filter(integration="email").values_list("state", flat=True)) == {"succeeded"}
    for order in orders:
        assert len(emails_for(sendgrid, order)) == 1
    assert sendgrid.stats()["faulted"] == 20
    states = list(
        CircuitEvent.objects.filter(integration="email").order_by("at").values_list("to_state", flat=True)
    )
    assert states[0] == "open" and states[-1] == "closed" and "half_open" in states


def test_a_permanent_error_is_dead_at_once_and_a_replay_after_the_fix_delivers(
    stand_ins: dict[str, Any], place: Callable[..., Order], settings: Any
) -> None:
    settings.SENDGRID_FROM_EMAIL = "not an email address"
    order = place()
    pay(order)
    services.outbox_relay(dispatch=False)
    services.deliveries_dispatch(integration="email")
    [dead] = Delivery.objects.filter(integration="email")
    assert (dead.state, dead.attempts, dead.last_provider_status) == (DeliveryState.DEAD, 1, 400)
    assert "from" in dead.last_error_message.lower()
    assert emails_for(stand_ins["sendgrid"], order) == []

    settings.SENDGRID_FROM_EMAIL = "shop@example.com"
    services.delivery_retry(delivery_id=dead.id, actor=Actor.system("staff"))
    services.deliveries_dispatch(integration="email")
    dead.refresh_from_db()
    assert dead.state == DeliveryState.SUCCEEDED
    assert len(emails_for(stand_ins["sendgrid"], order)) == 1


def appends(sandbox: Any) -> list[int]:
    """The rows each append wrote, in order."""
    return [call["rows"] for call in sandbox.calls if call["kind"] == "append"]


def pay_many(place: Callable[..., Order], repository: OrderRepository, count: int) -> list[Order]:
    return [
        order_services.order_transition(
            repository=repository, order_id=place().id, to_status=OrderStatus.PAID, actor=Actor.system("t")
        )
        for _ in range(count)
    ]


def test_a_burst_paid_while_sheets_is_paused_is_written_in_full_batches(
    stand_ins: dict[str, Any],
    place: Callable[..., Order],
    repository: OrderRepository,
    settings: Any,
    mug: Any,
) -> None:
    """N orders waiting for the sink go out in ceil(N / batch) appends, each order once."""
    from orders.models import Product

    Product.objects.filter(pk=mug.pk).update(stock=1_000)
    batch, total = 10, 25
    # The rate limit is not what this test is about: high enough never to make dispatch wait.
    settings.INTEGRATIONS = settings.INTEGRATIONS | {
        "sheets": settings.INTEGRATIONS["sheets"] | {"batch": batch, "max_calls_per_minute": 60_000}
    }
    Pause("sheets").extend(3600)
    orders = pay_many(place, repository, total)
    services.outbox_relay(dispatch=False)
    assert services.deliveries_dispatch(integration="sheets").waited_for == "paused"
    assert appends(stand_ins["sheets"]) == []

    shared_cache().delete("pause:sheets")  # the sink is back
    while services.deliveries_dispatch(integration="sheets").succeeded:
        pass
    assert appends(stand_ins["sheets"]) == [10, 10, 5]  # ceil(25 / 10) appends, none over the batch
    assert sorted(row[0] for row in sheet_rows(stand_ins["sheets"])) == sorted(str(o.id) for o in orders)
    assert set(Delivery.objects.filter(integration="sheets").values_list("state", flat=True)) == {"succeeded"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_orders_paid_while_sheets_flushes_each_reach_it_once_in_bounded_batches_under_the_cap(
    stand_ins: dict[str, Any],
    place: Callable[..., Order],
    repository: OrderRepository,
    settings: Any,
    mug: Any,
) -> None:
    """Orders paid as fast as this machine goes while a dispatcher flushes beside them.

    Whatever the speed: every order is one row, no append carries more than a batch, and no 60 s
    holds more writes than the cap, which the sandbox enforces like Google's quota. How few
    appends a given payment rate needs is a figure, measured by `bench/fanout.py --rate`.
    """
    from orders.models import Product

    Product.objects.filter(pk=mug.pk).update(stock=10_000)
    # moto's DynamoDB copies its whole table on each transaction (a few dozen order writes a
    # second), so orders there are fewer, in smaller batches: the same properties, at ~5 appends.
    batch, cap, total = (15, 50, 60) if orders_in_dynamodb() else (100, 50, 500)
    settings.INTEGRATIONS = {
        "sheets": settings.INTEGRATIONS["sheets"]
        | {"flush_seconds": 0.5, "batch": batch, "max_calls_per_minute": cap}
    }
    stand_ins["sheets"].set_faults(write_quota_per_minute=cap)
    done = threading.Event()
    failures: list[BaseException] = []

    def flusher() -> None:
        from django.db import connection

        try:
            while not done.is_set() or Delivery.objects.exclude(state=DeliveryState.SUCCEEDED).exists():
                services.deliveries_dispatch(integration="sheets", budget_seconds=5)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        orders = pay_many(place, repository, total)
    finally:
        done.set()
        thread.join(DEADLINE_SECONDS)
    assert not thread.is_alive() and not failures, failures
    stats = stand_ins["sheets"].stats()
    rows = sheet_rows(stand_ins["sheets"])
    assert sorted(row[0] for row in rows) == sorted(str(o.id) for o in orders)
    written = appends(stand_ins["sheets"])
    assert sum(written) == total and max(written) <= batch, written
    assert stats["writes_per_minute_max"] <= cap and stats["faults_served"] == 0, stats
    assert Pause("sheets").remaining() == 0
