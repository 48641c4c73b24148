"""Writing what operators see: recorded errors, alerts (deduplicated, published to SNS), pruning.

Every function here is safe to call from a failing path: it logs its own failure and returns,
so recording an error never raises a second one.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
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
def monitoring_prune() -> dict[str, int]:
    """Delete figures, errors and probe results older than MONITORING_RETENTION_DAYS."""
    before = timezone.now() - timedelta(days=settings.MONITORING_RETENTION_DAYS)
    return {
        "metric_rows": MetricBucket.objects.filter(minute__lt=before).delete()[0],
        "errors": ErrorRecord.objects.filter(at__lt=before).delete()[0],
        "probe_results": ProbeResult.objects.filter(at__lt=before).delete()[0],
    }
