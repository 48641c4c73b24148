"""Retention: what the prune deletes and what it keeps, and its schedule.

Delivered ledger rows go once they are older than DELIVERY_RETENTION_DAYS, but never while an
outbox entry of their order is still pending (the relay would create them again and send them
twice); figures only past the longest window monitoring shows. (Stored Stripe webhook events:
tests/payments/test_webhook_retention.py.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django.utils.module_loading import import_string

from integrations.models import Delivery, DeliveryState
from integrations.services import delivery_key, outbox_relay
from monitoring import services, tasks
from monitoring.models import ErrorRecord, MetricBucket, ProbeResult
from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from orders.services import order_transition

pytestmark = pytest.mark.django_db


def no_hook(order_ids: list[Any]) -> None:
    """The outbox commit hook, off: each test relays when it means to."""


@pytest.fixture(autouse=True)
def _retention(settings: Any) -> None:
    settings.OUTBOX_COMMIT_HOOK = "tests.monitoring.test_retention.no_hook"
    settings.DELIVERY_RETENTION_DAYS = 30
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 35
    settings.MONITORING_RETENTION_DAYS = 8
    settings.RETENTION_PRUNE_BATCH = 2  # several batches in every test


@pytest.fixture
def paid(repository: OrderRepository, place: Callable[..., Order]) -> Callable[[], Order]:
    def make() -> Order:
        order = place()
        return order_transition(
            repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=Actor.system("test")
        )

    return make


def _ago(days: float) -> Any:
    return timezone.now() - timedelta(days=days)


def test_delivered_rows_older_than_the_retention_go_and_every_other_row_stays(
    repository: OrderRepository, paid: Callable[[], Order]
) -> None:
    orders = [paid() for _ in range(4)]
    assert outbox_relay(repository=repository, dispatch=False) > 0
    old, recent, failing, skipped = orders
    Delivery.objects.filter(order_id__in=[o.id for o in orders]).update(
        state=DeliveryState.SUCCEEDED, succeeded_at=_ago(31), updated_at=_ago(31)
    )
    Delivery.objects.filter(order_id=recent.id).update(succeeded_at=_ago(29))
    Delivery.objects.filter(order_id=failing.id, integration="email").update(
        state=DeliveryState.DEAD, succeeded_at=None, dead_at=_ago(40)
    )
    Delivery.objects.filter(order_id=failing.id, integration="sns").update(
        state=DeliveryState.RETRYING, succeeded_at=None
    )
    Delivery.objects.filter(order_id=skipped.id).update(state=DeliveryState.SKIPPED, succeeded_at=None)
    Delivery.objects.filter(order_id=skipped.id, integration="email").update(updated_at=_ago(2))
    before = Delivery.objects.count()

    pruned = services.monitoring_prune()

    left = {(d.order_id, d.integration): d.state for d in Delivery.objects.all()}
    assert not any(order_id == old.id for order_id, _ in left)  # succeeded 31 days ago: gone
    assert {i for o, i in left if o == recent.id} == set(repository_integrations())  # 29 days: kept
    assert left[(failing.id, "email")] == DeliveryState.DEAD  # never pruned, however old
    assert left[(failing.id, "sns")] == DeliveryState.RETRYING
    assert {i for o, i in left if o == failing.id} == {"email", "sns"}  # succeeded siblings went
    assert {i for o, i in left if o == skipped.id} == {"email"}  # skipped 2 days ago: kept
    assert pruned["deliveries"] == before - len(left)
    assert services.monitoring_prune()["deliveries"] == 0


def repository_integrations() -> list[str]:
    from integrations.services import integration_names

    return integration_names()


def test_a_delivery_whose_outbox_entry_is_still_pending_is_kept_and_never_created_again(
    repository: OrderRepository, paid: Callable[[], Order]
) -> None:
    """The relay created the deliveries and died before marking the entry relayed: the entry is
    pending, and only the existing rows' keys stop the next relay from sending them again."""
    order = paid()
    (message,) = repository.outbox_pending(limit=10, order_ids=[order.id])
    for name in repository_integrations():
        Delivery.objects.create(
            idempotency_key=delivery_key(
                integration=name,
                order_id=order.id,
                event_type=message.event_type,
                order_version=message.order_version,
            ),
            integration=name,
            order_id=order.id,
            event_type=message.event_type,
            order_version=message.order_version,
            outbox_id=message.id,
            payload=message.payload,
            state=DeliveryState.SUCCEEDED,
            next_attempt_at=_ago(40),
            succeeded_at=_ago(40),
        )
    count = Delivery.objects.filter(order_id=order.id).count()

    assert services.deliveries_prune() == 0
    assert Delivery.objects.filter(order_id=order.id).count() == count

    assert outbox_relay(repository=repository, dispatch=False) == 0  # nothing sent twice
    assert not repository.outbox_pending(limit=10, order_ids=[order.id])
    assert services.deliveries_prune() == count  # relayed now: they may go
    assert outbox_relay(repository=repository, dispatch=False) == 0
    assert not Delivery.objects.filter(order_id=order.id).exists()


def test_figures_errors_and_probe_results_go_past_their_retention_never_inside_a_day(
    settings: Any,
) -> None:
    def bucket(minute: Any, label: str) -> None:
        MetricBucket.objects.create(
            minute=minute.replace(second=0, microsecond=0), name="http.request", label=label
        )

    for n in range(3):
        bucket(_ago(9) - timedelta(minutes=n), f"old{n}")
    bucket(_ago(7), "kept")
    ErrorRecord.objects.filter(pk=ErrorRecord.objects.create(source="task", error_class="Boom").pk).update(
        at=_ago(9)
    )
    ErrorRecord.objects.create(source="task", error_class="Recent")
    ProbeResult.objects.filter(
        pk=ProbeResult.objects.create(integration="email", ok=True, latency_ms=1.0).pk
    ).update(at=_ago(9))

    pruned = services.monitoring_prune()

    assert (pruned["metric_rows"], pruned["errors"], pruned["probe_results"]) == (3, 1, 1)
    assert list(MetricBucket.objects.values_list("label", flat=True)) == ["kept"]
    assert list(ErrorRecord.objects.values_list("error_class", flat=True)) == ["Recent"]

    # The 24 h window is never cut short, whatever the setting says.
    settings.MONITORING_RETENTION_DAYS = 0
    bucket(_ago(0.5), "half a day")
    services.monitoring_prune()
    assert set(MetricBucket.objects.values_list("label", flat=True)) == {"half a day"}


def test_the_retention_task_reports_what_it_pruned() -> None:
    ProbeResult.objects.filter(
        pk=ProbeResult.objects.create(integration="email", ok=True, latency_ms=1.0).pk
    ).update(at=_ago(9))

    assert tasks.retention() == (
        "pruned 0 metric row(s), 0 error(s), 1 probe result(s), 0 delivered ledger row(s), 0 webhook event(s)"
    )


def test_the_retention_schedule_migration_creates_it_once() -> None:
    from django.apps import apps
    from django_q.models import Schedule

    migration = importlib.import_module("monitoring.migrations.0003_scale_retention_schedule")
    migration.create_schedule(apps, None)
    migration.create_schedule(apps, None)  # idempotent

    (schedule,) = Schedule.objects.filter(name="monitoring-retention")
    assert schedule.func == "monitoring.tasks.retention"
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 15, -1)
    assert callable(import_string(schedule.func))
    for app, name in migration.Migration.dependencies:
        importlib.import_module(f"{app}.migrations.{name}")

    migration.remove_schedule(apps, None)
    assert not Schedule.objects.filter(name="monitoring-retention").exists()
