"""Stripe's webhook events: stored once, applied in one transaction with their effects.

Intent events go through `payment_apply_intent`, refund events through `refund_apply`; a refund
made outside the system (the Dashboard) gets a row of its own, and a dispute alerts staff. The
card that paid is recorded from `payment_intent.succeeded` (its charge read from Stripe) and from
`charge.succeeded` (which carries it), for a payment that settles without our confirm call.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from live import services as live
from orders.domain import Actor
from orders.money import format_money
from orders.repositories import get_order_repository
from payments.gateways.base import (
    ChargeResult,
    IntentResult,
    RefundResult,
    WebhookEventData,
    get_payment_gateway,
)
from payments.models import (
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
    WebhookRefusal,
    WebhookResult,
)
from payments.services.common import _alert
from payments.services.paying import payment_apply_intent
from payments.services.refunds import _refund_status, refund_apply

logger = logging.getLogger(__name__)

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
# Events about one refund (data.object is the refund).
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
# Events about a charge's refunds (data.object is the charge, which no longer lists them).
CHARGE_REFUND_EVENTS = frozenset({"charge.refunded"})
DISPUTE_EVENTS = frozenset({"charge.dispute.created"})
# Events about a charge that took the money (data.object is the charge, with the card that paid).
CHARGE_EVENTS = frozenset({"charge.succeeded"})
# The event types the endpoint at Stripe must send (README; `manage.py stripe_webhook_endpoint`).
HANDLED_EVENTS = tuple(
    sorted(INTENT_EVENTS | REFUND_EVENTS | CHARGE_REFUND_EVENTS | DISPUTE_EVENTS | CHARGE_EVENTS)
)


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


@dataclass(frozen=True, slots=True)
class _Fetched:
    """What an event needs from Stripe, asked before the transaction opens."""

    refunds: list[RefundResult] | None = None  # a charge.refunded's refunds (None: not ours)
    intent: IntentResult | None = None  # a payment_intent.succeeded's intent, with its card


def _fetch_for(stored: WebhookEvent) -> _Fetched:
    """The refunds a `charge.refunded` event is about, listed at Stripe (the charge no longer
    carries them), when the charge is one of our payments; the card that paid a succeeded
    intent; nothing for any other event."""
    if stored.type == "payment_intent.succeeded":
        return _Fetched(intent=_intent_with_card(get_payment_gateway().parse_event(stored.payload).intent))
    if stored.type not in CHARGE_REFUND_EVENTS:
        return _Fetched()
    event = get_payment_gateway().parse_event(stored.payload)
    if event.charge is None or not event.charge.intent_id:
        return _Fetched()
    if not Payment.objects.filter(intent_id=event.charge.intent_id).exists():
        return _Fetched()
    return _Fetched(refunds=get_payment_gateway().find_refunds(intent_id=event.charge.intent_id))


def _intent_with_card(intent: IntentResult | None) -> IntentResult | None:
    """A succeeded intent, as an event reports it, with the card that paid; None when there is
    nothing to add. The event names the intent's latest charge by id only (a webhook cannot
    expand it), so the card is read from Stripe, once: only for a payment of ours whose card is
    not known yet (a repeat delivery or a replay asks nothing). A lookup that fails leaves the
    card blank and is logged; the event is applied all the same."""
    if intent is None or not intent.succeeded or not intent.intent_id or intent.card_last4:
        return None
    payment = _payment_of(intent_id=intent.intent_id, metadata=intent.metadata)
    if payment is None or payment.card_last4:
        return None
    try:
        found = get_payment_gateway().retrieve_intent(intent.intent_id)
    except Exception as exc:  # noqa: BLE001 - the card is a nicety: the payment settles without it
        found, failure = None, f"{type(exc).__name__}: {exc}"
    else:
        failure = ""
        if intent.charge_id and found.charge_id != intent.charge_id:
            failure = f"Stripe names charge {found.charge_id or '(none)'}, the event {intent.charge_id}"
        elif not found.card_last4:
            failure = f"charge {found.charge_id or '(none)'} names no card"
    if failure or found is None:
        logger.warning(
            "The card that paid %s (order %s) is not known: %s",
            intent.intent_id,
            payment.order_id,
            failure,
            extra={
                "event": "payment.card_unknown",
                "order_id": payment.order_id,
                "error_class": "CardLookup",
            },
        )
        return None
    return replace(intent, card_brand=found.card_brand, card_last4=found.card_last4)


def _payment_of(*, intent_id: str, metadata: dict[str, str]) -> Payment | None:
    """Our payment an intent is about, by its id or, if it has not learnt it, by our metadata."""
    payment = Payment.objects.filter(intent_id=intent_id).first()
    if payment is not None:
        return payment
    try:
        order_id = uuid.UUID(metadata.get("order_id", ""))
    except ValueError:
        return None
    attempt = metadata.get("attempt", "")
    if not attempt.isdigit():
        return None
    candidate = Payment.objects.filter(order_id=order_id, attempt=int(attempt)).first()
    # Its intent id may have been learnt between the two reads (the confirm answer racing this
    # event): then it is this intent's payment all the same.
    if candidate is None or (candidate.intent_id and candidate.intent_id != intent_id):
        return None
    return candidate


def _dispatch(stored: WebhookEvent, fetched: _Fetched | None = None) -> str:
    fetched = fetched or _Fetched()
    event = get_payment_gateway().parse_event(stored.payload)
    if stored.type in INTENT_EVENTS and event.intent is not None:
        return _dispatch_intent(fetched.intent or event.intent, created=stored.created)
    if stored.type in REFUND_EVENTS and event.refund is not None:
        return _apply_refund_report(event.refund)
    if stored.type in CHARGE_REFUND_EVENTS and event.charge is not None:
        # The charge says only how much is refunded in all; its refunds are listed at Stripe.
        if fetched.refunds is None:
            return WebhookResult.UNKNOWN_PAYMENT
        results = {_apply_refund_report(r) for r in fetched.refunds}
        return WebhookResult.FLAGGED if WebhookResult.FLAGGED in results else WebhookResult.PROCESSED
    if stored.type in CHARGE_EVENTS and event.charge is not None:
        return _record_card(event.charge)
    if stored.type in DISPUTE_EVENTS and event.payload["data"]["object"].get("object") == "dispute":
        return _dispute_opened(event.payload["data"]["object"])
    return WebhookResult.UNHANDLED


def _dispatch_intent(intent: IntentResult, *, created: int) -> str:
    payment = Payment.objects.filter(intent_id=intent.intent_id).first() if intent.intent_id else None
    if payment is None:
        payment = _payment_by_metadata(intent)
    if payment is None:
        return WebhookResult.UNKNOWN_PAYMENT
    applied = payment_apply_intent(
        payment_id=payment.id, intent=intent, actor=WEBHOOK_ACTOR, event_created=created
    )
    return WebhookResult.STALE if applied.stale else WebhookResult.PROCESSED


def _record_card(charge: ChargeResult) -> str:
    """The card a succeeded charge was paid with, on its payment if it has none yet (the first
    card recorded stands: a repeat changes nothing). The payment's status is the intent events'."""
    if charge.status != "succeeded" or not charge.intent_id:
        return WebhookResult.UNHANDLED
    # By the intent's id, or by our metadata (which a charge made by an intent carries) when the
    # attempt has not learnt its intent's id yet: this event may come before the intent's own.
    found = _payment_of(intent_id=charge.intent_id, metadata=charge.metadata)
    payment = Payment.objects.select_for_update().filter(id=found.id).first() if found else None
    if payment is None:
        return WebhookResult.UNKNOWN_PAYMENT
    if charge.card_last4 and not payment.card_last4:
        payment.card_brand = charge.card_brand[:30]
        payment.card_last4 = charge.card_last4[:4]
        payment.save(update_fields=["card_brand", "card_last4", "updated_at"])
        live.publish_order(payment.order_id)  # "Paid by card" becomes "Visa ending in 4242"
    return WebhookResult.PROCESSED


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
                currency = payment.currency  # staff read the flag: money, not minor units
                flag = (
                    f"Stripe reported a refund of {format_money(amount, currency)}, but only"
                    f" {format_money(left, currency)} of the"
                    f" {format_money(payment.amount_received_minor, currency)} received was left:"
                    f" {format_money(amount - left, currency)} not counted."
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
    try:
        refusal = WebhookRefusal.objects.create(reason=reason[:300], size=size, source=source, signed=signed)
        if refusal.pk % 100 == 0:
            keep = settings.STRIPE_WEBHOOK_REFUSALS_KEPT
            WebhookRefusal.objects.filter(pk__lte=refusal.pk - keep).delete()
    except Exception:  # the refusal is answered and logged even if it cannot be kept
        logger.exception("Could not record a refused webhook")


# Stripe retries an event for up to 3 days and lists it (the events sweep) for 30: a stored event
# is kept past both, or a late retry or a sweep would find it missing and apply it again.
WEBHOOK_EVENT_MIN_RETENTION = timedelta(days=31)


def webhook_events_prune(*, batch: int | None = None, deadline: float | None = None) -> int:
    """Delete stored webhook events older than WEBHOOK_EVENT_RETENTION_DAYS (never younger than
    WEBHOOK_EVENT_MIN_RETENTION, by Stripe's creation time and by our receipt), BATCH rows per
    DELETE, each its own short transaction. Events not processed, or whose processing failed (to
    be replayed), are kept. Stops after the batch that passes `deadline` (time.monotonic()).
    Returns how many were deleted."""
    batch = batch or settings.RETENTION_PRUNE_BATCH
    keep = max(timedelta(days=settings.WEBHOOK_EVENT_RETENTION_DAYS), WEBHOOK_EVENT_MIN_RETENTION)
    before = timezone.now() - keep
    old = WebhookEvent.objects.filter(
        received_at__lt=before, created__lt=int(before.timestamp()), processed_at__isnull=False
    ).exclude(result=WebhookResult.FAILED)
    deleted = 0
    while True:
        ids = list(old.order_by("received_at").values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += old.filter(pk__in=ids).delete()[0]
        if len(ids) < batch or (deadline is not None and time.monotonic() > deadline):
            return deleted
