"""Stored Stripe webhook events are pruned past WEBHOOK_EVENT_RETENTION_DAYS, and never inside
Stripe's own windows (3 days of retries, 30 days of events its list returns to the events sweep):
a retry or a sweep that found the event gone would apply it again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from monitoring import services
from payments.models import WebhookEvent, WebhookResult
from payments.services import webhook_events_prune

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _retention(settings: Any) -> None:
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 35
    settings.RETENTION_PRUNE_BATCH = 2  # several batches


def _ago(days: float) -> Any:
    return timezone.now() - timedelta(days=days)


def _event(event_id: str, *, days: float, result: str = WebhookResult.PROCESSED) -> WebhookEvent:
    event = WebhookEvent.objects.create(
        event_id=event_id,
        type="payment_intent.succeeded",
        created=int(_ago(days).timestamp()),
        payload={"id": event_id},
        processed_at=timezone.now(),
        result=result,
    )
    WebhookEvent.objects.filter(pk=event.pk).update(received_at=_ago(days))
    return event


def test_webhook_events_go_past_the_retention_and_stripes_windows_only(settings: Any) -> None:
    _event("evt_old", days=36)
    _event("evt_old_2", days=40)
    _event("evt_old_3", days=50)
    _event("evt_kept", days=34)
    _event("evt_failed", days=60, result=WebhookResult.FAILED)  # to be replayed: kept
    unprocessed = _event("evt_unprocessed", days=60)
    WebhookEvent.objects.filter(pk=unprocessed.pk).update(processed_at=None, result="")

    assert services.monitoring_prune()["webhook_events"] == 3  # through the scheduled prune
    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {
        "evt_kept",
        "evt_failed",
        "evt_unprocessed",
    }

    # Below Stripe's windows (3 days of retries, 30 of events to list) the setting is not obeyed.
    settings.WEBHOOK_EVENT_RETENTION_DAYS = 1
    _event("evt_ten_days", days=10)
    assert webhook_events_prune() == 1  # evt_kept, 34 days old, is past 31 days
    assert set(WebhookEvent.objects.values_list("event_id", flat=True)) == {
        "evt_ten_days",
        "evt_failed",
        "evt_unprocessed",
    }
