"""Reconciliation: finding and repairing what webhooks missed.

Payments out of step with Stripe are looked up and applied through `payment_apply_intent`;
Stripe's events since the events cursor that never arrived are applied as if their webhook had
come; refunds left pending, and unwanted charges whose automatic refund never reached Stripe,
are settled. `manage.py reconcile_payments` runs them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Max
from django.utils import timezone

from orders.domain import Actor, OrderError, OrderStatus
from orders.repositories import OrderRepository, get_order_repository
from payments.gateways.base import GatewayError, GatewayRequestRefused, PaymentGateway, get_payment_gateway
from payments.models import Payment, PaymentStatus, Refund, RefundStatus, SyncCursor, WebhookEvent
from payments.selectors import refunded_minor
from payments.services.common import _alert
from payments.services.paying import _advance, _order_target, payment_apply_intent, payment_find_intent
from payments.services.refunds import _refund_status, payment_reverse, refund_apply
from payments.services.webhooks import HANDLED_EVENTS, webhook_receive

logger = logging.getLogger(__name__)

RECONCILE_ACTOR = Actor.system("reconcile")
OPEN_PAYMENT_STATUSES = frozenset(
    {PaymentStatus.CREATING, PaymentStatus.REQUIRES_ACTION, PaymentStatus.PROCESSING}
)


@dataclass(frozen=True, slots=True)
class ReconcileChange:
    """What reconciling one payment changed (in a dry run: would change), or why it could not.

    Statuses are their values (`"processing"`, `"paid"`); the order's are empty when it could not
    be read. `error` is set, and nothing was changed, when Stripe or the order could not be reached.
    """

    payment_id: uuid.UUID
    order_id: uuid.UUID
    attempt: int
    intent_id: str
    payment_before: str
    payment_after: str
    order_before: str
    order_after: str
    error: str = ""

    @property
    def payment_changed(self) -> bool:
        return self.payment_before != self.payment_after

    @property
    def order_changed(self) -> bool:
        return self.order_before != self.order_after


# Where reconciliation last stopped: the start of its last run (payments created since then are
# checked next time), and the creation time of the newest Stripe event it went through.
RECONCILE_CURSOR = "stripe.reconcile.payments"
EVENTS_CURSOR = "stripe.reconcile.events"
# Stripe keeps events for 30 days: an events cursor older than that starts at the oldest kept.
EVENTS_KEPT = timedelta(days=30)
FIRST_WINDOW = timedelta(hours=24)


def reconcile_since_default() -> datetime:
    """Where the last run started, or 24 hours ago before the first run."""
    cursor = SyncCursor.objects.filter(name=RECONCILE_CURSOR).first()
    if cursor is None:
        return timezone.now() - FIRST_WINDOW
    return datetime.fromtimestamp(cursor.value, tz=timezone.get_current_timezone())


def reconcile_mark(started: datetime) -> None:
    SyncCursor.objects.update_or_create(name=RECONCILE_CURSOR, defaults={"value": int(started.timestamp())})


@dataclass(frozen=True, slots=True)
class EventsSweep:
    """What going through Stripe's events since the cursor found: how many were listed, how
    many we had not received by webhook (applied now, or in a dry run: would be), errors."""

    listed: int
    missed: int
    errors: list[str]
    since: int


def payment_reconcile_events(
    *, since: datetime | None = None, gateway: PaymentGateway | None = None, dry_run: bool = False
) -> EventsSweep:
    """List Stripe's events of the types we handle created since the events cursor (or `since`),
    oldest first, and apply each one we never received, exactly as if its webhook had come:
    the events cursor, not a scan of the account, finds what webhooks missed."""
    gateway = gateway or get_payment_gateway()
    now = timezone.now()
    cursor = SyncCursor.objects.filter(name=EVENTS_CURSOR).first()
    if since is None:
        start = cursor.value if cursor else int((now - FIRST_WINDOW).timestamp())
    else:
        start = int(since.timestamp())
    start = max(start, int((now - EVENTS_KEPT).timestamp()))
    # Stripe's `created` is in whole seconds: go from the cursor's second again (repeats are
    # stored once), so events created in that second after the last run are not skipped. Every
    # page is read (no cap), so nothing between the start and now is left behind.
    events = gateway.list_events(created_after=start - 1, types=list(HANDLED_EVENTS), limit=None)
    known = set(
        WebhookEvent.objects.filter(event_id__in=[e.id for e in events]).values_list("event_id", flat=True)
    )
    missed = [e for e in events if e.id not in known]
    errors = []
    if not dry_run:
        for event in missed:
            try:
                webhook_receive(event=event)
            except Exception as exc:  # noqa: BLE001 - recorded on the stored event (replay --failed)
                errors.append(f"event {event.id} ({event.type}): {type(exc).__name__}: {exc}")
        # The cursor moves only over what was swept: a window starting after it leaves a gap.
        if cursor is None or start <= cursor.value:
            newest = max((e.created for e in events), default=start)
            SyncCursor.objects.update_or_create(
                name=EVENTS_CURSOR, defaults={"value": max(newest, cursor.value if cursor else 0)}
            )
    return EventsSweep(listed=len(events), missed=len(missed), errors=errors, since=start)


def payment_reconcile(
    *,
    since: datetime,
    gateway: PaymentGateway | None = None,
    repository: OrderRepository | None = None,
    dry_run: bool = False,
    progress: Callable[[Sequence[Payment]], Iterable[Payment]] | None = None,
) -> list[ReconcileChange]:
    """Compare the payments created since `since` that may be out of step with Stripe, and
    repair them through `payment_apply_intent` (as `system:reconcile`).

    Out of step: still open (creating, requires_action, processing: a webhook may have been
    missed), or final while the order says otherwise (succeeded but the order still awaits
    payment; the latest attempt failed but the order is still pending_payment). Each is looked up
    at Stripe by its intent id, or by the order id in the intents' metadata when we never learnt
    the id. Returns one `ReconcileChange` per payment or order that changed, or that could not be
    checked (`error`); `dry_run` changes nothing and returns what would change. `progress` wraps
    the payments being checked (a progress bar).
    """
    repository = repository or get_order_repository()
    gateway = gateway or get_payment_gateway()
    candidates = _reconcile_candidates(since=since, repository=repository)
    changes = []
    for payment in progress(candidates) if progress else candidates:
        change = _reconcile_payment(payment, gateway=gateway, repository=repository, dry_run=dry_run)
        if change is not None:
            changes.append(change)
    return changes


def _reconcile_candidates(*, since: datetime, repository: OrderRepository) -> list[Payment]:
    recent = list(Payment.objects.filter(created_at__gte=since).order_by("created_at", "attempt"))
    latest_attempts = _latest_attempts({p.order_id for p in recent})
    order_statuses: dict[uuid.UUID, OrderStatus | None] = {}
    candidates = []
    for payment in recent:
        if payment.status in OPEN_PAYMENT_STATUSES:
            candidates.append(payment)
            continue
        latest = latest_attempts.get(payment.order_id) == payment.attempt
        if not (
            payment.status == PaymentStatus.SUCCEEDED or (payment.status == PaymentStatus.FAILED and latest)
        ):
            continue  # a canceled attempt, or a failed one with a newer attempt: nothing to disagree
        if payment.order_id not in order_statuses:
            try:
                order_statuses[payment.order_id] = OrderStatus(repository.get(payment.order_id).status)
            except OrderError:
                order_statuses[payment.order_id] = None  # checked (and reported) below
        order_status = order_statuses[payment.order_id]
        if (
            order_status is None
            or _order_target(PaymentStatus(payment.status), order_status, latest=latest) != order_status
        ):
            candidates.append(payment)
    return candidates


def _latest_attempts(order_ids: set[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = (
        Payment.objects.filter(order_id__in=order_ids)
        .order_by()
        .values("order_id")
        .annotate(latest=Max("attempt"))
        .values_list("order_id", "latest")
    )
    return dict(rows)


def _reconcile_payment(
    payment: Payment, *, gateway: PaymentGateway, repository: OrderRepository, dry_run: bool
) -> ReconcileChange | None:
    payment.refresh_from_db()  # a webhook may have got here since the list was made
    before = PaymentStatus(payment.status)
    order_before = ""

    def report(*, payment_after: str, order_after: str, intent_id: str, error: str = "") -> ReconcileChange:
        return ReconcileChange(
            payment_id=payment.id,
            order_id=payment.order_id,
            attempt=payment.attempt,
            intent_id=intent_id,
            payment_before=before.value,
            payment_after=payment_after,
            order_before=order_before,
            order_after=order_after,
            error=error,
        )

    try:
        order_before = str(repository.get(payment.order_id).status)
        intent = payment_find_intent(payment=payment, gateway=gateway)
    except (OrderError, GatewayError, GatewayRequestRefused) as exc:
        return report(
            payment_after=before.value,
            order_after=order_before,
            intent_id=payment.intent_id or "",
            error=f"{type(exc).__name__}: {exc}",
        )
    if intent is None:
        # Stripe never saw this attempt: a new confirm claims it again (same idempotency key).
        return None
    intent_id = intent.intent_id or payment.intent_id or ""
    if dry_run:
        after = _advance(before, intent) or before
        latest = _latest_attempts({payment.order_id}).get(payment.order_id) == payment.attempt
        order_after = str(_order_target(after, OrderStatus(order_before), latest=latest))
    else:
        try:
            after = PaymentStatus(
                payment_apply_intent(
                    payment_id=payment.id, intent=intent, actor=RECONCILE_ACTOR, repository=repository
                ).payment.status
            )
            order_after = str(repository.get(payment.order_id).status)
        except OrderError as exc:
            return report(
                payment_after=before.value,
                order_after=order_before,
                intent_id=intent_id,
                error=f"{type(exc).__name__}: {exc}",
            )
    if after == before and order_after == order_before and intent_id == (payment.intent_id or ""):
        return None
    return report(payment_after=after.value, order_after=order_after, intent_id=intent_id)


# Pending refunds older than this are looked up at Stripe: the call that made them is long over.
PENDING_REFUND_GRACE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class RefundReconcileChange:
    refund_id: uuid.UUID
    order_id: uuid.UUID
    status_before: str
    status_after: str
    error: str = ""


def refund_reconcile_pending(
    *,
    older_than: timedelta = PENDING_REFUND_GRACE,
    gateway: PaymentGateway | None = None,
    repository: OrderRepository | None = None,
    dry_run: bool = False,
) -> list[RefundReconcileChange]:
    """Settle refunds left pending because Stripe's answer never came back.

    Each is looked up among its intent's refunds by the `refund_id` in their metadata: found, it
    is applied like any answer; not found, Stripe never made it (our request carried a key of its
    own, so it will not happen later), and it is marked failed, which frees its amount.
    """
    gateway = gateway or get_payment_gateway()
    stuck = Refund.objects.filter(
        status=RefundStatus.PENDING, updated_at__lt=timezone.now() - older_than
    ).select_related("payment")
    changes = []
    for refund in stuck:
        try:
            after = _settle_pending_refund(refund, gateway=gateway, repository=repository, dry_run=dry_run)
        except Exception as exc:  # noqa: BLE001 - one refund that cannot be settled stops no other
            logger.warning("Could not settle pending refund %s: %s", refund.id, exc)
            changes.append(
                RefundReconcileChange(
                    refund_id=refund.id,
                    order_id=refund.payment.order_id,
                    status_before=refund.status,
                    status_after=refund.status,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
            continue
        changes.append(
            RefundReconcileChange(
                refund_id=refund.id,
                order_id=refund.payment.order_id,
                status_before=refund.status,
                status_after=after,
            )
        )
    return changes


def _settle_pending_refund(
    refund: Refund, *, gateway: PaymentGateway, repository: OrderRepository | None, dry_run: bool
) -> str:
    found = [
        r
        for r in gateway.find_refunds(intent_id=refund.payment.intent_id or "")
        if r.metadata.get("refund_id") == str(refund.id)
        or (refund.provider_refund_id and r.refund_id == refund.provider_refund_id)
    ]
    after = _refund_status(found[0].status) if found else RefundStatus.FAILED
    if not dry_run:
        if found:
            refund_apply(refund_id=refund.id, result=found[0], actor=RECONCILE_ACTOR, repository=repository)
        else:
            Refund.objects.filter(id=refund.id, status=RefundStatus.PENDING).update(
                status=RefundStatus.FAILED, failure_message="Stripe never received this refund."
            )
    return str(after)


# How often reconciliation asks Stripe to refund an unwanted charge before it leaves it to staff.
REVERSE_TRIES = 3


def payment_reverse_pending(*, dry_run: bool = False, gateway: PaymentGateway | None = None) -> list[str]:
    """Refund the reversed payments (unwanted charges) whose automatic refund never got to
    Stripe. Returns one line per payment: what was (or would be) done, or why it could not."""
    lines = []
    for payment in Payment.objects.filter(status=PaymentStatus.REVERSED):
        left = payment.amount_received_minor - refunded_minor(payment)
        if left <= 0:
            continue
        refused = payment.refunds.filter(status=RefundStatus.FAILED).count()
        if refused >= REVERSE_TRIES:
            _alert(
                "Payment %s of order %s was not wanted, and Stripe refused its refund %s times: refund it by hand",
                payment.id,
                payment.order_id,
                refused,
                extra={
                    "event": "payment.reversed",
                    "order_id": payment.order_id,
                    "error_class": "ReverseRefused",
                },
            )
            lines.append(
                f"payment {payment.id} (order {payment.order_id}): needs a refund by hand ({refused} refused)"
            )
            continue
        if dry_run:
            lines.append(f"[dry run] payment {payment.id} (order {payment.order_id}): would refund {left}")
            continue
        try:
            refund = payment_reverse(payment_id=payment.id, gateway=gateway)
        except Exception as exc:  # noqa: BLE001 - reported; the next run tries again
            lines.append(f"payment {payment.id} (order {payment.order_id}) could not be refunded: {exc}")
            continue
        if refund is not None:
            lines.append(f"payment {payment.id} (order {payment.order_id}): refunded {refund.amount_minor}")
    return lines
