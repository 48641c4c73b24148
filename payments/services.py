"""Writes of the payments app: paying an order, applying what Stripe reports, refunds, webhooks.

Every path that learns a PaymentIntent's state (the confirm call, the page's return, a webhook,
reconciliation) goes through `payment_apply_intent`, which locks the payment row, ignores
anything older than what it already applied, and moves the order through the order state
machine at most once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Sum
from django.utils import timezone

from orders import services as order_services
from orders.domain import Actor, Order, OrderError, OrderStatus
from orders.repositories import OrderRepository, get_order_repository
from payments.gateways.base import (
    GatewayError,
    GatewayRequestRefused,
    IntentRequest,
    IntentResult,
    IntentStatus,
    PaymentGateway,
    RefundRequest,
    RefundResult,
    WebhookEventData,
    get_payment_gateway,
)
from payments.models import Payment, PaymentStatus, Refund, RefundStatus, WebhookEvent, WebhookResult
from payments.selectors import refunded_minor

logger = logging.getLogger(__name__)

# A claimed attempt that has not reached Stripe after this long is tried again (same key).
STALE_CLAIM = timedelta(seconds=60)
PAYABLE_STATUSES = frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.PAYMENT_FAILED})
REFUNDABLE_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED})


class PaymentError(OrderError):
    """Base of the payment errors the API maps to HTTP answers."""


class PaymentNotAllowed(PaymentError):
    pass


class PaymentInProgress(PaymentError):
    pass


class RefundRefused(PaymentError):
    def __init__(self, message: str, *, field: str = "amount_minor") -> None:
        super().__init__(message)
        self.fields = {field: [message]}


# --- paying ---------------------------------------------------------------------------------
def payment_confirm(
    *,
    order_id: uuid.UUID,
    payment_method: str,
    actor: Actor,
    repository: OrderRepository | None = None,
    gateway: PaymentGateway | None = None,
) -> Payment:
    """Pay the order with `payment_method`. Calling it again never charges twice.

    While an attempt is open, or once one has succeeded, that payment is returned unchanged; a
    new attempt (a new PaymentIntent) starts only after the last one failed.
    """
    repository = repository or get_order_repository()
    gateway = gateway or get_payment_gateway()
    order = repository.get(order_id)
    payment, claimed = _claim_attempt(order, payment_method)
    if not claimed:
        return payment
    if order.status == OrderStatus.PAYMENT_FAILED:
        _transition(
            repository, order.id, OrderStatus.PENDING_PAYMENT, actor, {"payment_attempt": payment.attempt}
        )
    try:
        result = gateway.create_intent(
            IntentRequest(
                order_id=str(order.id),
                attempt=payment.attempt,
                amount_minor=payment.amount_minor,
                currency=payment.currency,
                payment_method=payment_method,
                idempotency_key=f"order:{order.id}:payment:{payment.attempt}",
            )
        )
    except GatewayRequestRefused as exc:
        result = IntentResult(
            intent_id="",
            status=IntentStatus.REQUIRES_PAYMENT_METHOD,
            amount_minor=payment.amount_minor,
            amount_received_minor=0,
            currency=payment.currency,
            error_code=exc.code or "refused",
            error_message=str(exc),
        )
    return payment_apply_intent(payment_id=payment.id, intent=result, actor=actor, repository=repository)


def payment_setup_start(*, order_id: uuid.UUID, gateway: PaymentGateway | None = None) -> str:
    """A SetupIntent's client secret, with which Stripe.js turns card details into a payment
    method. One per try: a retry after a declined card must not get the used one back."""
    gateway = gateway or get_payment_gateway()
    return gateway.create_setup_intent(idempotency_key=f"order:{order_id}:setup:{uuid.uuid4().hex}")


def _claim_attempt(order: Order, payment_method: str) -> tuple[Payment, bool]:
    """The payment to use: the open or successful one, or a new attempt claimed by this call."""
    with transaction.atomic():
        latest = Payment.objects.select_for_update().filter(order_id=order.id).order_by("-attempt").first()
        if latest is not None and latest.status == PaymentStatus.SUCCEEDED:
            return latest, False
        if order.status not in PAYABLE_STATUSES:
            raise PaymentNotAllowed(f"An order that is {order.status} cannot be paid.")
        if latest is not None and not latest.is_final:
            stuck = (
                latest.status == PaymentStatus.CREATING
                and not latest.intent_id
                and latest.updated_at < timezone.now() - STALE_CLAIM
            )
            if not stuck:
                return latest, False
            latest.save(update_fields=["updated_at"])  # claim it again
            return latest, True
        try:
            with transaction.atomic():
                payment = Payment.objects.create(
                    order_id=order.id,
                    attempt=(latest.attempt + 1) if latest else 1,
                    amount_minor=order.total_minor,
                    currency=order.currency,
                    payment_method=payment_method,
                )
        except IntegrityError:
            # Another request claimed this attempt first: use theirs.
            return Payment.objects.filter(order_id=order.id).order_by("-attempt").first(), False
        return payment, True


def _payment_status(intent: IntentResult) -> PaymentStatus:
    if intent.succeeded:
        return PaymentStatus.SUCCEEDED
    if intent.status == IntentStatus.CANCELED:
        return PaymentStatus.CANCELED
    if intent.failed:
        return PaymentStatus.FAILED
    if intent.status == IntentStatus.REQUIRES_ACTION:
        return PaymentStatus.REQUIRES_ACTION
    if intent.status in {IntentStatus.PROCESSING, IntentStatus.REQUIRES_CAPTURE}:
        return PaymentStatus.PROCESSING
    return PaymentStatus.CREATING  # created, not yet confirmed


# How far along a payment is; a report never moves a payment to a lower rank.
_RANK = {
    PaymentStatus.CREATING: 0,
    PaymentStatus.REQUIRES_ACTION: 1,
    PaymentStatus.PROCESSING: 2,
    PaymentStatus.FAILED: 3,
    PaymentStatus.CANCELED: 3,
    PaymentStatus.SUCCEEDED: 4,
}


def _advance(current: PaymentStatus, intent: IntentResult) -> PaymentStatus | None:
    """The status a report of `intent` moves a payment to, or None if that would be backwards
    (a lower rank, or anything but success after a success)."""
    reported = _payment_status(intent)
    if _RANK[reported] < _RANK[current] or (
        current == PaymentStatus.SUCCEEDED and reported != PaymentStatus.SUCCEEDED
    ):
        return None
    return reported


def _order_target(payment_status: PaymentStatus, order_status: OrderStatus, *, latest: bool) -> OrderStatus:
    """The order status a payment in `payment_status` calls for (`latest`: it is the newest attempt)."""
    if payment_status == PaymentStatus.SUCCEEDED and order_status in PAYABLE_STATUSES:
        return OrderStatus.PAID
    if payment_status == PaymentStatus.FAILED and order_status == OrderStatus.PENDING_PAYMENT and latest:
        return OrderStatus.PAYMENT_FAILED
    return order_status


def payment_apply_intent(
    *,
    payment_id: uuid.UUID,
    intent: IntentResult,
    actor: Actor,
    event_created: int = 0,
    repository: OrderRepository | None = None,
) -> Payment:
    """Record what the provider says of the payment's intent and move the order to match.

    Idempotent: applying the same report twice changes nothing the second time. A report older
    than the last one applied (`event_created`), or one that would move the payment backwards
    (a failure after a success), is ignored.
    """
    payment, _ = _apply_intent(
        payment_id=payment_id, intent=intent, actor=actor, event_created=event_created, repository=repository
    )
    return payment


def _apply_intent(
    *,
    payment_id: uuid.UUID,
    intent: IntentResult,
    actor: Actor,
    event_created: int = 0,
    repository: OrderRepository | None = None,
) -> tuple[Payment, bool]:
    """`payment_apply_intent`, also saying whether the report was stale (and so ignored)."""
    repository = repository or get_order_repository()
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(id=payment_id)
        if event_created and event_created < payment.last_event_created:
            return payment, True
        current = PaymentStatus(payment.status)
        new_status = _advance(current, intent)
        if new_status is None:
            return payment, True
        if new_status == PaymentStatus.FAILED and current != PaymentStatus.FAILED:
            payment.failure_code = intent.error_code[:100]
            payment.failure_message = intent.error_message[:500]
            logger.warning(
                "Payment attempt %s of order %s failed: %s",
                payment.attempt,
                payment.order_id,
                payment.failure_message or "no reason given",
                extra={
                    "event": "payment.failed",
                    "order_id": payment.order_id,
                    "error_class": payment.failure_code or "payment_failed",
                },
            )
        payment.status = new_status
        payment.intent_id = intent.intent_id or payment.intent_id
        payment.client_secret = intent.client_secret or payment.client_secret
        payment.amount_received_minor = max(payment.amount_received_minor, intent.amount_received_minor)
        payment.last_event_created = max(payment.last_event_created, event_created)
        payment.save()
        _sync_order(repository, payment, actor)
    return payment, False


def _sync_order(repository: OrderRepository, payment: Payment, actor: Actor) -> None:
    """Move the order to what its payment says, if it is not there yet (never twice)."""
    order = repository.get(payment.order_id)
    latest = (
        Payment.objects.filter(order_id=order.id).order_by("-attempt").values_list("id", flat=True).first()
    )
    target = _order_target(PaymentStatus(payment.status), order.status, latest=latest == payment.id)
    data: dict[str, Any] = {
        "payment_id": str(payment.id),
        "attempt": payment.attempt,
        "intent_id": payment.intent_id or "",
    }
    if target == order.status:
        if payment.status == PaymentStatus.SUCCEEDED and order.status == OrderStatus.CANCELLED:
            logger.error(
                "Order %s was paid after it was cancelled (payment %s): refund it", order.id, payment.id
            )
        return
    if target == OrderStatus.PAID:
        if order.status == OrderStatus.PAYMENT_FAILED:  # the state machine goes through pending_payment
            _transition(repository, order.id, OrderStatus.PENDING_PAYMENT, actor, data)
        _transition(repository, order.id, OrderStatus.PAID, actor, data)
    elif target == OrderStatus.PAYMENT_FAILED:
        data |= {"failure_code": payment.failure_code, "failure_message": payment.failure_message}
        _transition(repository, order.id, OrderStatus.PAYMENT_FAILED, actor, data)


def _transition(
    repository: OrderRepository,
    order_id: uuid.UUID,
    to_status: OrderStatus,
    actor: Actor,
    data: dict[str, Any],
) -> None:
    order_services.order_transition(
        repository=repository, order_id=order_id, to_status=to_status, actor=actor, data=data
    )


def payment_sync(
    *,
    payment_id: uuid.UUID,
    actor: Actor,
    repository: OrderRepository | None = None,
    gateway: PaymentGateway | None = None,
) -> Payment:
    """Ask the provider for the payment's intent now and apply it (the page's return, reconciling)."""
    gateway = gateway or get_payment_gateway()
    payment = Payment.objects.get(id=payment_id)
    if not payment.intent_id:
        found = [
            i
            for i in gateway.find_intents(order_id=str(payment.order_id))
            if i.metadata.get("attempt") == str(payment.attempt)
        ]
        if not found:
            return payment
        intent = found[0]
    else:
        intent = gateway.retrieve_intent(payment.intent_id)
    return payment_apply_intent(payment_id=payment.id, intent=intent, actor=actor, repository=repository)


# --- refunds --------------------------------------------------------------------------------
def payment_refund(
    *,
    order_id: uuid.UUID,
    actor: Actor,
    amount_minor: int | None = None,
    reason: str = "",
    requested_by: Any = None,
    repository: OrderRepository | None = None,
    gateway: PaymentGateway | None = None,
) -> Refund:
    """Refund all that is left (no amount) or part of the order's payment.

    The sum of refunds never exceeds what was paid. A full refund makes the order `refunded`,
    a partial one `partially_refunded`.
    """
    repository = repository or get_order_repository()
    gateway = gateway or get_payment_gateway()
    order = repository.get(order_id)
    if order.status not in REFUNDABLE_STATUSES:
        raise PaymentNotAllowed(f"An order that is {order.status} cannot be refunded.")
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update()
            .filter(order_id=order_id, status=PaymentStatus.SUCCEEDED)
            .first()
        )
        if payment is None:
            raise PaymentNotAllowed("This order has no successful payment to refund.")
        left = payment.amount_received_minor - refunded_minor(payment)
        amount = left if amount_minor is None else amount_minor
        if amount <= 0:
            raise RefundRefused("A refund must be more than zero." if left else "Nothing is left to refund.")
        if amount > left:
            raise RefundRefused(f"At most {left} ({payment.currency}, minor units) can still be refunded.")
        refund = Refund.objects.create(
            payment=payment,
            amount_minor=amount,
            reason=reason[:500],
            actor=str(actor),
            requested_by=requested_by,
        )
    try:
        result = gateway.refund(
            RefundRequest(
                intent_id=payment.intent_id or "",
                amount_minor=amount,
                idempotency_key=f"refund:{refund.id}",
                metadata={"refund_id": str(refund.id), "order_id": str(order_id)},
            )
        )
    except GatewayRequestRefused as exc:
        Refund.objects.filter(id=refund.id).update(status=RefundStatus.FAILED, failure_message=str(exc)[:500])
        logger.warning(
            "Stripe refused a refund of order %s: %s",
            order_id,
            exc,
            extra={"event": "refund.refused", "order_id": order_id, "error_class": "RefundRefused"},
        )
        raise RefundRefused(f"Stripe refused the refund: {exc}", field="non_field_errors") from exc
    return refund_apply(refund_id=refund.id, result=result, actor=actor, repository=repository)


def refund_apply(
    *, refund_id: uuid.UUID, result: RefundResult, actor: Actor, repository: OrderRepository | None = None
) -> Refund:
    """Record the provider's word on a refund and move the order to match."""
    repository = repository or get_order_repository()
    with transaction.atomic():
        refund = Refund.objects.select_for_update().select_related("payment").get(id=refund_id)
        if refund.status != RefundStatus.SUCCEEDED:
            refund.status = result.status if result.status in RefundStatus.values else RefundStatus.PENDING
            refund.provider_refund_id = result.refund_id or refund.provider_refund_id
            refund.failure_message = result.error_message or result.error_code
            refund.save()
            if refund.status == RefundStatus.SUCCEEDED:
                order_services.order_record_refund(
                    repository=repository,
                    order_id=refund.payment.order_id,
                    actor=actor,
                    data={
                        "refund_id": str(refund.id),
                        "provider_refund_id": refund.provider_refund_id or "",
                        "amount_minor": refund.amount_minor,
                        "currency": refund.payment.currency,
                        "reason": refund.reason,
                    },
                )
        _sync_order_refunds(repository, refund.payment, actor)
    return refund


def _sync_order_refunds(repository: OrderRepository, payment: Payment, actor: Actor) -> None:
    done = (
        payment.refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(total=Sum("amount_minor"))["total"]
        or 0
    )
    if not done:
        return
    target = OrderStatus.REFUNDED if done >= payment.amount_received_minor else OrderStatus.PARTIALLY_REFUNDED
    order = repository.get(payment.order_id)
    if order.status == target or order.status == OrderStatus.REFUNDED:
        return
    data = {"refunded_minor": int(done), "payment_id": str(payment.id)}
    if order.status in REFUNDABLE_STATUSES:
        _transition(repository, order.id, target, actor, data)


# --- webhooks -------------------------------------------------------------------------------
WEBHOOK_ACTOR = Actor.system("stripe-webhook")
INTENT_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
        "payment_intent.requires_action",
    }
)
REFUND_EVENTS = frozenset({"charge.refunded", "refund.created", "refund.updated", "charge.refund.updated"})


def webhook_receive(*, event: WebhookEventData) -> WebhookEvent:
    """Store a verified event once and process it. A repeat delivery of a processed event
    changes nothing; a processing failure is recorded on the event and raised (answer 500)."""
    try:
        with transaction.atomic():
            stored, created = WebhookEvent.objects.get_or_create(
                event_id=event.id,
                defaults={"type": event.type, "created": event.created, "payload": event.payload},
            )
    except IntegrityError:  # the same event arriving twice at once
        stored, created = WebhookEvent.objects.get(event_id=event.id), False
    if not created:
        WebhookEvent.objects.filter(pk=stored.pk).update(deliveries=F("deliveries") + 1)
        if stored.processed_at is not None:
            return stored
    return webhook_process(event_pk=stored.pk)


def webhook_process(*, event_pk: int, again: bool = False) -> WebhookEvent:
    """Apply a stored event (again, with `again`, for a replay), in one transaction with its
    effects; on failure everything rolls back and the error is recorded on the event."""
    try:
        with transaction.atomic():
            stored = WebhookEvent.objects.select_for_update().get(pk=event_pk)
            if stored.processed_at is not None and not again:
                return stored
            stored.result = _dispatch(stored)
            stored.processed_at = timezone.now()
            stored.error = ""
            stored.attempts += 1
            stored.save()
            return stored
    except Exception as exc:
        WebhookEvent.objects.filter(pk=event_pk).update(
            result=WebhookResult.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:2000],
            attempts=F("attempts") + 1,
        )
        logger.exception(
            "Webhook event %s failed: %s",
            event_pk,
            exc,
            extra={"event": "webhook.failed", "error_class": type(exc).__name__},
        )
        raise


def _dispatch(stored: WebhookEvent) -> str:
    event = get_payment_gateway().parse_event(stored.payload)
    if stored.type in INTENT_EVENTS and event.intent is not None:
        intent = event.intent
        payment = Payment.objects.filter(intent_id=intent.intent_id).first()
        if (
            payment is None
            and intent.metadata.get("order_id")
            and intent.metadata.get("attempt", "").isdigit()
        ):
            # Our record of this attempt never learnt its intent id (we stopped mid-call).
            payment = Payment.objects.filter(
                order_id=intent.metadata["order_id"], attempt=int(intent.metadata["attempt"])
            ).first()
        if payment is None:
            return WebhookResult.UNKNOWN_PAYMENT
        _, stale = _apply_intent(
            payment_id=payment.id, intent=intent, actor=WEBHOOK_ACTOR, event_created=stored.created
        )
        return WebhookResult.STALE if stale else WebhookResult.PROCESSED
    if stored.type in REFUND_EVENTS:
        handled = False
        for result in event.refunds:
            refund = Refund.objects.filter(provider_refund_id=result.refund_id).first()
            if refund is None:
                payment = Payment.objects.filter(intent_id=result.intent_id).first()
                if payment is None:
                    continue
                # A refund made outside the system (Stripe's dashboard): record it too.
                refund = Refund.objects.create(
                    payment=payment,
                    amount_minor=result.amount_minor,
                    provider_refund_id=result.refund_id,
                    actor=str(WEBHOOK_ACTOR),
                    reason="Made outside the system",
                )
            refund_apply(refund_id=refund.id, result=result, actor=WEBHOOK_ACTOR)
            handled = True
        return WebhookResult.PROCESSED if handled else WebhookResult.UNKNOWN_PAYMENT
    return WebhookResult.UNHANDLED


# --- reconciliation -------------------------------------------------------------------------
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
        intent = _intent_of(payment, gateway)
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
                ).status
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


def _intent_of(payment: Payment, gateway: PaymentGateway) -> IntentResult | None:
    if payment.intent_id:
        return gateway.retrieve_intent(payment.intent_id)
    found = [
        intent
        for intent in gateway.find_intents(order_id=str(payment.order_id))
        if intent.metadata.get("attempt") == str(payment.attempt)
    ]
    return found[0] if found else None


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
            found = [
                r
                for r in gateway.find_refunds(intent_id=refund.payment.intent_id or "")
                if r.metadata.get("refund_id") == str(refund.id)
            ]
        except (GatewayError, GatewayRequestRefused) as exc:
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
        after = found[0].status if found else RefundStatus.FAILED
        if not dry_run:
            if found:
                refund_apply(
                    refund_id=refund.id, result=found[0], actor=RECONCILE_ACTOR, repository=repository
                )
            else:
                Refund.objects.filter(id=refund.id, status=RefundStatus.PENDING).update(
                    status=RefundStatus.FAILED, failure_message="Stripe never received this refund."
                )
        changes.append(
            RefundReconcileChange(
                refund_id=refund.id,
                order_id=refund.payment.order_id,
                status_before=refund.status,
                status_after=after,
            )
        )
    return changes
