"""Paying an order: claiming an attempt, asking Stripe, and applying what Stripe reports.

Every path that learns a PaymentIntent's state (the confirm call, the page's return, a webhook,
reconciliation) goes through `payment_apply_intent`, which locks the payment row, ignores
anything older than what it already applied, and moves the order through the order state
machine at most once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from live import services as live
from orders import services as order_services
from orders.domain import Actor, EventType, Order, OrderStatus
from orders.repositories import OrderRepository, get_order_repository
from payments.gateways.base import (
    GatewayConflict,
    GatewayError,
    GatewayRequestRefused,
    IntentRequest,
    IntentResult,
    IntentStatus,
    PaymentGateway,
    get_payment_gateway,
)
from payments.models import Payment, PaymentStatus
from payments.services.common import PAYABLE_STATUSES, _alert, _transition
from payments.services.errors import PaymentConflict, PaymentInProgress, PaymentNotAllowed
from payments.services.refunds import payment_reverse

logger = logging.getLogger(__name__)


# A claimed attempt that has not reached Stripe after this long is tried again (same key): longer
# than the create-and-confirm calls can take (three calls of up to STRIPE_TIMEOUT_SECONDS), and
# than Stripe's search takes to see a new intent (about a minute).
def stale_claim() -> timedelta:
    return timedelta(seconds=max(90, 3 * int(settings.STRIPE_TIMEOUT_SECONDS) + 30))


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
    return payment_apply_intent(
        payment_id=payment.id, intent=result, actor=actor, repository=repository
    ).payment


def _refused(payment: Payment, exc: GatewayRequestRefused) -> IntentResult:
    """A refusal as the report of a failed attempt (the order may be paid with a new one)."""
    return IntentResult(
        intent_id="",
        status=IntentStatus.REQUIRES_PAYMENT_METHOD,
        amount_minor=payment.amount_minor,
        amount_received_minor=0,
        currency=payment.currency,
        error_code=exc.provider_code or "refused",
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
        ).payment
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


@dataclass(frozen=True, slots=True)
class IntentApplied:
    """What applying a report did: the payment as it now stands, and whether the report was
    stale (older than the last one applied, another intent's, or backwards) and so ignored."""

    payment: Payment
    stale: bool


def payment_apply_intent(
    *,
    payment_id: uuid.UUID,
    intent: IntentResult,
    actor: Actor,
    event_created: int = 0,
    repository: OrderRepository | None = None,
) -> IntentApplied:
    """Record what the provider says of the payment's intent and move the order to match.

    Idempotent: applying the same report twice changes nothing the second time. A report older
    than the last one applied (`event_created`), or one that would move the payment backwards
    (a failure after a success), is ignored (`stale`).
    """
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
            return IntentApplied(payment, stale=True)
        if payment.intent_id and intent.intent_id and intent.intent_id != payment.intent_id:
            # Another intent's report: never replaces the one we know.
            return IntentApplied(payment, stale=True)
        current = PaymentStatus(payment.status)
        new_status = _advance(current, intent)
        if new_status is None:
            return IntentApplied(payment, stale=True)
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
        payment.card_brand = intent.card_brand[:30] or payment.card_brand
        payment.card_last4 = intent.card_last4[:4] or payment.card_last4
        payment.amount_received_minor = max(payment.amount_received_minor, intent.amount_received_minor)
        payment.last_event_created = max(payment.last_event_created, event_created)
        if new_status == PaymentStatus.SUCCEEDED and current != PaymentStatus.SUCCEEDED:
            new_status = _judge_success(repository, payment, intent)
        payment.status = new_status
        payment.save()
        live.publish_order(payment.order_id)  # the attempt settled: the order page looks again
        if new_status in {PaymentStatus.REVIEW, PaymentStatus.REVERSED}:
            _set_aside(repository, payment, actor)
        else:
            _sync_order(repository, payment, actor)
    return IntentApplied(payment, stale=False)


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
    intent = payment_find_intent(payment=payment, gateway=gateway)
    if intent is None:
        return payment
    return payment_apply_intent(
        payment_id=payment.id, intent=intent, actor=actor, repository=repository
    ).payment


def payment_find_intent(*, payment: Payment, gateway: PaymentGateway) -> IntentResult | None:
    """The PaymentIntent of the payment's attempt at Stripe: by its id when we know it, else by
    the order id and attempt in the intents' metadata (the attempt never learnt its id, or we
    stopped mid-call); None when Stripe has none."""
    if payment.intent_id:
        return gateway.retrieve_intent(payment.intent_id)
    found = gateway.find_intents(order_id=str(payment.order_id), attempt=payment.attempt)
    return found[0] if found else None
