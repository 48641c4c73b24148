"""The fan-out: outbox entries become deliveries, deliveries reach their integrations.

- `outbox_relay` turns committed outbox entries into ledger rows (one per integration that acts
  on the event), unique on their idempotency key, then asks for dispatch.
- `deliveries_dispatch` claims due deliveries of one integration (a lease, an attempt), calls
  its adapter in batches, and records each outcome: success with the external id; a transient
  failure retried with backoff and full jitter until the attempts run out; a permanent one dead
  at once. A circuit breaker, a rate limit and a provider's "slow down" make deliveries wait
  without spending attempts.
- `deliveries_sweep` is the safety net: it relays what the commit hook missed, takes back
  deliveries whose worker died (expired lease) and asks for dispatch of what is due.

The django-q2 tasks in `integrations.tasks` only call these. The broker never decides a retry:
the ledger does.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from core.errors import ApplicationError
from core.locks import shared_lock
from integrations.adapters.base import DeliveryError, DeliveryOutcome, DeliveryRequest, IntegrationAdapter
from integrations.models import CLAIMABLE_STATES, Delivery, DeliveryState
from integrations.resilience import (
    CircuitBreaker,
    Pause,
    RateLimiter,
    backoff_seconds,
    exclusive,
    shared_cache,
)
from live import services as live
from orders.domain import Actor
from orders.repositories import OrderRepository, get_order_repository

logger = logging.getLogger(__name__)
_pause = threading.Event()

RELAY_BATCH = 500
# A dispatch task stops claiming after this long, leaving the rest to the next one.
DISPATCH_BUDGET_SECONDS = 20.0


class DeliveryNotRetryable(ApplicationError):
    """A retry or resend asked of a delivery that cannot have one (not dead, no email to resend)."""

    http_status = 409
    code = "not_retryable"


# --- configuration --------------------------------------------------------------------------
def integration_names() -> list[str]:
    return list(settings.INTEGRATIONS)


def integration_config(name: str) -> dict[str, Any]:
    return settings.INTEGRATIONS[name]


@cache
def _adapter(path: str) -> IntegrationAdapter:
    return import_string(path)()


def get_adapter(name: str) -> IntegrationAdapter:
    return _adapter(integration_config(name)["adapter"])


def delivery_key(*, integration: str, order_id: uuid.UUID, event_type: str, order_version: int) -> str:
    return f"{integration}:{order_id}:{event_type}:v{order_version}"


# --- relay ----------------------------------------------------------------------------------
def outbox_relay(
    *,
    order_ids: Sequence[uuid.UUID] | None = None,
    limit: int = RELAY_BATCH,
    repository: OrderRepository | None = None,
    dispatch: bool = True,
) -> int:
    """Turn pending outbox entries into deliveries; returns how many deliveries were created.

    Creating them is idempotent (unique idempotency keys) and marking the entries relayed comes
    after, so a relay that dies between the two, or two relays at once, deliver nothing twice.
    """
    repository = repository or get_order_repository()
    created = 0
    touched: set[str] = set()
    while True:
        messages = repository.outbox_pending(limit=limit, order_ids=order_ids)
        if not messages:
            break
        now = timezone.now()
        rows = [
            Delivery(
                idempotency_key=delivery_key(
                    integration=name,
                    order_id=message.order_id,
                    event_type=message.event_type,
                    order_version=message.order_version,
                ),
                integration=name,
                order_id=message.order_id,
                event_type=message.event_type,
                order_version=message.order_version,
                outbox_id=message.id,
                payload=message.payload,
                next_attempt_at=now,
            )
            for message in messages
            for name, config in settings.INTEGRATIONS.items()
            if message.event_type in config["events"]
        ]
        if repository.shares_database_transaction:
            # The order store is this database: the deliveries and the mark in one transaction
            # (one commit, not two; a relay that dies in between leaves both undone).
            with transaction.atomic():
                inserted = _insert_new(rows)
                repository.outbox_mark_relayed(messages)
        else:
            inserted = _insert_new(rows)
            # After the deliveries are committed, not inside their transaction: the order store
            # is another database (DynamoDB), whose calls must not hold SQLite's one write lock.
            repository.outbox_mark_relayed(messages)
        if inserted:
            live.publish(live.OPS)
        created += len(inserted)
        touched |= {row.integration for row in rows if row.idempotency_key in inserted}
        if len(messages) < limit:
            break
    if dispatch and touched:
        transaction.on_commit(lambda: request_dispatch(sorted(touched)))
    return created


def _insert_new(rows: list[Delivery]) -> set[str]:
    """Insert the ledger rows whose idempotency key is not there yet; returns the keys inserted.

    One `INSERT ... ON CONFLICT DO NOTHING RETURNING` per chunk (PostgreSQL and SQLite alike):
    a row another relay made first is skipped by the unique key, with no read before."""
    if not rows:
        return set()
    meta = Delivery._meta
    quote = connection.ops.quote_name
    fields = list(meta.concrete_fields)
    per_statement = max(1, connection.ops.bulk_batch_size(fields, rows))
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params: list[Any] = []
            for row in chunk:
                params += [f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields]
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"  # noqa: S608 - names, not input
                f" VALUES {', '.join([row_sql] * len(chunk))}"
                f" ON CONFLICT DO NOTHING RETURNING {quote('idempotency_key')}",
                params,
            )
            inserted.update(key for (key,) in cursor.fetchall())
    return inserted


def outbox_kick(order_ids: Sequence[uuid.UUID]) -> None:
    """The outbox commit hook: relay these orders' entries now rather than at the next sweep."""
    outbox_relay(order_ids=order_ids)


def _queued_key(integration: str) -> str:
    return f"dispatch-queued:{integration}"


# How long a "dispatch queued or running" mark lasts: beyond a dispatch task's budget, so a
# running dispatcher keeps it; a lost task's mark expires and the sweep asks again.
DISPATCH_MARK_SECONDS = 30


def dispatch_mark(integration: str) -> None:
    """Mark a dispatcher of `integration` as running, for DISPATCH_MARK_SECONDS from now."""
    shared_cache().set(_queued_key(integration), 1, timeout=DISPATCH_MARK_SECONDS)


def request_dispatch(integrations: Sequence[str]) -> None:
    """Queue one dispatch task per integration, unless one is queued or running already.

    The mark `dispatch-queued:<name>` lives while a task is queued and while it runs: the task
    takes it away only once nothing is due, and looks once more after that (see
    `deliveries_dispatch`), so work committed before this call is never left behind, and a
    stream of payments makes one long dispatcher per integration, not one task per order.
    One read of every mark first (one round trip), then an `add` only for those not set.
    """
    from django_q.tasks import async_task

    cache = shared_cache()
    marked = cache.get_many([_queued_key(name) for name in integrations])
    for name in integrations:
        if _queued_key(name) in marked:
            continue
        if cache.add(_queued_key(name), 1, timeout=DISPATCH_MARK_SECONDS):
            try:
                async_task("integrations.tasks.dispatch", name, task_name=f"dispatch {name}", group="fanout")
            except Exception:
                cache.delete(_queued_key(name))
                logger.exception("Could not queue dispatch of %s; the sweep will", name)


# --- dispatch -------------------------------------------------------------------------------
@dataclass
class DispatchReport:
    integration: str
    calls: int = 0
    succeeded: int = 0
    retrying: int = 0
    dead: int = 0
    skipped: int = 0  # not sent on purpose (over GUEST_EMAIL_MAX_PER_HOUR)
    waited_for: str = ""  # why it stopped early: "circuit open", "rate limit", "paused"
    outcomes: list[DeliveryOutcome] = field(default_factory=list)


def deliveries_dispatch(
    *,
    integration: str,
    adapter: IntegrationAdapter | None = None,
    budget_seconds: float = DISPATCH_BUDGET_SECONDS,
) -> DispatchReport:
    """Deliver what is due for `integration` until nothing is due or the budget is spent."""
    adapter = adapter or get_adapter(integration)
    config = integration_config(integration)
    breaker = CircuitBreaker(integration)
    limiter = (
        RateLimiter(integration, config["max_calls_per_minute"])
        if config.get("max_calls_per_minute")
        else None
    )
    report = DispatchReport(integration=integration)
    deadline = time.monotonic() + budget_seconds
    while True:
        if not config.get("exclusive"):
            _dispatch_loop(integration, adapter, config, breaker, limiter, report, deadline)
        else:
            # One dispatcher at a time (Sheets has no idempotent append: two at once could both
            # add a row). Released before the last look below, so a task queued after it finds
            # the integration free.
            with exclusive(
                f"dispatch:{integration}", seconds=budget_seconds + settings.DELIVERY_LEASE_SECONDS
            ) as held:
                if held:
                    _dispatch_loop(integration, adapter, config, breaker, limiter, report, deadline)
                else:
                    report.waited_for = "another dispatcher"
        # New work now queues a new task. Work committed before this line found the mark set and
        # queued nothing: the last look below finds it.
        shared_cache().delete(_queued_key(integration))
        if report.waited_for or time.monotonic() >= deadline:
            return report  # a pause, an open circuit, the budget: the sweep asks again later
        if not _due(integration).exists():
            return report
        if not shared_cache().add(_queued_key(integration), 1, timeout=DISPATCH_MARK_SECONDS):
            return report  # a task was queued meanwhile: it takes the rest


def _due(integration: str) -> Any:
    """Due deliveries of one integration: unfinished, next attempt now or past."""
    return Delivery.objects.filter(
        integration=integration, state__in=CLAIMABLE_STATES, next_attempt_at__lte=timezone.now()
    )


def _dispatch_loop(
    integration: str,
    adapter: IntegrationAdapter,
    config: dict[str, Any],
    breaker: CircuitBreaker,
    limiter: RateLimiter | None,
    report: DispatchReport,
    deadline: float,
) -> None:
    """Claim and deliver batches until nothing is due, the deadline, or a reason to wait
    (report.waited_for). One shared-cache read per batch for the pause and the circuit."""
    while time.monotonic() < deadline:
        pause_until, breaker_state = Pause(integration).read_with(breaker)
        if pause_until > time.time():
            report.waited_for = "paused"
            break
        if config.get("flush_seconds") and not _due_enough(integration, config):
            break
        mode = breaker.allow(breaker_state)
        if mode == "open":
            report.waited_for = "circuit open"
            break
        if limiter is not None:
            wait = limiter.reserve(cost=config.get("calls_per_batch", 1))
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    report.waited_for = "rate limit"
                    break
                _pause.wait(wait)
                continue
        size = 1 if mode == "probe" else min(adapter.max_batch, config.get("batch", adapter.max_batch))
        claimed = _claim(integration, size)
        if not claimed:
            break
        _deliver(adapter, claimed, breaker, report)
        linger = config.get("linger_seconds") or 0.0
        if linger and len(claimed) < size and time.monotonic() + linger < deadline:
            # Less than a full batch was due: let the next one gather (see DELIVERY_LINGER_SECONDS).
            _pause.wait(linger)


def _due_enough(integration: str, config: dict[str, Any]) -> bool:
    """For a batching integration (flush_seconds): is a full batch due, or has the oldest due
    delivery waited flush_seconds? Waits for the rest of that time if need be."""
    flush = config["flush_seconds"]
    summary = _due(integration).aggregate(count=Count("id"), oldest=Min("next_attempt_at"))
    if not summary["count"]:
        return False
    if summary["count"] >= config.get("batch", 1):
        return True
    wait = (summary["oldest"] + timedelta(seconds=flush) - timezone.now()).total_seconds()
    if wait > 0:
        _pause.wait(wait)
    return True


def _claim_sql(size: int) -> str:
    """One statement that claims up to `size` due deliveries and returns them: the due ones
    (unfinished state, next attempt due, oldest due first; on PostgreSQL locked rows of another
    dispatcher are skipped) become in flight under a lease with one more attempt spent."""
    meta = Delivery._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = [field.column for field in meta.concrete_fields]
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    return (
        f"UPDATE {table} SET {quote('state')} = %s, {quote('attempts')} = {quote('attempts')} + 1,"  # noqa: S608 - names, not input
        f" {quote('lease_expires_at')} = %s, {quote('updated_at')} = %s"
        f" WHERE {quote('id')} IN ("
        f"SELECT {quote('id')} FROM {table}"
        f" WHERE {quote('integration')} = %s AND {quote('state')} IN (%s, %s)"
        f" AND {quote('next_attempt_at')} <= %s"
        f" ORDER BY {quote('next_attempt_at')}, {quote('created_at')} LIMIT {int(size)}{skip_locked})"
        f" RETURNING {', '.join(quote(c) for c in columns)}"
    )


def _claim(integration: str, size: int) -> list[Delivery]:
    """Take up to `size` due deliveries in one statement: in flight under a lease, one more
    attempt spent. Returned oldest due first."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS)
    sql = _claim_sql(size)
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        DeliveryState.IN_FLIGHT,
        adapt(lease),
        adapt(now),
        integration,
        *CLAIMABLE_STATES,
        adapt(now),
    ]
    with transaction.atomic():
        claimed = list(Delivery.objects.raw(sql, params))
    for delivery in claimed:
        delivery._state.adding = False
    claimed.sort(key=lambda d: (d.next_attempt_at, d.created_at))
    return claimed


def _deliver(
    adapter: IntegrationAdapter, claimed: list[Delivery], breaker: CircuitBreaker, report: DispatchReport
) -> None:
    claimed = _skip_over_guest_email_limit(claimed, report)
    if not claimed:
        return
    requests = [
        DeliveryRequest(
            delivery_id=d.id,
            idempotency_key=d.idempotency_key,
            event_type=d.event_type,
            order_id=d.order_id,
            order_version=d.order_version,
            payload=d.payload,
            attempt=d.attempts,
        )
        for d in claimed
    ]
    report.calls += 1
    started = time.perf_counter()
    try:
        outcomes = {o.delivery_id: o for o in adapter.deliver(requests)}
    except Exception as exc:
        logger.exception("%s adapter failed a whole batch", adapter.name)
        error = DeliveryError(transient=True, error_class=type(exc).__name__, message=str(exc)[:1000])
        outcomes = {}
    else:
        error = DeliveryError(
            transient=True, error_class="MissingOutcome", message="the adapter said nothing of it"
        )
    latency_ms = (time.perf_counter() - started) * 1000
    logger.debug(
        "%s: one call for %s deliveries took %.1f ms",
        adapter.name,
        len(claimed),
        latency_ms,
        extra={"event": "delivery.call", "integration": adapter.name, "latency_ms": latency_ms},
    )
    for delivery in claimed:
        delivery.latency_ms = round(latency_ms, 2)
    results = [outcomes.get(d.id) or DeliveryOutcome(delivery_id=d.id, error=error) for d in claimed]
    # The outcomes first: the calls were made, and what they did must reach the ledger even if
    # the bookkeeping below fails (a lock left by a killed worker), or the sweep would send again.
    _record(claimed, results, report)
    transient = [o for o in results if o.error is not None and o.error.transient]
    breaker.record(
        failed=bool(transient) and len(transient) == len(results),
        reason=transient[0].error.message if transient else "",  # type: ignore[union-attr]
    )
    backoff = max((o.backoff_seconds for o in results), default=0.0)
    if backoff:
        Pause(adapter.name).extend(backoff)


_FAILURE_FIELDS = [
    "state",
    "external_id",
    "succeeded_at",
    "dead_at",
    "lease_expires_at",
    "last_error_at",
    "last_error_class",
    "last_error_message",
    "last_provider_status",
    "next_attempt_at",
    "latency_ms",
    "updated_at",
]


def _record(claimed: list[Delivery], results: list[DeliveryOutcome], report: DispatchReport) -> None:
    """Settle a batch: the successes in one UPDATE (their external ids in one CASE), the
    failures (rare) with bulk_update."""
    by_id = {o.delivery_id: o for o in results}
    now = timezone.now()
    succeeded: list[Delivery] = []
    failed: list[Delivery] = []
    for delivery in claimed:
        outcome = by_id[delivery.id]
        retry = integration_config(delivery.integration)["retry"]
        delivery.lease_expires_at = None
        delivery.updated_at = now  # bulk_update does not apply auto_now
        if outcome.ok:
            # The last failure (if any) stays as history, with its time: the state says it
            # was delivered after it.
            delivery.state = DeliveryState.SUCCEEDED
            delivery.external_id = outcome.external_id[:255]
            delivery.succeeded_at = now
            report.succeeded += 1
            succeeded.append(delivery)
            continue
        failed.append(delivery)
        error = outcome.error
        assert error is not None  # noqa: S101 - not ok means an error
        delivery.last_error_at = now
        delivery.last_error_class = error.error_class[:200]
        delivery.last_error_message = error.message
        delivery.last_provider_status = error.provider_status
        if not error.transient:
            delivery.state, delivery.dead_at = DeliveryState.DEAD, now
            delivery.last_error_message = f"Permanent failure, not retried: {error.message}"
            report.dead += 1
        elif delivery.attempts >= retry["max_attempts"]:
            delivery.state, delivery.dead_at = DeliveryState.DEAD, now
            total = delivery.total_attempts  # every attempt, earlier series staff retried included
            delivery.last_error_message = (
                f"Gave up after {total} attempt{'' if total == 1 else 's'}: {error.message}"
            )
            report.dead += 1
        else:
            delivery.state = DeliveryState.RETRYING
            wait = max(
                outcome.backoff_seconds,
                backoff_seconds(delivery.attempts, base=retry["base"], cap=retry["cap"]),
            )
            delivery.next_attempt_at = now + timedelta(seconds=wait)
            report.retrying += 1
    if succeeded:
        _settle_succeeded(succeeded, now)
    if failed:
        Delivery.objects.bulk_update(failed, _FAILURE_FIELDS)
    report.outcomes.extend(results)
    # The orders' pages show their email's state; /ops/ every delivery's (a sheet row or a
    # notification changes nothing on an order's page: no write per order for them).
    live.publish(live.OPS, *{live.order_channel(d.order_id) for d in claimed if d.integration == "email"})
    _report(claimed, now)


def _settle_succeeded(deliveries: list[Delivery], now: datetime) -> None:
    """One UPDATE for a batch of successes: the same state, times and latency for all, each its
    own external id (a CASE on the primary key)."""
    quote = connection.ops.quote_name
    table = quote(Delivery._meta.db_table)
    pk = Delivery._meta.pk
    adapt = connection.ops.adapt_datetimefield_value
    latency = deliveries[0].latency_ms
    for start in range(0, len(deliveries), 400):  # 3 parameters a row: under SQLite's oldest limit
        chunk = deliveries[start : start + 400]
        ids = [pk.get_db_prep_value(d.id, connection) for d in chunk]
        cases: list[Any] = []
        for pk_value, delivery in zip(ids, chunk, strict=True):
            cases += [pk_value, delivery.external_id]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {quote('state')} = %s, {quote('succeeded_at')} = %s,"  # noqa: S608 - names, not input
                f" {quote('updated_at')} = %s, {quote('lease_expires_at')} = NULL, {quote('latency_ms')} = %s,"
                f" {quote('external_id')} = CASE {quote('id')}"
                f" {' '.join(['WHEN %s THEN %s'] * len(chunk))} ELSE {quote('external_id')} END"
                f" WHERE {quote('id')} IN ({', '.join(['%s'] * len(chunk))})",
                [DeliveryState.SUCCEEDED, adapt(now), adapt(now), latency, *cases, *ids],
            )


GUEST_EMAIL_WINDOW_SECONDS = 3600


def _guest_email_key(recipient: str) -> str:
    return "guest-email:" + hashlib.sha256(recipient.encode()).hexdigest()[:40]


def _skip_over_guest_email_limit(claimed: list[Delivery], report: DispatchReport) -> list[Delivery]:
    """Anyone can type someone else's address into a guest checkout: at most
    GUEST_EMAIL_MAX_PER_HOUR emails to one guest address in any hour (customers with accounts
    are not limited). The rest are not sent and end `skipped` in the ledger with the reason:
    final, so neither retried nor dead-lettered (no alert to page anyone), and logged as a
    `delivery.skipped` event. Counted once per delivery, on its first attempt (a retry of a
    counted one is not counted again, nor one staff asked to retry). Returns the deliveries to send.

    The whole batch is counted under one lock with one read and one write of the addresses'
    windows (a sliding window per address in the shared cache, so every dispatcher counts the same)."""
    limit = settings.GUEST_EMAIL_MAX_PER_HOUR
    if limit <= 0:
        return claimed
    counted: list[tuple[Delivery, str]] = []
    for delivery in claimed:
        order = delivery.payload.get("order") or {}
        recipient = str(order.get("email") or "").strip().lower()
        if (
            delivery.integration == "email"
            and delivery.attempts == 1
            and not delivery.earlier_attempts
            and order.get("customer_id") is None
            and recipient
        ):
            counted.append((delivery, _guest_email_key(recipient)))
    if not counted:
        return claimed
    over = _guest_emails_take([key for _, key in counted], limit=limit)
    skipped = [delivery for (delivery, _), refused in zip(counted, over, strict=True) if refused]
    if not skipped:
        return claimed
    skipped_ids = {delivery.id for delivery in skipped}
    now = timezone.now()
    for delivery in skipped:
        delivery.state = DeliveryState.SKIPPED
        delivery.lease_expires_at = None
        delivery.updated_at = now  # bulk_update does not apply auto_now
        delivery.last_error_class = "GuestEmailLimit"
        delivery.last_error_message = (
            f"Skipped, not sent: {limit} emails to this guest address in the last hour already"
            " (GUEST_EMAIL_MAX_PER_HOUR)."
        )
    Delivery.objects.bulk_update(
        skipped, ["state", "lease_expires_at", "last_error_class", "last_error_message", "updated_at"]
    )
    report.skipped += len(skipped)
    for delivery in skipped:
        logger.info(
            "Skipped %s of order %s: over the guest email limit",
            delivery.event_type,
            delivery.order_id,
            extra={
                "event": "delivery.skipped",
                "integration": delivery.integration,
                "order_id": delivery.order_id,
            },
        )
    return [delivery for delivery in claimed if delivery.id not in skipped_ids]


def _guest_emails_take(keys: list[str], *, limit: int) -> list[bool]:
    """Take one of each address's `limit` emails of the last hour, in order (an address may come
    twice in a batch); True where none was left (not to be sent). One lock, one get_many and one
    set_many for the whole batch."""
    now = time.time()
    cache = shared_cache()
    refused: list[bool] = []
    with shared_lock("guest-email"):
        stored = cache.get_many(list(dict.fromkeys(keys)))
        windows = {
            key: [at for at in stored.get(key) or [] if now - at < GUEST_EMAIL_WINDOW_SECONDS] for key in keys
        }
        for key in keys:
            allowed = len(windows[key]) < limit
            if allowed:
                windows[key].append(now)
            refused.append(not allowed)
        cache.set_many(windows, timeout=GUEST_EMAIL_WINDOW_SECONDS)
    return refused


def _report(claimed: list[Delivery], now: datetime) -> None:
    """Log the outcomes as structured events (monitoring counts them, keeps the failures as
    errors and alerts on dead letters): the successes of the batch as one `delivery.successes`
    event at DEBUG with each one's lag from the order event to the effect, each retry at INFO
    and each dead letter at WARNING as a `delivery.outcome` event.

    The lag is left out for a delivery staff sent again (a retry of a dead letter, a resend of
    the email): its order event may be hours old, and that is not a slow delivery."""
    succeeded: dict[str, list[Delivery]] = {}
    for delivery in claimed:
        if delivery.state == DeliveryState.SUCCEEDED:
            succeeded.setdefault(delivery.integration, []).append(delivery)
            continue
        if delivery.state == DeliveryState.SKIPPED:
            continue
        extra: dict[str, Any] = {
            "event": "delivery.outcome",
            "integration": delivery.integration,
            "order_id": delivery.order_id,
            "state": delivery.state,
            "error_class": delivery.last_error_class or "DeliveryError",
        }
        logger.log(
            logging.WARNING if delivery.state == DeliveryState.DEAD else logging.INFO,
            "%s attempt %s of %s (%s): %s",
            delivery.event_type,
            delivery.attempts,
            delivery.integration,
            delivery.state,
            delivery.last_error_message,
            extra=extra,
        )
    for integration, done in succeeded.items():
        lags = []
        for delivery in done:
            event_at = None if delivery.is_manual else _event_at(delivery.payload)
            if event_at is not None:
                lags.append(max(0.0, (now - event_at).total_seconds() * 1000))
        logger.debug(
            "%s delivered %s (%s)",
            integration,
            len(done),
            ", ".join(f"{d.event_type} of order {d.order_id}" for d in done[:5])
            + (", ..." if len(done) > 5 else ""),
            extra={
                "event": "delivery.successes",
                "integration": integration,
                "count": len(done),
                "lags_ms": lags,
            },
        )


def _event_at(payload: dict[str, Any]) -> Any:
    try:
        return datetime.fromisoformat(payload["event"]["at"])
    except (KeyError, TypeError, ValueError):
        return None


# --- sweep, retry, resend ---------------------------------------------------------------------
@dataclass
class SweepReport:
    relayed: int
    leases_taken_back: int
    dispatch_requested: list[str]


def deliveries_sweep(*, repository: OrderRepository | None = None) -> SweepReport:
    """Relay what the commit hook missed, take back deliveries whose worker died, and ask for
    dispatch of every integration with something due (or waiting on a circuit or a pause)."""
    relayed = outbox_relay(repository=repository, dispatch=False)
    now = timezone.now()
    taken_back = Delivery.objects.filter(state=DeliveryState.IN_FLIGHT, lease_expires_at__lt=now).update(
        state=DeliveryState.RETRYING, next_attempt_at=now, lease_expires_at=None, updated_at=now
    )
    if taken_back:
        logger.warning("Took back %s deliveries whose worker stopped mid-flight", taken_back)
    due = sorted(
        set(
            Delivery.objects.filter(state__in=CLAIMABLE_STATES, next_attempt_at__lte=now)
            .values_list("integration", flat=True)
            .distinct()
        )
    )
    if due:
        request_dispatch(due)
    return SweepReport(relayed=relayed, leases_taken_back=taken_back, dispatch_requested=due)


def delivery_retry(*, delivery_id: uuid.UUID, actor: Actor) -> Delivery:
    """Send a dead (or retrying) delivery again now, with a fresh series of attempts.

    The attempts made so far move to `earlier_attempts` (the total stays true) and the last
    failure stays as history; `retried_at` marks it as sent again by staff."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(id=delivery_id)
        if delivery.state not in {DeliveryState.DEAD, DeliveryState.RETRYING}:
            raise DeliveryNotRetryable(f"A delivery that is {delivery.state} is not retried.")
        now = timezone.now()
        delivery.state = DeliveryState.PENDING
        delivery.earlier_attempts += delivery.attempts
        delivery.attempts = 0
        delivery.retried_at = now
        delivery.next_attempt_at = now
        delivery.dead_at = None
        delivery.save()
        logger.info("%s asked to retry delivery %s", actor, delivery.id)
        transaction.on_commit(lambda: request_dispatch([delivery.integration]))
        live.publish_order(delivery.order_id)
    return delivery


def deliveries_retry_matching(
    *, actor: Actor, integration: str | None = None, error_contains: str = ""
) -> int:
    """Retry every dead delivery (of one integration, whose last error contains a text)."""
    dead = Delivery.objects.filter(state=DeliveryState.DEAD)
    if integration:
        dead = dead.filter(integration=integration)
    if error_contains:
        dead = dead.filter(
            Q(last_error_message__icontains=error_contains) | Q(last_error_class__icontains=error_contains)
        )
    count = 0
    for delivery_id in dead.values_list("id", flat=True):
        delivery_retry(delivery_id=delivery_id, actor=actor)
        count += 1
    return count


def delivery_resend_email(*, order_id: uuid.UUID, actor: Actor) -> Delivery:
    """Send the order's confirmation email again: a new delivery with a key of its own."""
    original = (
        Delivery.objects.filter(order_id=order_id, integration="email", event_type="order.paid")
        .order_by("created_at")
        .first()
    )
    if original is None:
        raise DeliveryNotRetryable("This order has no confirmation email to send again.")
    resends = Delivery.objects.filter(
        idempotency_key__startswith=f"{original.idempotency_key}:resend-"
    ).count()
    delivery = Delivery.objects.create(
        idempotency_key=f"{original.idempotency_key}:resend-{resends + 1}",
        integration="email",
        order_id=order_id,
        event_type=original.event_type,
        order_version=original.order_version,
        outbox_id=original.outbox_id,
        payload=original.payload | {"resent_by": str(actor)},
        next_attempt_at=timezone.now(),
    )
    transaction.on_commit(lambda: request_dispatch(["email"]))
    return delivery
