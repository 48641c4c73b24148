"""What operators read: health, figures over a window, integrations, errors, an order's story.

Everything comes from stores every process shares: the delivery ledger, the payments and
webhook tables, the per-minute `MetricBucket` rows, the circuit breakers' shared state. No
figure lives in one process's memory.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection
from django.db.models import Count, Max, Min, Q, QuerySet, Sum
from django.utils import timezone
from django_q.brokers import get_broker

from integrations.models import (
    CLAIMABLE_STATES,
    COUNTED_STATES,
    CircuitEvent,
    CircuitState,
    Delivery,
    DeliveryState,
)
from integrations.resilience import CircuitBreaker
from integrations.services import integration_names
from monitoring import recorder
from monitoring.models import BUCKET_BOUNDS_MS, BUCKET_FIELDS, Alert, ErrorRecord, MetricBucket, ProbeResult
from orders.domain import (
    REFERENCE_LENGTH,
    Order,
    OrderNotFound,
    OrderQuery,
    OrderValidationError,
)
from orders.repositories import get_order_repository
from payments.models import Payment, PaymentStatus, Refund, WebhookEvent, WebhookResult


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    ok: bool
    latency_ms: float
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    # Readiness needs it: when it fails the instance answers 503. An integration is not required
    # (its deliveries wait in the ledger), so an outage there makes the status "degraded".
    required: bool = True


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    components: list[ComponentHealth]

    @property
    def status(self) -> str:
        if not self.ok:
            return "unavailable"
        return "ok" if all(c.ok for c in self.components) else "degraded"


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def _broker() -> dict[str, Any]:
    broker = get_broker()
    if not broker.ping():
        raise ConnectionError("the broker did not answer a ping")
    return {"kind": broker.info(), "queue_depth": broker.queue_size()}


def _cache() -> dict[str, Any]:
    cache = caches["default"]
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "ok", timeout=10)
    if cache.get(key) != "ok":
        raise ConnectionError("a value written to the cache could not be read back")
    cache.delete(key)
    return {"backend": type(cache).__name__}


def _orders_store() -> dict[str, Any]:
    """The order repository answers a read (the database, or DynamoDB with that backend)."""
    repository = get_order_repository()
    repository.list(OrderQuery(limit=1))
    return {"adapter": type(repository).__name__}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": _database,
    "orders_store": _orders_store,
    "broker": _broker,
    "cache": _cache,
}


def _run(name: str, check: Callable[[], dict[str, Any]]) -> ComponentHealth:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # noqa: BLE001 - any failure makes the component unhealthy
        return ComponentHealth(
            name=name,
            ok=False,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
    return ComponentHealth(
        name=name, ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2), detail=detail
    )


def health_check() -> Health:
    components = [_run(name, check) for name, check in CHECKS.items()]
    components += [_integration_health(name) for name in integration_names()]
    return Health(ok=all(c.ok for c in components if c.required), components=components)


def _integration_health(name: str) -> ComponentHealth:
    started = time.perf_counter()
    try:
        circuit = circuit_summary(name)
        last_success = Delivery.objects.filter(integration=name).aggregate(at=Max("succeeded_at"))["at"]
        last_failure = (
            ErrorRecord.objects.filter(source="delivery", integration=name)
            .order_by("-id")
            .values("at", "error_class")
            .first()
        )
    except Exception as exc:  # noqa: BLE001
        return ComponentHealth(
            name=f"integration:{name}",
            ok=False,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            error=f"{type(exc).__name__}: {exc}"[:300],
            required=False,
        )
    detail = {
        **circuit,
        "last_success": last_success.isoformat() if last_success else None,
        "last_failure": last_failure["at"].isoformat() if last_failure else None,
        "last_failure_class": last_failure["error_class"] if last_failure else None,
    }
    return ComponentHealth(
        name=f"integration:{name}",
        ok=circuit["circuit"] != CircuitState.OPEN,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
        detail=detail,
        error="" if circuit["circuit"] != CircuitState.OPEN else "circuit open",
        required=False,
    )


def circuit_summary(name: str) -> dict[str, Any]:
    """The circuit's state and the failure ratio of its calls over the breaker's window."""
    state = CircuitBreaker(name).snapshot()
    now = time.time()
    recent = [f for t, f in (state.recent or []) if now - t <= settings.BREAKER_WINDOW_SECONDS]
    return {
        "circuit": str(state.state),
        "consecutive_failures": state.consecutive_failures,
        "calls_in_window": len(recent),
        "failure_ratio": round(sum(recent) / len(recent), 3) if recent else 0.0,
        "window_s": settings.BREAKER_WINDOW_SECONDS,
        "retry_in_s": round(CircuitBreaker(name).retry_in(), 1),
    }


# --- figures over a window ------------------------------------------------------------------
WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}


def percentiles(rows: dict[str, Any], ps: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """Percentiles (ms) from summed histogram columns, interpolated within a bucket."""
    counts = [rows.get(f) or 0 for f in BUCKET_FIELDS]
    total = sum(counts)
    result: dict[str, float | None] = {}
    for p in ps:
        key = f"p{round(p * 100)}_ms"
        if not total:
            result[key] = None
            continue
        rank = p * total
        seen = 0
        for i, n in enumerate(counts):
            if n and seen + n >= rank:
                low = BUCKET_BOUNDS_MS[i - 1] if i else 0.0
                high = (
                    BUCKET_BOUNDS_MS[i] if i < len(BUCKET_BOUNDS_MS) else max(rows.get("maximum") or low, low)
                )
                if rows.get("maximum"):
                    high = min(high, rows["maximum"])
                result[key] = round(low + (high - low) * (rank - seen) / n, 1)
                break
            seen += n
    return result


def _sums(**filters: Any) -> dict[str, Any]:
    return MetricBucket.objects.filter(**filters).aggregate(
        count=Sum("count"), total=Sum("total"), maximum=Max("maximum"), **{f: Sum(f) for f in BUCKET_FIELDS}
    )


def _counts(name: str, since: datetime) -> dict[str, int]:
    return dict(
        MetricBucket.objects.filter(name=name, minute__gte=_floor(since))
        .values_list("label")
        .annotate(n=Sum("count"))
        .values_list("label", "n")
    )


def _floor(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def metrics_summary(window: str = "1h") -> dict[str, Any]:
    """Requests, orders, payments, webhooks, deliveries and the queue over the window."""
    recorder.flush()  # this process's own figures; other processes' arrive within a flush interval
    span = WINDOWS[window]
    now = timezone.now()
    since = now - span
    minutes = span.total_seconds() / 60
    return {
        "window": window,
        "since": since.isoformat(),
        "until": now.isoformat(),
        "requests": _requests(since),
        "orders": _orders(since, minutes),
        "payments": _payments(since),
        "webhooks": _webhooks(since),
        "integrations": {name: _integration_figures(name, since) for name in integration_names()},
        "queue": queue_summary(),
    }


def _requests(since: datetime) -> dict[str, Any]:
    rows = (
        MetricBucket.objects.filter(name="http.request", minute__gte=_floor(since))
        .values("label")
        .annotate(count=Sum("count"), maximum=Max("maximum"), **{f: Sum(f) for f in BUCKET_FIELDS})
    )
    endpoints: dict[str, dict[str, Any]] = {}
    for row in rows:
        name, _, status_class = row["label"].rpartition("|")
        entry = endpoints.setdefault(name, {"endpoint": name, "count": 0, "by_status": {}, "_rows": []})
        entry["count"] += row["count"]
        entry["by_status"][status_class] = entry["by_status"].get(status_class, 0) + row["count"]
        entry["_rows"].append(row)
    result = []
    for entry in endpoints.values():
        merged = {f: sum(r[f] or 0 for r in entry["_rows"]) for f in BUCKET_FIELDS}
        merged["maximum"] = max(r["maximum"] or 0 for r in entry["_rows"])
        del entry["_rows"]
        result.append(entry | percentiles(merged))
    result.sort(key=lambda e: -e["count"])
    return {
        "total": sum(e["count"] for e in result),
        "errors_5xx": sum(e["by_status"].get("5xx", 0) for e in result),
        "endpoints": result,
    }


def _orders(since: datetime, minutes: float) -> dict[str, Any]:
    created = sum(_counts("orders.created", since).values())
    status = _counts("orders.status", since)
    counts = {
        "created": created,
        "paid": status.get("paid", 0),
        "payment_failed": status.get("payment_failed", 0),
        "cancelled": status.get("cancelled", 0),
        "refunded": status.get("refunded", 0) + status.get("partially_refunded", 0),
    }
    return counts | {"per_minute": {k: round(v / minutes, 2) for k, v in counts.items()}}


def _payments(since: datetime) -> dict[str, Any]:
    final = Payment.objects.filter(
        updated_at__gte=since, status__in=[PaymentStatus.SUCCEEDED, PaymentStatus.FAILED]
    )
    counts = dict(final.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    succeeded, failed = counts.get(PaymentStatus.SUCCEEDED, 0), counts.get(PaymentStatus.FAILED, 0)
    return {
        "succeeded": succeeded,
        "failed": failed,
        "success_ratio": round(succeeded / (succeeded + failed), 4) if succeeded + failed else None,
        "failure_codes": dict(
            final.filter(status=PaymentStatus.FAILED)
            .values_list("failure_code")
            .annotate(n=Count("id"))
            .values_list("failure_code", "n")
        ),
    }


def _webhooks(since: datetime) -> dict[str, Any]:
    events = WebhookEvent.objects.filter(received_at__gte=since)
    return {
        "received": events.count(),
        "failed": events.filter(result=WebhookResult.FAILED).count(),
        "deliveries": events.aggregate(n=Sum("deliveries"))["n"] or 0,
    }


def ledger_counts(name: str) -> dict[str, int]:
    """How many deliveries of an integration are in each state but `succeeded` (pending, in
    flight, retrying, dead, skipped): read from the partial index `delivery_counted`, which holds
    only those rows, so the cost does not grow with the succeeded ones (nearly all the ledger)."""
    return dict(
        Delivery.objects.filter(integration=name, state__in=COUNTED_STATES)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
        .order_by()
    )


def _integration_figures(name: str, since: datetime) -> dict[str, Any]:
    ledger = Delivery.objects.filter(integration=name)
    states = ledger_counts(name)
    attempts = _counts("delivery.attempts", since).get(name, 0)
    return {
        "succeeded": ledger.filter(succeeded_at__gte=since).count(),
        "dead": ledger.filter(dead_at__gte=since).count(),
        "retrying": states.get(DeliveryState.RETRYING, 0),
        "pending": states.get(DeliveryState.PENDING, 0),
        "in_flight": states.get(DeliveryState.IN_FLIGHT, 0),
        "dead_now": states.get(DeliveryState.DEAD, 0),
        "attempts": attempts,
        "latency": percentiles(_sums(name="delivery.call", label=name, minute__gte=_floor(since))),
        "lag": percentiles(_sums(name="delivery.lag", label=name, minute__gte=_floor(since))),
    }


def queue_summary() -> dict[str, Any]:
    """Tasks waiting in the broker, and deliveries due but not yet made (and the oldest's age)."""
    now = timezone.now()
    try:
        depth: int | None = get_broker().queue_size()
    except Exception:  # noqa: BLE001 - the health endpoint reports the broker itself
        depth = None
    due = Delivery.objects.filter(state__in=CLAIMABLE_STATES, next_attempt_at__lte=now)
    oldest = due.aggregate(at=Min("created_at"))["at"]
    return {
        "broker_depth": depth,
        "deliveries_due": due.count(),
        "oldest_due_age_s": round((now - oldest).total_seconds(), 1) if oldest else 0.0,
    }


def series(
    name: str, *, window: str = "1h", label: str | None = None, points: int = 60
) -> list[dict[str, Any]]:
    """A metric over the window in `points` equal steps: count and p95 per step (charts)."""
    span = WINDOWS[window]
    now = timezone.now()
    step = span / points
    start = _floor(now - span)
    rows = MetricBucket.objects.filter(name=name, minute__gte=start)
    if label is not None:
        rows = rows.filter(label=label)
    steps: list[dict[str, Any]] = [
        {"at": start + step * i, "count": 0, **dict.fromkeys(BUCKET_FIELDS, 0), "maximum": 0.0}
        for i in range(points)
    ]
    for row in rows.values("minute", "count", "maximum", *BUCKET_FIELDS):
        i = min(points - 1, int((row["minute"] - start) / step))
        target = steps[i]
        target["count"] += row["count"]
        target["maximum"] = max(target["maximum"], row["maximum"])
        for f in BUCKET_FIELDS:
            target[f] += row[f]
    return [{"at": s["at"], "count": s["count"], "p95_ms": percentiles(s, (0.95,))["p95_ms"]} for s in steps]


def payment_series(*, window: str = "1h", points: int = 60) -> list[dict[str, Any]]:
    """Payments that succeeded and failed per step of the window (charts)."""
    span = WINDOWS[window]
    now = timezone.now()
    step = span / points
    start = _floor(now - span)
    steps = [{"at": start + step * i, "succeeded": 0, "failed": 0} for i in range(points)]
    for status, at in Payment.objects.filter(
        updated_at__gte=start, status__in=[PaymentStatus.SUCCEEDED, PaymentStatus.FAILED]
    ).values_list("status", "updated_at"):
        steps[min(points - 1, int((at - start) / step))][status] += 1
    return steps


# --- integrations, errors, alerts, an order's story -----------------------------------------
def _public_url(url: str) -> str:
    """A URL without any user:password part."""
    parts = urlsplit(url or "")
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def _endpoint(name: str) -> dict[str, Any]:
    """Where an integration sends its calls (never a key or a password)."""
    if name == "email":
        return {
            "api_base": _public_url(settings.SENDGRID_API_BASE),
            "from_email": settings.SENDGRID_FROM_EMAIL,
            "sandbox_mode": settings.SENDGRID_SANDBOX_MODE,
        }
    if name == "sheets":
        return {
            "api_base": _public_url(settings.SHEETS_API_BASE),
            "spreadsheet_id": settings.SHEETS_SPREADSHEET_ID,
            "worksheet": settings.SHEETS_WORKSHEET,
        }
    if name == "sns":
        return {
            "endpoint_url": _public_url(settings.AWS_ENDPOINT_URL) or "(AWS default)",
            "region": settings.AWS_REGION,
            "topic": settings.SNS_TOPIC_ARN or settings.SNS_TOPIC_NAME,
            "fifo": settings.SNS_FIFO,
        }
    return {}


def integrations_overview() -> list[dict[str, Any]]:
    """Per integration: the configuration in use, circuit, ledger counts, last error, last probe."""
    from integrations.services import get_adapter, integration_config

    probes = latest_probes()
    result = []
    for name in integration_names():
        config = integration_config(name)
        ledger = Delivery.objects.filter(integration=name)
        day = timezone.now() - WINDOWS["24h"]
        succeeded = ledger.filter(succeeded_at__gte=day).count()
        # Every state but succeeded counted over the whole ledger; succeeded over the last 24 h
        # (counting millions of old successes would cost more the longer the system runs).
        counts = ledger_counts(name) | {DeliveryState.SUCCEEDED: succeeded}
        # The most recent failure by when it happened (not by the row's last change: a success
        # after it, or a retry asked for, changes the row but is no error).
        last_error = (
            ledger.filter(last_error_at__isnull=False)
            .order_by("-last_error_at")
            .values(
                "id",
                "order_id",
                "last_error_at",
                "last_error_class",
                "last_error_message",
                "last_provider_status",
                "state",
            )
            .first()
        )
        failed_attempts = ErrorRecord.objects.filter(source="delivery", integration=name, at__gte=day).count()
        adapter = get_adapter(name)
        result.append(
            {
                "name": name,
                "configuration": {
                    "adapter": config["adapter"],
                    "endpoint": _endpoint(name),
                    "events": list(config["events"]),
                    "retry": dict(config["retry"]),
                    "batch": min(adapter.max_batch, config.get("batch", adapter.max_batch)),
                    "max_calls_per_minute": config.get("max_calls_per_minute"),
                },
                **circuit_summary(name),
                "counts": {state: counts.get(state, 0) for state in DeliveryState.values},
                "success_ratio_24h": round(succeeded / (succeeded + failed_attempts), 4)
                if succeeded + failed_attempts
                else None,
                "latency_24h": percentiles(_sums(name="delivery.call", label=name, minute__gte=_floor(day))),
                "last_error": last_error,
                "last_success_at": ledger.aggregate(at=Max("succeeded_at"))["at"],
                "probe": probes.get(name),
                "circuit_events": list(
                    CircuitEvent.objects.filter(integration=name).values(
                        "from_state", "to_state", "reason", "at"
                    )[:5]
                ),
            }
        )
    return result


def dead_letters(*, integration: str, limit: int) -> list[dict[str, Any]]:
    """The latest dead-lettered deliveries of an integration."""
    return list(
        Delivery.objects.filter(integration=integration, state=DeliveryState.DEAD)
        .order_by("-dead_at", "-updated_at")
        .values(
            "id",
            "order_id",
            "event_type",
            "attempts",
            "earlier_attempts",
            "last_error_class",
            "last_error_message",
            "dead_at",
        )[:limit]
    )


def latest_probes() -> dict[str, dict[str, Any]]:
    """The latest result of each probe (email, sheets, sns, stripe)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in ProbeResult.objects.order_by("-at", "-id").values(
        "integration", "ok", "latency_ms", "detail", "error", "trigger", "at"
    )[:200]:
        latest.setdefault(row["integration"], row)
    return latest


def errors_list(*, source: str = "", integration: str = "") -> QuerySet[ErrorRecord]:
    rows = ErrorRecord.objects.all()
    if source:
        rows = rows.filter(source=source)
    if integration:
        rows = rows.filter(integration=integration)
    return rows.order_by("-id")


def alerts_recent(limit: int = 20) -> QuerySet[Alert]:
    return Alert.objects.order_by("-last_at", "-id")[:limit]


def order_story(order_id: uuid.UUID) -> dict[str, Any]:
    """One order's whole story: the order, its events, payments, refunds, webhooks, deliveries
    and recorded errors. Raises OrderNotFound."""
    repository = get_order_repository()
    order = repository.get(order_id)
    payments = list(Payment.objects.filter(order_id=order_id).order_by("attempt"))
    intents = [p.intent_id for p in payments if p.intent_id]
    webhooks = (
        WebhookEvent.objects.filter(
            Q(payload__data__object__id__in=intents) | Q(payload__data__object__payment_intent__in=intents)
        ).order_by("created", "received_at")
        if intents
        else WebhookEvent.objects.none()
    )
    return {
        "order": order,
        "events": repository.events(order_id),
        "payments": payments,
        "refunds": list(Refund.objects.filter(payment__order_id=order_id).order_by("created_at")),
        "webhooks": list(webhooks),
        "deliveries": list(Delivery.objects.filter(order_id=order_id).order_by("created_at", "integration")),
        "errors": list(ErrorRecord.objects.filter(order_id=order_id).order_by("-id")[:50]),
    }


# --- the order lookup -------------------------------------------------------------------------
# The short reference customers see ("90385D94", or "#90385d94"): an order id's first hex digits.
REFERENCE = re.compile(rf"^#?\s*([0-9a-f]{{{REFERENCE_LENGTH}}})$", re.IGNORECASE)
LOOKUP_LIMIT = 20
LOOKUP_HELP = "Enter an order's reference (like 90385D94), its full id, or the customer's email address."


@dataclass(frozen=True, slots=True)
class OrderLookup:
    """What the lookup found: one order's story, a list of orders (newest first), or why nothing."""

    text: str
    story: dict[str, Any] | None = None
    orders: list[Order] = field(default_factory=list)
    heading: str = ""
    more: bool = False  # more orders match than are listed
    error: str = ""


def order_lookup(text: str) -> OrderLookup:
    """Find orders by what an operator has at hand: a full order id, the short reference the
    customer sees (any case, with or without "#"), or an email address (that address's orders,
    newest first). Works on every order store (`OrderQuery`'s reference and email filters).
    Never raises for what was typed: an unknown or malformed one is an `error` to show."""
    text = text.strip()
    if not text:
        return OrderLookup(text="")
    shown = text if len(text) <= 80 else text[:79] + "…"
    try:
        order_id = uuid.UUID(text)
    except ValueError:
        pass
    else:
        try:
            return OrderLookup(text=text, story=order_story(order_id))
        except OrderNotFound:
            return OrderLookup(text=text, error=f"No order {order_id} was found.")
    if match := REFERENCE.match(text):
        return _lookup_reference(text, match.group(1))
    if "@" in text and not any(c.isspace() for c in text):
        return _lookup_email(text, shown)
    return OrderLookup(
        text=text, error=f"“{shown}” is not an order id, a reference or an email address. {LOOKUP_HELP}"
    )


def _lookup_reference(text: str, reference: str) -> OrderLookup:
    shown = reference.upper()
    page = get_order_repository().list(OrderQuery(reference=reference, limit=LOOKUP_LIMIT))
    if not page.orders:
        return OrderLookup(text=text, error=f"No order has the reference {shown}.")
    if len(page.orders) == 1:
        return OrderLookup(text=text, story=order_story(page.orders[0].id))
    # Two ids that begin alike: rare, but each is listed rather than one picked.
    return OrderLookup(
        text=text,
        orders=page.orders,
        heading=f"{len(page.orders)} orders have the reference {shown}",
        more=page.next_cursor is not None,
    )


def _lookup_email(text: str, shown: str) -> OrderLookup:
    try:
        validate_email(text)
        page = get_order_repository().list(OrderQuery(email=text, newest_first=True, limit=LOOKUP_LIMIT))
    except (ValidationError, OrderValidationError):
        return OrderLookup(text=text, error=f"“{shown}” is not an email address. {LOOKUP_HELP}")
    email = text.lower()
    if not page.orders:
        return OrderLookup(text=text, error=f"No orders were placed with the email address {email}.")
    count = len(page.orders)
    return OrderLookup(
        text=text,
        orders=page.orders,
        heading=(
            f"The newest {count} orders of {email}"
            if page.next_cursor
            else f"{count} order{'' if count == 1 else 's'} of {email}, newest first"
        ),
        more=page.next_cursor is not None,
    )
