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

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, Sum
from django.utils import timezone

from orders import services as order_services
from orders.domain import CORRECTIONS, Actor, EventType, Order, OrderError, OrderStatus, can_transition
from orders.repositories import OrderRepository, get_order_repository
from payments.gateways.base import (
    GatewayConflict,
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
from payments.models import (
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    SyncCursor,
    WebhookEvent,
    WebhookRefusal,
    WebhookResult,
)
from payments.selectors import refunded_minor

logger = logging.getLogger(__name__)


# A claimed attempt that has not reached Stripe after this long is tried again (same key): longer
# than the create-and-confirm calls can take (three calls of up to STRIPE_TIMEOUT_SECONDS), and
# than Stripe's search takes to see a new intent (about a minute).
def stale_claim() -> timedelta:
    return timedelta(seconds=max(90, 3 * int(settings.STRIPE_TIMEOUT_SECONDS) + 30))


PAYABLE_STATUSES = frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.PAYMENT_FAILED})
REFUNDABLE_STATUSES = frozenset({OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED})


class PaymentError(OrderError):
    """Base of the payment errors the API maps to HTTP answers."""


class PaymentNotAllowed(PaymentError):
    pass


class PaymentInProgress(PaymentError):
    pass


class PaymentConflict(PaymentError):
    """Stripe refused a request as an idempotency conflict (answered 409)."""


class RefundRefused(PaymentError):
    def __init__(self, message: str, *, field: str = "amount_minor") -> None:
        super().__init__(message)
        self.fields = {field: [message]}


def _alert(message: str, *args: Any, extra: dict[str, Any]) -> None:
    """Log an event that alerts staff (monitoring.observer), once the transaction commits: a
    change that rolls back alerts no one, and the alert's own writes never wait on our locks."""
    transaction.on_commit(lambda: logger.error(message, *args, extra=extra))


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
        # The attempt's own parameters, stored when it was claimed: a stuck attempt claimed
        # again repeats the same request under the same key, which Stripe answers with the
        # first outcome; a different payment method would be an idempotency conflict.
        result = gateway.create_intent(
            IntentRequest(
                order_id=str(order.id),
                attempt=payment.attempt,
                amount_minor=payment.amount_minor,
                currency=payment.currency,
                payment_method=payment.payment_method or payment_method,
                idempotency_key=f"order:{order.id}:payment:{payment.attempt}",
            )
        )
    except GatewayConflict as exc:
        return _settle_conflict(payment, exc, gateway=gateway, actor=actor, repository=repository)
    except GatewayRequestRefused as exc:
        result = _refused(payment, exc)
    return payment_apply_intent(payment_id=payment.id, intent=result, actor=actor, repository=repository)


def _refused(payment: Payment, exc: GatewayRequestRefused) -> IntentResult:
    """A refusal as the report of a failed attempt (the order may be paid with a new one)."""
    return IntentResult(
        intent_id="",
        status=IntentStatus.REQUIRES_PAYMENT_METHOD,
        amount_minor=payment.amount_minor,
        amount_received_minor=0,
        currency=payment.currency,
        error_code=exc.code or "refused",
        error_message=str(exc),
    )


def _settle_conflict(
    payment: Payment,
    exc: GatewayConflict,
    *,
    gateway: PaymentGateway,
    actor: Actor,
    repository: OrderRepository,
) -> Payment:
    """Stripe saw this attempt's key with other parameters. Its intent, if it made one, is the
    truth. If Stripe's search finds none, it may not see it yet (search lags by up to a minute):
    the attempt stays open, marked, and the caller is told to wait (409 payment_in_progress).
    When the attempt is claimed again after `stale_claim()` and search still finds nothing, no
    intent was made: the attempt fails (409 idempotency_conflict) and the next confirm starts a
    new attempt with a new key. Never a failure while a charge may exist."""
    logger.warning(
        "Stripe refused attempt %s of order %s as an idempotency conflict: %s",
        payment.attempt,
        payment.order_id,
        exc,
        extra={"event": "payment.failed", "order_id": payment.order_id, "error_class": "idempotency_error"},
    )
    try:
        found = gateway.find_intents(order_id=str(payment.order_id), attempt=payment.attempt)
    except (GatewayError, GatewayRequestRefused):
        found = None
    if found:
        return payment_apply_intent(
            payment_id=payment.id, intent=found[0], actor=actor, repository=repository
        )
    if found is None or payment.failure_code != CONFLICT_CODE:
        Payment.objects.filter(id=payment.id, status=PaymentStatus.CREATING).update(
            failure_code=CONFLICT_CODE, failure_message=str(exc)[:500], updated_at=timezone.now()
        )
        raise PaymentInProgress(
            "Stripe is still settling an earlier request for this payment; try again in a minute or two."
        )
    payment_apply_intent(
        payment_id=payment.id, intent=_refused(payment, exc), actor=actor, repository=repository
    )
    raise PaymentConflict(
        "This payment attempt clashed with an earlier request to Stripe; nothing was charged. Try again."
    )


CONFLICT_CODE = "idempotency_error"


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
        if Payment.objects.filter(order_id=order.id, status=PaymentStatus.REVIEW).exists():
            raise PaymentInProgress("A payment of this order is held for review; staff will be in touch.")
        if order.status not in PAYABLE_STATUSES:
            raise PaymentNotAllowed(f"An order that is {order.status} cannot be paid.")
        if latest is not None and not latest.is_final:
            stuck = (
                latest.status == PaymentStatus.CREATING
                and not latest.intent_id
                and latest.updated_at < timezone.now() - stale_claim()
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
    PaymentStatus.REVIEW: 4,
    PaymentStatus.REVERSED: 4,
}


def _advance(current: PaymentStatus, intent: IntentResult) -> PaymentStatus | None:
    """The status a report of `intent` moves a payment to, or None if that would be backwards
    (a lower rank, or anything but success after a success)."""
    if current in {PaymentStatus.REVIEW, PaymentStatus.REVERSED}:
        return None  # decided: staff review it, or its money is on its way back
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
        order_id = Payment.objects.values_list("order_id", flat=True).get(id=payment_id)
        # Every attempt of the order, locked in one order: two of its attempts succeeding at
        # once are judged one after the other (the second is then an unwanted charge).
        attempts = {
            p.id: p for p in Payment.objects.select_for_update().filter(order_id=order_id).order_by("attempt")
        }
        payment = attempts[payment_id]
        if event_created and event_created < payment.last_event_created:
            return payment, True
        if payment.intent_id and intent.intent_id and intent.intent_id != payment.intent_id:
            return payment, True  # another intent's report: never replaces the one we know
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
        payment.intent_id = intent.intent_id or payment.intent_id
        payment.client_secret = intent.client_secret or payment.client_secret
        payment.amount_received_minor = max(payment.amount_received_minor, intent.amount_received_minor)
        payment.last_event_created = max(payment.last_event_created, event_created)
        if new_status == PaymentStatus.SUCCEEDED and current != PaymentStatus.SUCCEEDED:
            new_status = _judge_success(repository, payment, intent)
        payment.status = new_status
        payment.save()
        if new_status in {PaymentStatus.REVIEW, PaymentStatus.REVERSED}:
            _set_aside(repository, payment, actor)
        else:
            _sync_order(repository, payment, actor)
    return payment, False


def _judge_success(repository: OrderRepository, payment: Payment, intent: IntentResult) -> PaymentStatus:
    """What money that arrived for `payment` is: the order's payment (`succeeded`), something
    that does not match what we asked for (`review`), or a charge the order did not want
    (`reversed`: a second payment, or one after the order was cancelled). Sets the reason."""
    problems = []
    if intent.currency.upper() != payment.currency.upper():
        problems.append(f"currency {intent.currency.upper()}, not {payment.currency.upper()}")
    received = intent.amount_received_minor
    if received != payment.amount_minor:
        problems.append(f"{received} received, not {payment.amount_minor}")
    if intent.metadata.get("order_id") != str(payment.order_id):
        problems.append(f"its metadata names order {intent.metadata.get('order_id') or '(none)'}")
    if problems:
        payment.review_reason = (
            f"PaymentIntent {intent.intent_id} does not match the order: {'; '.join(problems)}."
        )
        return PaymentStatus.REVIEW
    order = repository.get(payment.order_id)
    other = (
        Payment.objects.filter(order_id=payment.order_id, status=PaymentStatus.SUCCEEDED)
        .exclude(id=payment.id)
        .first()
    )
    if other is not None:
        payment.review_reason = f"The order was already paid by attempt {other.attempt}."
        return PaymentStatus.REVERSED
    if order.status not in PAYABLE_STATUSES:
        payment.review_reason = f"The order was {order.status} when this payment succeeded."
        return PaymentStatus.REVERSED
    return PaymentStatus.SUCCEEDED


def _set_aside(repository: OrderRepository, payment: Payment, actor: Actor) -> None:
    """Record on the order why its payment is held for review or reversed, and alert staff; a
    reversed payment is refunded in full once the transaction commits (the refund calls Stripe;
    reconciliation retries it if that fails)."""
    held = payment.status == PaymentStatus.REVIEW
    _alert(
        "Payment %s of order %s is %s: %s",
        payment.id,
        payment.order_id,
        "held for review" if held else "not wanted and is refunded automatically",
        payment.review_reason,
        extra={
            "event": "payment.review" if held else "payment.reversed",
            "order_id": payment.order_id,
            "error_class": "PaymentHeld" if held else "PaymentReversed",
        },
    )
    order_services.order_record_event(
        repository=repository,
        order_id=payment.order_id,
        event_type=EventType.PAYMENT_HELD if held else EventType.PAYMENT_REVERSED,
        actor=actor,
        data={
            "payment_id": str(payment.id),
            "intent_id": payment.intent_id or "",
            "amount_minor": payment.amount_received_minor,
            "currency": payment.currency,
            "reason": payment.review_reason,
        },
    )
    if not held:
        payment_id = payment.id
        transaction.on_commit(lambda: _reverse_quietly(payment_id, repository))


def payment_review_decide(
    *, payment_id: uuid.UUID, accept: bool, actor: Actor, repository: OrderRepository | None = None
) -> Payment:
    """Staff decide on a payment held for review: accept it as the order's payment (the order
    becomes paid, whatever the mismatch was), or refuse it (it is refunded in full)."""
    repository = repository or get_order_repository()
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(id=payment_id)
        if payment.status != PaymentStatus.REVIEW:
            raise PaymentNotAllowed(f"Payment {payment.id} is {payment.status}, not held for review.")
        if accept:
            order = repository.get(payment.order_id)
            paid = Payment.objects.filter(order_id=payment.order_id, status=PaymentStatus.SUCCEEDED).exists()
            if paid or order.status not in PAYABLE_STATUSES:
                raise PaymentNotAllowed(
                    f"The order is {order.status}{' and already paid' if paid else ''}: refund this payment instead."
                )
        payment.status = PaymentStatus.SUCCEEDED if accept else PaymentStatus.REVERSED
        payment.review_reason = f"{payment.review_reason} {'Accepted' if accept else 'Refused'} by {actor}."[
            :500
        ]
        payment.save()
        if accept:
            _sync_order(repository, payment, actor)
        else:
            _set_aside(repository, payment, actor)
    return payment


def _reverse_quietly(payment_id: uuid.UUID, repository: OrderRepository) -> None:
    try:
        payment_reverse(payment_id=payment_id, repository=repository)
    except Exception:  # reconciliation finds the reversed payment and tries again
        logger.exception("The automatic refund of payment %s failed; reconciliation will retry", payment_id)


def payment_reverse(
    *, payment_id: uuid.UUID, repository: OrderRepository | None = None, gateway: PaymentGateway | None = None
) -> Refund | None:
    """Refund what is left of a reversed payment (an unwanted charge), once: a refund already
    under way or done is not repeated. Returns the refund, or None when nothing is left."""
    repository = repository or get_order_repository()
    gateway = gateway or get_payment_gateway()
    with transaction.atomic():
        payment = Payment.objects.select_for_update().get(id=payment_id)
        if payment.status != PaymentStatus.REVERSED:
            return None
        left = payment.amount_received_minor - refunded_minor(payment)
        if left <= 0:
            return None
        refund = Refund.objects.create(
            payment=payment,
            amount_minor=left,
            reason=f"Automatic: {payment.review_reason}"[:500],
            actor=str(REVERSE_ACTOR),
        )
    return _refund_at_provider(refund, payment, gateway=gateway, actor=REVERSE_ACTOR, repository=repository)


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
        found = gateway.find_intents(order_id=str(payment.order_id), attempt=payment.attempt)
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
    return _refund_at_provider(refund, payment, gateway=gateway, actor=actor, repository=repository)


def _refund_at_provider(
    refund: Refund, payment: Payment, *, gateway: PaymentGateway, actor: Actor, repository: OrderRepository
) -> Refund:
    """Ask Stripe for the refund recorded (pending) as `refund`, under a key of its own, with our
    id in its metadata: whichever arrives first, this answer or Stripe's `refund.*` webhook,
    completes the same row."""
    try:
        result = gateway.refund(
            RefundRequest(
                intent_id=payment.intent_id or "",
                amount_minor=refund.amount_minor,
                idempotency_key=f"refund:{refund.id}",
                metadata={"refund_id": str(refund.id), "order_id": str(payment.order_id)},
            )
        )
    except GatewayRequestRefused as exc:
        Refund.objects.filter(id=refund.id, status=RefundStatus.PENDING).update(
            status=RefundStatus.FAILED, failure_message=str(exc)[:500]
        )
        logger.warning(
            "Stripe refused a refund of order %s: %s",
            payment.order_id,
            exc,
            extra={"event": "refund.refused", "order_id": payment.order_id, "error_class": "RefundRefused"},
        )
        raise RefundRefused(f"Stripe refused the refund: {exc}", field="non_field_errors") from exc
    return refund_apply(refund_id=refund.id, result=result, actor=actor, repository=repository)


# How far along a refund is (Stripe's statuses): a report never moves one back. A refund that
# succeeded may still fail later (the card was closed); failed and canceled are final.
_REFUND_RANK = {
    RefundStatus.PENDING: 0,
    RefundStatus.SUCCEEDED: 1,
    RefundStatus.FAILED: 2,
    RefundStatus.CANCELED: 2,
}


def _refund_status(reported: str) -> RefundStatus:
    return RefundStatus(reported) if reported in RefundStatus.values else RefundStatus.PENDING


def refund_apply(
    *, refund_id: uuid.UUID, result: RefundResult, actor: Actor, repository: OrderRepository | None = None
) -> Refund:
    """Record the provider's word on a refund and move the order to match (idempotent; a report
    that would move the refund back is ignored)."""
    repository = repository or get_order_repository()
    with transaction.atomic():
        # The payment first, then the refund: every path that locks both does so in this order.
        payment_id = Refund.objects.values_list("payment_id", flat=True).get(id=refund_id)
        Payment.objects.select_for_update().filter(id=payment_id).first()
        refund = Refund.objects.select_for_update().get(id=refund_id)
        before = RefundStatus(refund.status)
        after = _refund_status(result.status)
        if result.refund_id and not refund.provider_refund_id:
            refund.provider_refund_id = result.refund_id
            refund.save(update_fields=["provider_refund_id", "updated_at"])
        if _REFUND_RANK[after] <= _REFUND_RANK[before]:
            return refund
        refund.status = after
        refund.failure_message = (result.error_message or result.error_code)[:500]
        refund.save()
        payment = refund.payment
        event_data = {
            "refund_id": str(refund.id),
            "provider_refund_id": refund.provider_refund_id or "",
            "amount_minor": refund.amount_minor,
            "currency": payment.currency,
            "reason": refund.reason,
        }
        if after == RefundStatus.SUCCEEDED:
            order_services.order_record_refund(
                repository=repository, order_id=payment.order_id, actor=actor, data=event_data
            )
        elif before == RefundStatus.SUCCEEDED:
            # The money did not reach the customer after all: staff must act (another way to pay
            # them back), and the order no longer counts it.
            _alert(
                "Refund %s of order %s failed after it succeeded (%s): the customer got nothing back",
                refund.provider_refund_id or refund.id,
                payment.order_id,
                refund.failure_message or "no reason given",
                extra={"event": "refund.failed", "order_id": payment.order_id, "error_class": "RefundFailed"},
            )
            order_services.order_record_event(
                repository=repository,
                order_id=payment.order_id,
                event_type=EventType.REFUND_FAILED,
                actor=actor,
                data=event_data | {"failure": refund.failure_message},
            )
        _sync_order_refunds(repository, payment, actor)
    return refund


def _sync_order_refunds(repository: OrderRepository, payment: Payment, actor: Actor) -> None:
    """Derive the order's status from the refunds that succeeded: paid, partially refunded or
    refunded; forward as refunds succeed, back (a correction) when one fails later."""
    if payment.status != PaymentStatus.SUCCEEDED:
        return  # a reversed or held payment's refunds are not the order's
    done = int(
        payment.refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(total=Sum("amount_minor"))["total"]
        or 0
    )
    if done >= payment.amount_received_minor:
        target = OrderStatus.REFUNDED
    else:
        target = OrderStatus.PARTIALLY_REFUNDED if done else OrderStatus.PAID
    order = repository.get(payment.order_id)
    if order.status == target:
        return
    data = {"refunded_minor": done, "payment_id": str(payment.id)}
    if order.status in REFUNDABLE_STATUSES and can_transition(order.status, target):
        _transition(repository, order.id, target, actor, data)
    elif target in CORRECTIONS.get(order.status, frozenset()):
        order_services.order_correct_status(
            repository=repository,
            order_id=order.id,
            to_status=target,
            actor=actor,
            reason="refund_failed",
            data=data,
        )


# --- webhooks -------------------------------------------------------------------------------
WEBHOOK_ACTOR = Actor.system("stripe-webhook")
REVERSE_ACTOR = Actor.system("payments")
INTENT_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "payment_intent.processing",
        "payment_intent.requires_action",
    }
)
# Events about one refund (data.object is the refund).
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
# Events about a charge's refunds (data.object is the charge, which no longer lists them).
CHARGE_REFUND_EVENTS = frozenset({"charge.refunded"})
DISPUTE_EVENTS = frozenset({"charge.dispute.created"})
# The event types the endpoint at Stripe must send (README; `manage.py stripe_webhook_endpoint`).
HANDLED_EVENTS = tuple(sorted(INTENT_EVENTS | REFUND_EVENTS | CHARGE_REFUND_EVENTS | DISPUTE_EVENTS))


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
    effects; on failure everything rolls back and the error is recorded on the event. What the
    event needs from Stripe is asked before the transaction opens: no lock waits on Stripe."""
    try:
        fetched = _fetch_for(WebhookEvent.objects.get(pk=event_pk))
        with transaction.atomic():
            stored = WebhookEvent.objects.select_for_update().get(pk=event_pk)
            if stored.processed_at is not None and not again:
                return stored
            stored.result = _dispatch(stored, fetched)
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


def _fetch_for(stored: WebhookEvent) -> list[RefundResult] | None:
    """The refunds a `charge.refunded` event is about, listed at Stripe (the charge no longer
    carries them); None for any other event, or when the charge is not one of our payments."""
    if stored.type not in CHARGE_REFUND_EVENTS:
        return None
    event = get_payment_gateway().parse_event(stored.payload)
    if event.charge is None or not event.charge.intent_id:
        return None
    if not Payment.objects.filter(intent_id=event.charge.intent_id).exists():
        return None
    return get_payment_gateway().find_refunds(intent_id=event.charge.intent_id)


def _dispatch(stored: WebhookEvent, fetched: list[RefundResult] | None = None) -> str:
    event = get_payment_gateway().parse_event(stored.payload)
    if stored.type in INTENT_EVENTS and event.intent is not None:
        return _dispatch_intent(event.intent, created=stored.created)
    if stored.type in REFUND_EVENTS and event.refund is not None:
        return _apply_refund_report(event.refund)
    if stored.type in CHARGE_REFUND_EVENTS and event.charge is not None:
        # The charge says only how much is refunded in all; its refunds are listed at Stripe.
        if fetched is None:
            return WebhookResult.UNKNOWN_PAYMENT
        results = {_apply_refund_report(r) for r in fetched}
        return WebhookResult.FLAGGED if WebhookResult.FLAGGED in results else WebhookResult.PROCESSED
    if stored.type in DISPUTE_EVENTS and event.payload["data"]["object"].get("object") == "dispute":
        return _dispute_opened(event.payload["data"]["object"])
    return WebhookResult.UNHANDLED


def _dispatch_intent(intent: IntentResult, *, created: int) -> str:
    payment = Payment.objects.filter(intent_id=intent.intent_id).first() if intent.intent_id else None
    if payment is None:
        payment = _payment_by_metadata(intent)
    if payment is None:
        return WebhookResult.UNKNOWN_PAYMENT
    _, stale = _apply_intent(payment_id=payment.id, intent=intent, actor=WEBHOOK_ACTOR, event_created=created)
    return WebhookResult.STALE if stale else WebhookResult.PROCESSED


def _payment_by_metadata(intent: IntentResult) -> Payment | None:
    """The payment an intent we do not know by id belongs to, by our metadata: the attempt that
    never learnt its intent id (we stopped mid-call). An intent for an attempt that already has
    another intent, if it took money, is an unexpected charge: recorded as a reversed payment of
    its own (refunded automatically), never put in place of the intent we know."""
    try:
        order_id = uuid.UUID(intent.metadata.get("order_id", ""))
    except ValueError:
        return None
    attempt = intent.metadata.get("attempt", "")
    candidate = (
        Payment.objects.filter(order_id=order_id, attempt=int(attempt)).first() if attempt.isdigit() else None
    )
    if candidate is not None and not candidate.intent_id:
        return candidate
    if not intent.succeeded or not Payment.objects.filter(order_id=order_id).exists():
        return None  # nothing taken, or not an order of ours
    latest = Payment.objects.filter(order_id=order_id).order_by("-attempt").first()
    order = get_order_repository().get(order_id)
    try:
        with transaction.atomic():
            # What the order asks for, so the intent is judged against the order, not itself.
            return Payment.objects.create(
                order_id=order_id,
                attempt=latest.attempt + 1,
                intent_id=intent.intent_id,
                amount_minor=order.total_minor,
                currency=order.currency,
                status=PaymentStatus.CREATING,
            )
    except IntegrityError:  # the same report, delivered twice at once
        return Payment.objects.filter(intent_id=intent.intent_id).first()


def _apply_refund_report(result: RefundResult) -> str:
    """Apply what Stripe says of one refund: to our row, found by Stripe's id or by the
    `refund_id` we put in its metadata (so the webhook and the API answer complete the same row,
    whichever comes first), or to a new row for a refund made elsewhere (the Dashboard),
    bounded by what is left of the payment."""
    refund = Refund.objects.filter(provider_refund_id=result.refund_id).first()
    if refund is None and result.metadata.get("refund_id"):
        try:
            refund = Refund.objects.filter(id=uuid.UUID(result.metadata["refund_id"])).first()
        except ValueError:
            refund = None
        if refund is not None and refund.provider_refund_id not in (None, "", result.refund_id):
            refund = None  # our id on another refund of Stripe's: not ours to complete
    flagged = False
    if refund is None:
        refund, flagged = _record_outside_refund(result)
        if refund is None:
            return WebhookResult.FLAGGED if flagged else WebhookResult.UNKNOWN_PAYMENT
    refund_apply(refund_id=refund.id, result=result, actor=WEBHOOK_ACTOR)
    return WebhookResult.FLAGGED if flagged or refund.flag else WebhookResult.PROCESSED


def _record_outside_refund(result: RefundResult) -> tuple[Refund | None, bool]:
    """A row for a refund made outside the system; (None, flagged) when there is nothing to
    record. Never more than what is left of the payment: the excess is flagged and alerted."""
    if not result.intent_id:
        return None, False
    with transaction.atomic():
        payment = Payment.objects.select_for_update().filter(intent_id=result.intent_id).first()
        if payment is None:
            return None, False
        existing = Refund.objects.filter(provider_refund_id=result.refund_id).first()
        if existing is not None:  # recorded while we waited for the lock
            return existing, False
        amount, flag = result.amount_minor, ""
        if _refund_status(result.status) in {RefundStatus.PENDING, RefundStatus.SUCCEEDED}:
            # What Stripe holds as refunded: ours that succeeded or that it acknowledged (a
            # pending row without Stripe's id may never have reached it).
            known = payment.refunds.filter(
                Q(status=RefundStatus.SUCCEEDED)
                | Q(status=RefundStatus.PENDING, provider_refund_id__isnull=False)
            ).aggregate(total=Sum("amount_minor"))["total"]
            left = max(0, payment.amount_received_minor - int(known or 0))
            if amount > left:
                flag = (
                    f"Stripe reported a refund of {amount} ({payment.currency}, minor units), but only {left}"
                    f" of the {payment.amount_received_minor} received was left: {amount - left} not counted."
                )
                _alert(
                    "Refund %s of order %s exceeds what was paid: %s",
                    result.refund_id,
                    payment.order_id,
                    flag,
                    extra={
                        "event": "refund.excess",
                        "order_id": payment.order_id,
                        "error_class": "RefundExcess",
                    },
                )
                amount = left
        if amount <= 0:
            return None, bool(flag)
        refund = Refund.objects.create(
            payment=payment,
            amount_minor=amount,
            provider_refund_id=result.refund_id,
            actor=str(WEBHOOK_ACTOR),
            reason="Made outside the system",
            flag=flag,
        )
    return refund, bool(flag)


def _dispute_opened(dispute: dict[str, Any]) -> str:
    intent_id = dispute.get("payment_intent") or ""
    payment = (
        Payment.objects.filter(intent_id=intent_id).first()
        if isinstance(intent_id, str) and intent_id
        else None
    )
    if payment is None:
        return WebhookResult.UNKNOWN_PAYMENT
    _alert(
        "The customer disputes payment %s of order %s (%s %s, reason %s): answer it in Stripe's Dashboard",
        payment.id,
        payment.order_id,
        dispute.get("amount"),
        str(dispute.get("currency") or "").upper(),
        dispute.get("reason") or "unknown",
        extra={"event": "payment.disputed", "order_id": payment.order_id, "error_class": "Dispute"},
    )
    return WebhookResult.FLAGGED


def webhook_refusal_record(*, reason: str, size: int, source: str | None, signed: bool) -> None:
    """Keep a record of a refused webhook request (never its body); only the newest
    STRIPE_WEBHOOK_REFUSALS_KEPT are kept, pruned every 100 records."""
    from django.conf import settings

    try:
        refusal = WebhookRefusal.objects.create(reason=reason[:300], size=size, source=source, signed=signed)
        if refusal.pk % 100 == 0:
            keep = int(settings.STRIPE_WEBHOOK_REFUSALS_KEPT)
            WebhookRefusal.objects.filter(pk__lte=refusal.pk - keep).delete()
    except Exception:  # the refusal is answered and logged even if it cannot be kept
        logger.exception("Could not record a refused webhook")


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
    found = gateway.find_intents(order_id=str(payment.order_id), attempt=payment.attempt)
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
