"""The contract suite: every event type we handle (or must acknowledge), built from Stripe's own
published objects in the pinned API version's shape, signed as Stripe signs, replayed against
the running app over HTTP: each delivered 3 times, in shuffled order, at the same moment as the
API answer it races. Whatever the order, the order, payment and refund rows end in exactly one
correct state and no request answers 5xx.

CI runs it on SQLite and on PostgreSQL (and with orders in DynamoDB).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.conf import settings

from monitoring.models import Alert
from orders.domain import Actor, EventType, Order, OrderStatus
from orders.repositories import OrderRepository
from orders.services import order_cancel
from payments import services
from payments.gateways.base import IntentRequest, PaymentGateway, RefundRequest
from payments.models import Payment, PaymentStatus, Refund, RefundStatus, WebhookEvent, WebhookResult
from payments.selectors import refund_position
from tests.concurrency import race
from tests.payments import stripe_objects
from tests.payments.conftest import WEBHOOK_SECRET
from tests.polling import DEADLINE_SECONDS

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.e2e,
    pytest.mark.usefixtures("repository"),
]

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"
ACTOR = Actor.system("test")
COPIES = 3


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    return place(customer=customer, lines={"MUG-1": 2})  # 2900 USD


@pytest.fixture
def storm(stripe_api: str, live_server: Any) -> Callable[..., list[Any]]:
    """`storm(events, racer=None)`: deliver each event COPIES times in a shuffled order, all at
    once and at the same moment as `racer()` (the API answer they race); returns what each got
    (HTTP status codes, then the racer's result). Asserts no delivery answered 5xx."""
    url = f"{live_server.url}/webhooks/stripe"

    def run(events: list[dict[str, Any]], racer: Callable[[], Any] | None = None) -> list[Any]:
        seed = random.randrange(1_000_000)
        deliveries = [evt for evt in events for _ in range(COPIES)]
        random.Random(seed).shuffle(deliveries)
        bodies = [stripe_objects.signed(evt, secret=WEBHOOK_SECRET) for evt in deliveries]

        def job(i: int) -> Any:
            if i == len(bodies):
                return racer() if racer else None
            body, signature = bodies[i]
            return requests.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                timeout=DEADLINE_SECONDS,
            ).status_code

        results = race(len(bodies) + 1, job)
        codes = results[:-1]
        assert all(isinstance(c, int) and c < 500 for c in codes), f"seed {seed}: {codes}"
        assert not isinstance(results[-1], Exception), f"seed {seed}: the racer raised {results[-1]!r}"
        stored = {e.event_id: e for e in WebhookEvent.objects.filter(event_id__in=[e["id"] for e in events])}
        assert set(stored) == {e["id"] for e in events}, f"seed {seed}: every event stored once"
        assert all(e.deliveries == COPIES for e in stored.values()), f"seed {seed}"
        return results

    return run


def transitions(repository: OrderRepository, order: Order) -> list[tuple[str | None, str | None]]:
    return [
        (e.from_status, e.to_status)
        for e in repository.events(order.id)
        if e.type == EventType.STATUS_CHANGED
    ]


def events_of(repository: OrderRepository, order: Order, event_type: EventType) -> list[Any]:
    return [e for e in repository.events(order.id) if e.type == event_type]


def result_of(evt: dict[str, Any]) -> str:
    return WebhookEvent.objects.get(event_id=evt["id"]).result


def claim(order: Order, payment_method: str = VISA) -> Payment:
    """The attempt the app claims before it calls Stripe."""
    return Payment.objects.create(
        order_id=order.id,
        attempt=1,
        amount_minor=order.total_minor,
        currency=order.currency,
        payment_method=payment_method,
    )


def charge_at_stripe(
    gateway: PaymentGateway, order: Order, payment_method: str = VISA, *, key: str = ""
) -> Any:
    """Stripe makes the intent; its answer has not reached the app yet."""
    return gateway.create_intent(
        IntentRequest(
            order_id=str(order.id),
            attempt=1,
            amount_minor=order.total_minor,
            currency=order.currency,
            payment_method=payment_method,
            idempotency_key=key or f"order:{order.id}:payment:1",
        )
    )


def as_published(result: Any, order: Order, *, status: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """The intent Stripe made, as its events carry it."""
    return stripe_objects.payment_intent(
        order_id=str(order.id),
        intent_id=result.intent_id,
        amount=result.amount_minor,
        currency=result.currency.lower(),
        status=status or result.status,
        charge_id=result.charge_id or None,
        **kwargs,
    )


class TestPaymentIntentEvents:
    def test_succeeded_with_processing_and_charge_events_racing_the_confirm_answer(
        self, storm: Callable, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        payment = claim(order)
        answer = charge_at_stripe(gateway, order)
        intent = as_published(answer, order)
        t = stripe_objects.now()
        events = [
            stripe_objects.event(
                "payment_intent.processing", as_published(answer, order, status="processing"), created=t - 1
            ),
            stripe_objects.event("payment_intent.succeeded", intent, created=t),
            stripe_objects.event("charge.succeeded", stripe_objects.charge(intent), created=t),
        ]
        storm(
            events, lambda: services.payment_apply_intent(payment_id=payment.id, intent=answer, actor=ACTOR)
        )
        payment.refresh_from_db()
        assert (payment.status, payment.intent_id, payment.amount_received_minor) == (
            "succeeded",
            answer.intent_id,
            2900,
        )
        assert repository.get(order.id).status == OrderStatus.PAID
        assert transitions(repository, order) == [("pending_payment", "paid")]
        assert result_of(events[1]) in {WebhookResult.PROCESSED, WebhookResult.STALE}
        assert result_of(events[2]) == WebhookResult.PROCESSED  # the card that paid
        assert (payment.card_brand, payment.card_last4) == ("visa", "4242")

    def test_payment_failed_and_charge_failed_racing_the_decline(
        self, storm: Callable, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        payment = claim(order, DECLINED)
        answer = charge_at_stripe(gateway, order, DECLINED)
        assert answer.failed
        intent = as_published(answer, order, decline=("generic_decline", "Your card was declined."))
        events = [
            stripe_objects.event("payment_intent.payment_failed", intent),
            stripe_objects.event("charge.failed", stripe_objects.charge(intent, status="failed")),
        ]
        storm(
            events, lambda: services.payment_apply_intent(payment_id=payment.id, intent=answer, actor=ACTOR)
        )
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.FAILED and payment.failure_message
        assert repository.get(order.id).status == OrderStatus.PAYMENT_FAILED
        assert transitions(repository, order) == [("pending_payment", "payment_failed")]
        assert result_of(events[1]) == WebhookResult.UNHANDLED

    def test_requires_action_then_canceled(
        self, storm: Callable, order: Order, repository: OrderRepository
    ) -> None:
        payment = claim(order)
        intent_id = stripe_objects.new_id("pi")
        t = stripe_objects.now()
        action = stripe_objects.payment_intent(
            order_id=str(order.id), intent_id=intent_id, status="requires_action"
        )
        canceled = stripe_objects.payment_intent(
            order_id=str(order.id), intent_id=intent_id, status="canceled"
        )
        events = [
            stripe_objects.event("payment_intent.requires_action", action, created=t - 1),
            stripe_objects.event("payment_intent.canceled", canceled, created=t),
        ]
        storm(events)
        payment.refresh_from_db()
        assert (payment.status, payment.intent_id) == (PaymentStatus.CANCELED, intent_id)
        assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT
        assert transitions(repository, order) == []

    def test_an_amount_or_currency_that_differs_holds_the_payment_for_review(
        self, storm: Callable, order: Order, repository: OrderRepository
    ) -> None:
        """Finding 5: a succeeded intent for another amount never marks the order paid."""
        payment = claim(order)
        short = stripe_objects.payment_intent(order_id=str(order.id), amount=100, currency="eur")
        Payment.objects.filter(id=payment.id).update(intent_id=short["id"])
        storm([stripe_objects.event("payment_intent.succeeded", short)])
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.REVIEW
        assert (
            "currency EUR, not USD" in payment.review_reason
            and "100 received, not 2900" in payment.review_reason
        )
        assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT
        assert len(events_of(repository, order, EventType.PAYMENT_HELD)) == 1
        assert Alert.objects.filter(subject="payments", kind="payment.review").count() == 1
        with pytest.raises(services.PaymentInProgress):  # no second charge while it is held
            services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)

    def test_a_second_intent_for_a_paid_order_is_refunded_and_never_replaces_the_first(
        self, storm: Callable, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        """Finding 6: the metadata fallback never swaps a payment's intent for another's; the
        extra charge is refunded automatically."""
        paid = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)
        extra = charge_at_stripe(gateway, order, key=f"elsewhere:{order.id}")  # same order, same attempt
        assert extra.intent_id != paid.intent_id and extra.succeeded
        storm([stripe_objects.event("payment_intent.succeeded", as_published(extra, order))])
        paid.refresh_from_db()
        assert (paid.status, paid.intent_id) == (PaymentStatus.SUCCEEDED, paid.intent_id)
        reversed_ = Payment.objects.get(intent_id=extra.intent_id)
        assert reversed_.status == PaymentStatus.REVERSED and reversed_.attempt == 2
        (refund,) = reversed_.refunds.all()
        assert (refund.status, refund.amount_minor) == (RefundStatus.SUCCEEDED, 2900)
        assert [r.amount_minor for r in gateway.find_refunds(intent_id=extra.intent_id)] == [2900]
        assert repository.get(order.id).status == OrderStatus.PAID
        assert transitions(repository, order) == [("pending_payment", "paid")]
        assert len(events_of(repository, order, EventType.PAYMENT_REVERSED)) == 1
        # Later events of the real intent still find it.
        late = stripe_objects.event(
            "payment_intent.succeeded", as_published(gateway.retrieve_intent(paid.intent_id), order)
        )
        storm([late])
        assert result_of(late) in {WebhookResult.PROCESSED, WebhookResult.STALE}

    def test_a_payment_that_succeeds_after_the_order_was_cancelled_is_refunded(
        self, storm: Callable, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        """Finding 9 (last part): logged only before; now refunded automatically, with an audit event."""
        payment = claim(order)
        answer = charge_at_stripe(gateway, order)
        order_cancel(repository=repository, order_id=order.id, actor=ACTOR, reason="changed my mind")
        storm(
            [stripe_objects.event("payment_intent.succeeded", as_published(answer, order))],
            lambda: services.payment_apply_intent(payment_id=payment.id, intent=answer, actor=ACTOR),
        )
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.REVERSED and "cancelled" in payment.review_reason
        (refund,) = payment.refunds.all()
        assert (refund.status, refund.amount_minor) == (RefundStatus.SUCCEEDED, 2900)
        assert repository.get(order.id).status == OrderStatus.CANCELLED
        assert len(events_of(repository, order, EventType.PAYMENT_REVERSED)) == 1


class TestRefundEvents:
    @pytest.fixture
    def paid(self, stripe_api: str, order: Order) -> Payment:
        return services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)

    @pytest.mark.parametrize("answer_comes", ["after the webhooks", "with the webhooks"])
    def test_refund_created_before_the_refund_answer_completes_the_same_row(
        self,
        answer_comes: str,
        storm: Callable,
        gateway: PaymentGateway,
        paid: Payment,
        order: Order,
        repository: OrderRepository,
    ) -> None:
        """Finding 1: the webhook may come before Stripe's answer to POST /v1/refunds."""
        ours = Refund.objects.create(payment=paid, amount_minor=900, reason="chip", actor="staff:1")
        answer = gateway.refund(
            RefundRequest(
                intent_id=paid.intent_id,
                amount_minor=900,
                idempotency_key=f"refund:{ours.id}",
                metadata={"refund_id": str(ours.id), "order_id": str(order.id)},
            )
        )
        intent = as_published(gateway.retrieve_intent(paid.intent_id), order)
        published = stripe_objects.refund(
            intent, amount=900, refund_id=answer.refund_id, our_refund_id=str(ours.id)
        )
        events = [
            stripe_objects.event("refund.created", published),
            stripe_objects.event("charge.refunded", stripe_objects.charge(intent, amount_refunded=900)),
        ]

        def answer_arrives() -> Refund:
            return services.refund_apply(refund_id=ours.id, result=answer, actor=ACTOR)

        if answer_comes == "after the webhooks":
            storm(events)
            answer_arrives()
        else:
            storm(events, answer_arrives)
        (refund,) = Refund.objects.all()
        assert (refund.id, refund.provider_refund_id, refund.status) == (
            ours.id,
            answer.refund_id,
            "succeeded",
        )
        assert repository.get(order.id).status == OrderStatus.PARTIALLY_REFUNDED
        assert len(events_of(repository, order, EventType.REFUND_RECORDED)) == 1
        assert services.refund_reconcile_pending(older_than=timedelta(0)) == []

    def test_a_dashboard_refund_reported_by_charge_refunded_in_the_current_shape(
        self,
        storm: Callable,
        gateway: PaymentGateway,
        paid: Payment,
        order: Order,
        repository: OrderRepository,
    ) -> None:
        """Finding 3: the charge carries only `amount_refunded`; its refunds are listed at Stripe."""
        made = gateway.refund(
            RefundRequest(intent_id=paid.intent_id, amount_minor=2900, idempotency_key="dash")
        )
        intent = as_published(gateway.retrieve_intent(paid.intent_id), order)
        charge = stripe_objects.charge(intent, amount_refunded=2900)
        assert "refunds" not in charge
        storm([stripe_objects.event("charge.refunded", charge)])
        (refund,) = Refund.objects.all()
        assert (refund.provider_refund_id, refund.amount_minor, refund.status) == (
            made.refund_id,
            2900,
            "succeeded",
        )
        assert refund.reason == "Made outside the system"
        assert repository.get(order.id).status == OrderStatus.REFUNDED
        assert transitions(repository, order)[-1] == ("paid", "refunded")

    def test_a_refund_that_fails_after_it_succeeded_undoes_the_refunded_status(
        self,
        storm: Callable,
        gateway: PaymentGateway,
        paid: Payment,
        order: Order,
        repository: OrderRepository,
    ) -> None:
        """Finding 4: refund.failed / charge.refund.updated to failed after a success."""
        refund = services.payment_refund(order_id=order.id, actor=ACTOR)
        assert repository.get(order.id).status == OrderStatus.REFUNDED
        intent = as_published(gateway.retrieve_intent(paid.intent_id), order)
        ok = stripe_objects.refund(
            intent, amount=2900, refund_id=refund.provider_refund_id, our_refund_id=str(refund.id)
        )
        failed = dict(ok, status="failed", failure_reason="expired_or_canceled_card")
        t = stripe_objects.now()
        events = [
            stripe_objects.event("refund.created", ok, created=t - 2),
            stripe_objects.event(
                "refund.updated", failed, created=t, previous_attributes={"status": "succeeded"}
            ),
            stripe_objects.event("charge.refund.updated", failed, created=t),
            stripe_objects.event("refund.failed", failed, created=t),
        ]
        storm(events)
        refund.refresh_from_db()
        assert (refund.status, refund.failure_message) == (RefundStatus.FAILED, "expired_or_canceled_card")
        assert repository.get(order.id).status == OrderStatus.PAID
        last = [e for e in repository.events(order.id) if e.type == EventType.STATUS_CHANGED][-1]
        assert (last.from_status, last.to_status, last.data["correction"]) == (
            "refunded",
            "paid",
            "refund_failed",
        )
        assert len(events_of(repository, order, EventType.REFUND_FAILED)) == 1
        assert Alert.objects.filter(subject="payments", kind="refund.failed").exists()
        told = [m.event_type for m in repository.outbox(order.id)]
        assert told.count("order.paid") == 1, "the customer is not told anything new"
        assert told.count("order.refunded") == 1
        assert told.count("order.corrected") == 1  # the sheet and the topic follow the order
        assert "order.corrected" not in settings.INTEGRATIONS["email"]["events"]
        assert refund_position(order.id)["left"] == 2900  # staff may pay it back another way

    def test_refunds_reported_beyond_what_was_paid_are_capped_and_flagged(
        self,
        storm: Callable,
        gateway: PaymentGateway,
        paid: Payment,
        order: Order,
        repository: OrderRepository,
    ) -> None:
        """Finding 7: a refund of 9,700 on a 2,900 payment."""
        intent = as_published(gateway.retrieve_intent(paid.intent_id), order)
        evt = stripe_objects.event("refund.created", stripe_objects.refund(intent, amount=9700))
        storm([evt])
        (refund,) = Refund.objects.all()
        assert refund.amount_minor == 2900 and refund.flag == (
            "Stripe reported a refund of $97.00, but only $29.00 of the $29.00 received was left:"
            " $68.00 not counted."
        )
        assert result_of(evt) == WebhookResult.FLAGGED
        assert Alert.objects.filter(subject="payments", kind="refund.excess").exists()
        recorded = events_of(repository, order, EventType.REFUND_RECORDED)
        assert [e.data["amount_minor"] for e in recorded] == [2900]


class TestOtherEvents:
    def test_a_dispute_alerts_staff_and_changes_no_money(
        self, storm: Callable, order: Order, repository: OrderRepository
    ) -> None:
        payment = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)
        intent = stripe_objects.payment_intent(order_id=str(order.id), intent_id=payment.intent_id)
        evt = stripe_objects.event("charge.dispute.created", stripe_objects.dispute(intent))
        storm([evt])
        assert result_of(evt) == WebhookResult.FLAGGED
        assert Alert.objects.filter(subject="payments", kind="payment.disputed").count() == 1
        assert repository.get(order.id).status == OrderStatus.PAID

    def test_an_unknown_type_is_stored_and_acknowledged(self, storm: Callable) -> None:
        evt = stripe_objects.event("customer.created", {"object": "customer", "id": "cus_1"})
        storm([evt])
        assert result_of(evt) == WebhookResult.UNHANDLED

    def test_an_intent_of_no_order_of_ours_is_acknowledged(self, storm: Callable) -> None:
        evt = stripe_objects.event(
            "payment_intent.succeeded",
            stripe_objects.payment_intent(order_id=str(stripe_objects.new_id("x"))),
        )
        storm([evt])
        assert result_of(evt) == WebhookResult.UNKNOWN_PAYMENT
        assert not Payment.objects.exists()
