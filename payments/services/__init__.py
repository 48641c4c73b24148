"""Writes of the payments app, split by concern; this package is their one public face.

- `paying`: paying an order (one attempt at a time, never a second charge) and applying what
  Stripe reports of its PaymentIntent (`payment_apply_intent`, the one path every report takes);
- `refunds`: refunds asked by staff, automatic refunds of unwanted charges, refund reports;
- `webhooks`: Stripe's events, stored once and applied in one transaction with their effects;
- `reconciliation`: finding and repairing what webhooks missed;
- `errors`: the errors these raise on purpose, each with its HTTP answer;
- `common`: the order statuses they act on, staff alerts, order transitions.

Callers import from here (`from payments import services; services.payment_confirm(...)`).
"""

from payments.services.common import PAYABLE_STATUSES, REFUNDABLE_STATUSES
from payments.services.errors import (
    PaymentConflict,
    PaymentError,
    PaymentInProgress,
    PaymentNotAllowed,
    RefundRefused,
)
from payments.services.paying import (
    CONFLICT_CODE,
    IntentApplied,
    payment_apply_intent,
    payment_confirm,
    payment_find_intent,
    payment_review_decide,
    payment_setup_start,
    payment_sync,
    stale_claim,
)
from payments.services.reconciliation import (
    EVENTS_CURSOR,
    OPEN_PAYMENT_STATUSES,
    PENDING_REFUND_GRACE,
    RECONCILE_ACTOR,
    RECONCILE_CURSOR,
    REVERSE_TRIES,
    EventsSweep,
    ReconcileChange,
    RefundReconcileChange,
    payment_reconcile,
    payment_reconcile_events,
    payment_reverse_pending,
    reconcile_mark,
    reconcile_since_default,
    refund_reconcile_pending,
)
from payments.services.refunds import REVERSE_ACTOR, payment_refund, payment_reverse, refund_apply
from payments.services.webhooks import (
    CHARGE_EVENTS,
    CHARGE_REFUND_EVENTS,
    DISPUTE_EVENTS,
    HANDLED_EVENTS,
    INTENT_EVENTS,
    REFUND_EVENTS,
    WEBHOOK_ACTOR,
    webhook_events_prune,
    webhook_process,
    webhook_receive,
    webhook_refusal_record,
)

__all__ = [
    "CHARGE_EVENTS",
    "CHARGE_REFUND_EVENTS",
    "CONFLICT_CODE",
    "DISPUTE_EVENTS",
    "EVENTS_CURSOR",
    "HANDLED_EVENTS",
    "INTENT_EVENTS",
    "OPEN_PAYMENT_STATUSES",
    "PAYABLE_STATUSES",
    "PENDING_REFUND_GRACE",
    "RECONCILE_ACTOR",
    "RECONCILE_CURSOR",
    "REFUNDABLE_STATUSES",
    "REFUND_EVENTS",
    "REVERSE_ACTOR",
    "REVERSE_TRIES",
    "WEBHOOK_ACTOR",
    "EventsSweep",
    "IntentApplied",
    "PaymentConflict",
    "PaymentError",
    "PaymentInProgress",
    "PaymentNotAllowed",
    "ReconcileChange",
    "RefundReconcileChange",
    "RefundRefused",
    "payment_apply_intent",
    "payment_confirm",
    "payment_find_intent",
    "payment_reconcile",
    "payment_reconcile_events",
    "payment_refund",
    "payment_reverse",
    "payment_reverse_pending",
    "payment_review_decide",
    "payment_setup_start",
    "payment_sync",
    "reconcile_mark",
    "reconcile_since_default",
    "refund_apply",
    "refund_reconcile_pending",
    "stale_claim",
    "webhook_events_prune",
    "webhook_process",
    "webhook_receive",
    "webhook_refusal_record",
]
