"""Writing what operators see: recorded errors, alerts (deduplicated, published to SNS), pruning.

Every function here is safe to call from a failing path: it logs its own failure and returns,
so recording an error never raises a second one.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from core.locks import shared_lock
from live import services as live
from monitoring import context
from monitoring.models import Alert, ErrorRecord, MetricBucket, ProbeResult
from monitoring.scrub import scrub

logger = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000


def error_record(
    *,
    source: str,
    error_class: str,
    message: str,
    integration: str = "",
    order_id: uuid.UUID | str | None = None,
    request_id: str | None = None,
) -> ErrorRecord | None:
    """Keep one error for the errors table (secrets and card numbers masked); the order and
    request default to those of the current request or task. None when it could not be kept."""
    try:
        record = ErrorRecord.objects.create(
            source=source,
            error_class=scrub(str(error_class))[:200],
            message=scrub(str(message or ""))[:MESSAGE_LIMIT],
            integration=integration or "",
            order_id=_uuid(order_id or context.get("order_id")),
            request_id=(request_id or context.get("request_id"))[:128],
        )
        live.publish(live.OPS)  # /ops/ shows its errors table and "last error" at once
        return record
    except Exception:
        logger.warning("Could not record an error from %s", source, exc_info=True)
        return None


def _uuid(value: Any) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None


# --- alerts ---------------------------------------------------------------------------------
def alert_raise(*, subject: str, kind: str, message: str) -> Alert | None:
    """Fire an alert about `subject` ("email", "http", "stripe" ...).

    If an alert about the same subject fired within ALERT_DEDUP_SECONDS, that one is extended
    (occurrences, kinds, last time) and nothing new is published: an outage that lasts an hour
    and dead-letters thousands of deliveries is one alert. Otherwise a new alert is stored and
    published to the alerts SNS topic once the transaction commits. Returns the alert, or None
    when it could not even be stored.
    """
    message = scrub(message)[:MESSAGE_LIMIT]
    now = timezone.now()
    try:
        with shared_lock(f"alert:{subject}"), transaction.atomic():
            recent = (
                Alert.objects.select_for_update()
                .filter(subject=subject, last_at__gte=now - timedelta(seconds=settings.ALERT_DEDUP_SECONDS))
                .order_by("-last_at")
                .first()
            )
            if recent is not None:
                recent.occurrences += 1
                recent.last_at = now
                recent.kinds = {**recent.kinds, kind: recent.kinds.get(kind, 0) + 1}
                recent.save(update_fields=["occurrences", "last_at", "kinds"])
                live.publish(live.OPS)
                return recent
            alert = Alert.objects.create(
                subject=subject, kind=kind, kinds={kind: 1}, message=message, last_at=now
            )
    except Exception:
        logger.exception("Could not store an alert about %s (%s)", subject, kind)
        return None
    logger.error("ALERT %s: %s", subject, message, extra={"event": f"alert.{kind}"})
    live.publish(live.OPS)
    transaction.on_commit(lambda: alert_publish(alert.id))
    return alert


def alert_publish(alert_id: int) -> bool:
    """Publish one stored alert to the alerts topic (once: a published alert is left alone)."""
    from core.aws import aws_client
    from integrations.aws import alerts_topic_arn

    alert = Alert.objects.filter(id=alert_id, published_at__isnull=True).first()
    if alert is None:
        return False
    body = {
        "alert_id": alert.id,
        "subject": alert.subject,
        "kind": alert.kind,
        "message": alert.message,
        "first_at": alert.first_at.isoformat(),
    }
    try:
        answer = aws_client("sns").publish(
            TopicArn=alerts_topic_arn(),
            Subject=f"[CIS] {alert.subject}: {alert.kind}"[:99],
            Message=json.dumps(body),
            MessageAttributes={
                "subject": {"DataType": "String", "StringValue": alert.subject},
                "kind": {"DataType": "String", "StringValue": alert.kind},
            },
        )
    except Exception as exc:
        Alert.objects.filter(id=alert.id).update(publish_error=scrub(f"{type(exc).__name__}: {exc}")[:500])
        logger.warning("Could not publish alert %s; will try again", alert.id, exc_info=True)
        return False
    Alert.objects.filter(id=alert.id, published_at__isnull=True).update(
        published_at=timezone.now(), sns_message_id=answer.get("MessageId", ""), publish_error=""
    )
    return True


def alerts_publish_pending() -> int:
    """Publish alerts whose publication failed (the monitoring schedule calls this)."""
    return sum(
        alert_publish(alert_id)
        for alert_id in Alert.objects.filter(published_at__isnull=True).values_list("id", flat=True)[:50]
    )


def http_5xx_seen() -> None:
    """Count a 5xx response; at ALERT_5XX_PER_MINUTE in one minute, alert (once per window)."""
    from integrations.resilience import shared_cache

    key = f"http5xx:{timezone.now():%Y%m%d%H%M}"
    try:
        cache = shared_cache()
        cache.add(key, 0, timeout=120)
        seen = cache.incr(key)
    except Exception:
        logger.warning("Could not count a 5xx response", exc_info=True)
        return
    if seen == settings.ALERT_5XX_PER_MINUTE:
        alert_raise(
            subject="http",
            kind="5xx_spike",
            message=f"{seen} responses with status 5xx within a minute",
        )


# --- housekeeping ---------------------------------------------------------------------------
# Monitoring's windows reach back 24 h at most: whatever the settings say, a day is kept.
MIN_RETENTION = timedelta(days=1)
# One prune run stops starting new batches after this long (well within django-q2's task
# timeout); what is left goes in the next run.
PRUNE_BUDGET_SECONDS = 30.0


def _delete_in_batches(rows: QuerySet[Any], *, order: str, batch: int, deadline: float) -> int:
    """Delete `rows` BATCH at a time, each DELETE its own short transaction (autocommit), oldest
    first; the condition is checked again by each DELETE, so a row that changed in between (a
    delivery retried) is left alone."""
    deleted = 0
    while True:
        ids = list(rows.order_by(order).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += rows.filter(pk__in=ids).delete()[0]
        if len(ids) < batch or time.monotonic() > deadline:
            return deleted


def deliveries_prune(*, batch: int | None = None, deadline: float | None = None) -> int:
    """Delete delivered ledger rows (succeeded or skipped) that finished more than
    DELIVERY_RETENTION_DAYS ago (at least a day), BATCH per DELETE, oldest first.

    Never a second send: the relay (and the sweeper, through it) creates deliveries only from
    outbox entries not yet marked relayed, and only the unique idempotency key of the existing
    row stops a second copy. So an order with an outbox entry still pending keeps every delivery
    it has; the pending entries are asked for through the order repository's port
    (`outbox_pending`), whatever store holds the outbox. Returns how many rows were deleted."""
    from integrations.models import Delivery, DeliveryState
    from integrations.services import integration_names
    from orders.repositories import get_order_repository

    batch = batch or settings.RETENTION_PRUNE_BATCH
    before = timezone.now() - max(timedelta(days=settings.DELIVERY_RETENTION_DAYS), MIN_RETENTION)
    deadline = deadline or time.monotonic() + PRUNE_BUDGET_SECONDS
    repository = get_order_repository()
    deleted = 0
    # Per integration: the indexes that find these rows lead with it (delivery_succeeded;
    # delivery_counted, which holds the few skipped rows).
    steps = [
        (name, state, finished_at)
        for name in integration_names()
        for state, finished_at in (
            (DeliveryState.SUCCEEDED, "succeeded_at"),
            (DeliveryState.SKIPPED, "updated_at"),
        )
    ]
    for name, state, finished_at in steps:
        finished = Delivery.objects.filter(integration=name, state=state, **{f"{finished_at}__lt": before})
        after: tuple[Any, Any] | None = None  # the last row looked at: held rows are stepped over
        while True:
            page = finished.order_by(finished_at, "pk")
            if after is not None:
                page = page.filter(
                    Q(**{f"{finished_at}__gt": after[0]}) | Q(**{finished_at: after[0], "pk__gt": after[1]})
                )
            rows = list(page.values_list("pk", "order_id", finished_at)[:batch])
            if not rows:
                break
            after = (rows[-1][2], rows[-1][0])
            order_ids = sorted({order_id for _, order_id, _ in rows})
            limit = 10 * len(order_ids) + 100
            pending = repository.outbox_pending(order_ids=order_ids, limit=limit)
            # With as many pending entries as asked for, some may be unseen: hold every order.
            held = set(order_ids) if len(pending) >= limit else {m.order_id for m in pending}
            ids = [pk for pk, order_id, _ in rows if order_id not in held]
            if ids:
                deleted += finished.filter(pk__in=ids).delete()[0]
            if time.monotonic() > deadline:
                return deleted
            if len(rows) < batch:
                break
    return deleted


def monitoring_prune() -> dict[str, int]:
    """Delete what is kept for a while only, in batches (no long lock), within
    PRUNE_BUDGET_SECONDS (the rest in the next run): figures, errors and probe results older than
    MONITORING_RETENTION_DAYS, delivered ledger rows older than DELIVERY_RETENTION_DAYS, stored
    webhook events older than WEBHOOK_EVENT_RETENTION_DAYS. Returns how many of each went."""
    from payments.services import webhook_events_prune

    batch = settings.RETENTION_PRUNE_BATCH
    deadline = time.monotonic() + PRUNE_BUDGET_SECONDS
    before = timezone.now() - max(timedelta(days=settings.MONITORING_RETENTION_DAYS), MIN_RETENTION)
    pruned = {
        "metric_rows": _delete_in_batches(
            MetricBucket.objects.filter(minute__lt=before), order="minute", batch=batch, deadline=deadline
        ),
        "errors": _delete_in_batches(
            ErrorRecord.objects.filter(at__lt=before), order="at", batch=batch, deadline=deadline
        ),
        "probe_results": _delete_in_batches(
            ProbeResult.objects.filter(at__lt=before), order="at", batch=batch, deadline=deadline
        ),
    }
    pruned["deliveries"] = deliveries_prune(batch=batch, deadline=deadline)
    pruned["webhook_events"] = webhook_events_prune(batch=batch, deadline=deadline)
    return pruned
