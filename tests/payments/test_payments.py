"""Payments against the running localstripe: confirm, declines, webhooks, refunds, idempotency."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from orders.domain import Actor, EventType, Order, OrderQuery, OrderStatus
from orders.repositories import OrderRepository
from payments import services
from payments.gateways.base import IntentRequest, PaymentGateway, RefundRequest
from payments.models import Payment, PaymentStatus, Refund, WebhookEvent, WebhookRefusal, WebhookResult
from tests.concurrency import race
from tests.payments import stripe_objects
from tests.payments.conftest import WEBHOOK_SECRET
from tests.polling import eventually

# End to end: CI runs these a second time with orders in DynamoDB (`make test-dynamodb`), so
# every order is read through the configured repository, never the ORM.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.e2e,
    pytest.mark.usefixtures("repository"),
]

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"  # card 4000000000000341


def statuses(repository: OrderRepository, order: Order) -> list[tuple[str | None, str | None]]:
    return [
        (e.from_status, e.to_status)
        for e in repository.events(order.id)
        if e.type == EventType.STATUS_CHANGED
    ]


def processed(event_type: str, count: int = 1) -> Callable[[], bool]:
    return lambda: WebhookEvent.objects.filter(type=event_type, processed_at__isnull=False).count() >= count


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    return place(customer=customer, lines={"MUG-1": 2})


def post_event(client: Client, payload: dict[str, Any], **sign_kwargs: Any) -> Any:
    return stripe_objects.deliver(client, payload, **sign_kwargs)


class TestPayingThroughTheApi:
    def test_a_paid_order_end_to_end(
        self, stripe_webhooks: str, api_as: Callable, customer: Any, order: Order, repository: OrderRepository
    ) -> None:
        response = api_as(customer).post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": VISA}, format="json"
        )
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["status"], body["amount_minor"], body["amount_received_minor"]) == (
            "succeeded",
            2900,
            2900,
        )
        assert body["intent_id"].startswith("pi_")

        eventually(processed("payment_intent.succeeded"), what="the signed succeeded webhook")
        event = WebhookEvent.objects.get(type="payment_intent.succeeded")
        assert event.result == WebhookResult.PROCESSED
        assert repository.get(order.id).status == OrderStatus.PAID
        assert Payment.objects.filter(order_id=order.id).count() == 1
        # The confirm call and the webhook both reported success: one transition, one event.
        assert statuses(repository, order) == [("pending_payment", "paid")]

    def test_the_webhook_alone_marks_the_order_paid(
        self, stripe_webhooks: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        """The confirm call's answer is lost (the process died): the webhook still gets there."""
        payment = Payment.objects.create(order_id=order.id, attempt=1, amount_minor=2900, currency="USD")
        gateway.create_intent(
            IntentRequest(
                order_id=str(order.id),
                attempt=1,
                amount_minor=2900,
                currency="USD",
                payment_method=VISA,
                idempotency_key="lost",
            )
        )
        eventually(lambda: repository.get(order.id).status == OrderStatus.PAID, what="the order to be paid")
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.SUCCEEDED and payment.intent_id
        actor = repository.events(order.id)[-1].actor
        assert actor == "system:stripe-webhook"

    def test_a_declined_card_then_a_good_one(
        self, stripe_webhooks: str, api_as: Callable, customer: Any, order: Order, repository: OrderRepository
    ) -> None:
        client = api_as(customer)
        declined = client.post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": DECLINED}, format="json"
        )
        assert declined.status_code == 402, declined.content
        assert declined.json()["code"] == "card_declined"
        assert declined.json()["message"] == "Your card was declined."
        assert repository.get(order.id).status == OrderStatus.PAYMENT_FAILED
        failed_event = repository.events(order.id)[-1]
        assert failed_event.data["failure_message"] == "Your card was declined."
        eventually(processed("payment_intent.payment_failed"), what="the failure webhook")

        paid = client.post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": VISA}, format="json"
        )
        assert paid.status_code == 200 and paid.json()["attempt"] == 2
        assert repository.get(order.id).status == OrderStatus.PAID
        eventually(processed("payment_intent.succeeded"), what="the success webhook")
        assert statuses(repository, order) == [
            ("pending_payment", "payment_failed"),
            ("payment_failed", "pending_payment"),
            ("pending_payment", "paid"),
        ]
        assert [p.status for p in Payment.objects.filter(order_id=order.id)] == ["failed", "succeeded"]
        # Still the one order.
        assert [o.id for o in repository.list(OrderQuery(limit=100)).orders] == [order.id]

    def test_confirming_twice_makes_one_payment_intent(
        self, stripe_api: str, gateway: PaymentGateway, api_as: Callable, customer: Any, order: Order
    ) -> None:
        client = api_as(customer)
        first = client.post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": VISA}, format="json"
        )
        again = client.post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": VISA}, format="json"
        )
        assert first.json()["id"] == again.json()["id"]
        assert len(gateway.find_intents(order_id=str(order.id))) == 1

    def test_concurrent_confirms_make_one_payment_intent(
        self, stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        results = race(
            4,
            lambda _: services.payment_confirm(
                order_id=order.id, payment_method=VISA, actor=Actor.system("t")
            ),
        )
        assert all(isinstance(r, Payment) for r in results), results
        assert len({r.id for r in results}) == 1
        assert len(gateway.find_intents(order_id=str(order.id))) == 1
        assert repository.get(order.id).status == OrderStatus.PAID

    def test_others_cannot_pay_or_read_my_payment(
        self, stripe_api: str, api_as: Callable, customer: Any, other_customer: Any, order: Order
    ) -> None:
        intruder = api_as(other_customer)
        response = intruder.post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": VISA}, format="json"
        )
        assert response.status_code == 404
        assert not Payment.objects.exists()
        mine = api_as(customer).post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": VISA}, format="json"
        )
        assert api_as(customer).get(f"/api/payments/{mine.json()['id']}").json()["status"] == "succeeded"
        assert intruder.get(f"/api/payments/{mine.json()['id']}").status_code == 404

    @pytest.mark.parametrize(
        ("body", "field"),
        [({"payment_method": VISA}, "order_id"), ({"order_id": "x", "payment_method": VISA}, "order_id")],
    )
    def test_bad_input_is_400(
        self, api_as: Callable, customer: Any, body: dict[str, str], field: str
    ) -> None:
        response = api_as(customer).post("/api/payments/confirm", body, format="json")
        assert response.status_code == 400 and field in response.json()["fields"]

    def test_a_cancelled_order_cannot_be_paid(
        self, stripe_api: str, api_as: Callable, customer: Any, order: Order
    ) -> None:
        client = api_as(customer)
        client.delete(f"/api/orders/{order.id}")
        response = client.post(
            "/api/payments/confirm", {"order_id": str(order.id), "payment_method": VISA}, format="json"
        )
        assert response.status_code == 409 and response.json()["code"] == "payment_not_allowed"


class TestWebhooks:
    """Events built from Stripe's published objects (tests.payments.stripe_objects), signed as
    Stripe signs them."""

    @pytest.fixture
    def paid(self, stripe_api: str, order: Order) -> dict[str, Any]:
        """The succeeded event of the order's payment, applied once."""
        payment = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=Actor.system("t"))
        intent = stripe_objects.payment_intent(
            order_id=str(order.id), intent_id=payment.intent_id, amount=2900
        )
        evt = stripe_objects.event("payment_intent.succeeded", intent)
        assert post_event(Client(), evt).status_code == 200
        return evt

    def test_duplicates_and_stale_events_change_nothing(
        self, paid: dict[str, Any], order: Order, repository: OrderRepository
    ) -> None:
        client = Client()
        for _ in range(3):
            response = post_event(client, paid)
            assert response.status_code == 200
        stored = WebhookEvent.objects.get(event_id=paid["id"])
        assert stored.deliveries == 4 and stored.payload["api_version"] == stripe_objects.API_VERSION
        intent = paid["data"]["object"]
        declined = stripe_objects.payment_intent(
            order_id=str(order.id),
            intent_id=intent["id"],
            status="requires_payment_method",
            decline=("generic_decline", "late"),
        )
        stale = stripe_objects.event(
            "payment_intent.payment_failed",
            declined,
            event_id="evt_stale_failure",
            created=paid["created"] - 5,
        )
        assert post_event(client, stale).status_code == 200
        assert WebhookEvent.objects.get(event_id="evt_stale_failure").result == WebhookResult.STALE
        late = dict(stale, id="evt_late_failure", created=paid["created"] + 5)
        assert post_event(client, late).status_code == 200  # newer, but a failure never undoes a success
        assert WebhookEvent.objects.get(event_id="evt_late_failure").result == WebhookResult.STALE
        assert repository.get(order.id).status == OrderStatus.PAID
        assert statuses(repository, order).count(("pending_payment", "paid")) == 1
        assert Payment.objects.get(order_id=order.id).status == PaymentStatus.SUCCEEDED

    @pytest.mark.parametrize(
        "signature",
        ["forged", "old", "future", "missing", "wrong-secret"],
    )
    def test_bad_signatures_are_400_and_nothing_is_stored(
        self, stripe_api: str, signature: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        evt = stripe_objects.event("payment_intent.succeeded", stripe_objects.payment_intent(order_id="x"))
        body, _ = stripe_objects.signed(evt, secret=WEBHOOK_SECRET)
        headers = {
            "forged": "t=1,v1=deadbeef",
            "old": stripe_objects.signature(body, secret=WEBHOOK_SECRET, timestamp=int(time.time()) - 301),
            "future": stripe_objects.signature(body, secret=WEBHOOK_SECRET, timestamp=int(time.time()) + 301),
            "missing": "",
            "wrong-secret": stripe_objects.signature(body, secret="whsec_other"),
        }[signature]
        extra = {"HTTP_STRIPE_SIGNATURE": headers} if headers else {}
        response = Client().post("/webhooks/stripe", body, content_type="application/json", **extra)
        assert response.status_code == 400 and response.json()["code"] == "invalid_webhook"
        assert "whsec" not in response.content.decode()
        assert not WebhookEvent.objects.exists()
        refusal = WebhookRefusal.objects.get()
        assert (refusal.size, refusal.source, refusal.signed) == (len(body), "127.0.0.1", bool(headers))
        logged = [r.getMessage() for r in caplog.records if "Refused a Stripe webhook" in r.getMessage()]
        assert logged, "the refusal is logged"
        assert all(WEBHOOK_SECRET not in line and "whsec" not in line for line in logged)

    def test_unknown_types_are_stored_and_acknowledged(self, stripe_api: str) -> None:
        payload = stripe_objects.event(
            "customer.created", {"object": "customer", "id": "cus_1"}, event_id="evt_cust"
        )
        assert post_event(Client(), payload).status_code == 200
        assert WebhookEvent.objects.get(event_id="evt_cust").result == WebhookResult.UNHANDLED

    def test_a_failing_handler_answers_503_and_is_replayed_later(
        self, stripe_api: str, order: Order, repository: OrderRepository
    ) -> None:
        ghost = uuid.uuid4()  # a payment whose order is not (yet) readable
        Payment.objects.create(
            order_id=ghost, attempt=1, amount_minor=2900, currency="USD", intent_id="pi_ghost"
        )
        intent = stripe_objects.payment_intent(order_id=str(order.id), intent_id="pi_ghost", amount=2900)
        payload = stripe_objects.event("payment_intent.succeeded", intent, event_id="evt_ghost")
        response = post_event(Client(), payload)
        assert response.status_code == 503 and response.json()["code"] == "processing_failed"
        stored = WebhookEvent.objects.get(event_id="evt_ghost")
        assert stored.result == WebhookResult.FAILED and "OrderNotFound" in stored.error
        assert stored.processed_at is None
        assert Payment.objects.get(intent_id="pi_ghost").status == PaymentStatus.CREATING  # rolled back

        Payment.objects.filter(intent_id="pi_ghost").update(order_id=order.id)  # the order is readable now
        call_command("stripe_events", "replay", "--failed")
        stored.refresh_from_db()
        assert stored.result == WebhookResult.PROCESSED and stored.error == ""
        assert repository.get(order.id).status == OrderStatus.PAID


class TestRefunds:
    @pytest.fixture
    def paid_order(self, stripe_api: str, order: Order) -> Order:
        services.payment_confirm(order_id=order.id, payment_method=VISA, actor=Actor.system("t"))
        return order

    def test_partial_then_full_refund_and_no_more(
        self, api_as: Callable, staff: Any, paid_order: Order, repository: OrderRepository
    ) -> None:
        client = api_as(staff)
        partial = client.post(
            "/api/payments/refund",
            {"order_id": str(paid_order.id), "amount_minor": 900, "reason": "chip"},
            format="json",
        )
        assert partial.status_code == 201, partial.content
        assert (partial.json()["status"], partial.json()["amount_minor"]) == ("succeeded", 900)
        assert partial.json()["provider_refund_id"].startswith("re_")
        assert repository.get(paid_order.id).status == OrderStatus.PARTIALLY_REFUNDED

        over = client.post(
            "/api/payments/refund", {"order_id": str(paid_order.id), "amount_minor": 2001}, format="json"
        )
        assert over.status_code == 400
        assert over.json()["code"] == "invalid"
        assert over.json()["fields"] == {"amount_minor": ["At most $20.00 can still be refunded."]}

        rest = client.post("/api/payments/refund", {"order_id": str(paid_order.id)}, format="json")
        assert rest.status_code == 201 and rest.json()["amount_minor"] == 2000
        assert repository.get(paid_order.id).status == OrderStatus.REFUNDED
        assert (
            client.post("/api/payments/refund", {"order_id": str(paid_order.id)}, format="json").status_code
            == 409
        )
        assert sum(Refund.objects.values_list("amount_minor", flat=True)) == 2900
        payment = client.get(f"/api/payments/{partial.json()['payment_id']}").json()
        assert payment["refunded_minor"] == 2900 and len(payment["refunds"]) == 2
        assert statuses(repository, paid_order)[-2:] == [
            ("paid", "partially_refunded"),
            ("partially_refunded", "refunded"),
        ]
        recorded = [e.data for e in repository.events(paid_order.id) if e.type == EventType.REFUND_RECORDED]
        assert [(r["amount_minor"], r["reason"]) for r in recorded] == [(900, "chip"), (2000, "")]

    def test_customers_cannot_refund(self, api_as: Callable, customer: Any, paid_order: Order) -> None:
        response = api_as(customer).post(
            "/api/payments/refund", {"order_id": str(paid_order.id)}, format="json"
        )
        assert response.status_code == 403
        assert not Refund.objects.exists()

    def test_an_unpaid_order_cannot_be_refunded(self, api_as: Callable, staff: Any, order: Order) -> None:
        response = api_as(staff).post("/api/payments/refund", {"order_id": str(order.id)}, format="json")
        assert response.status_code == 409


def test_a_refund_the_bank_bounces_comes_back_through_the_stand_ins_webhooks(
    stripe_webhooks: str, order: Order, repository: OrderRepository
) -> None:
    """Card 4000 0000 0000 5126 (pm_card_refundFail): Stripe accepts the refund, then reports it
    failed (refund.failed and friends, signed, through the real endpoint)."""
    services.payment_confirm(order_id=order.id, payment_method="pm_card_refundFail", actor=Actor.system("t"))
    refund = services.payment_refund(order_id=order.id, actor=Actor.system("t"))
    assert refund.status == "succeeded"
    eventually(
        lambda: Refund.objects.get(id=refund.id).status == "failed", what="the refund to be reported failed"
    )
    eventually(lambda: repository.get(order.id).status == OrderStatus.PAID, what="the order to be paid again")
    assert Refund.objects.count() == 1  # the webhooks completed our row, never a second one
    assert Refund.objects.get(id=refund.id).failure_message == "expired_or_canceled_card"


class TestRefundEvents:
    """Stripe reports refunds made elsewhere (its Dashboard) with refund.* events and
    charge.refunded, whose charge carries only the total refunded."""

    def test_a_dashboard_refund_is_recorded_from_charge_refunded_and_moves_the_order(
        self, stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        payment = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=Actor.system("t"))
        made_elsewhere = gateway.refund(
            RefundRequest(intent_id=payment.intent_id, amount_minor=1000, idempotency_key="dashboard-1")
        )
        intent = stripe_objects.payment_intent(order_id=str(order.id), intent_id=payment.intent_id)
        charge_refunded = stripe_objects.event(
            "charge.refunded",
            stripe_objects.charge(intent, amount_refunded=1000),
            event_id="evt_charge_refunded",
        )
        assert "refunds" not in charge_refunded["data"]["object"]
        assert post_event(Client(), charge_refunded).status_code == 200
        refund = Refund.objects.get(provider_refund_id=made_elsewhere.refund_id)
        assert (refund.amount_minor, refund.status, refund.actor) == (
            1000,
            "succeeded",
            "system:stripe-webhook",
        )
        assert repository.get(order.id).status == OrderStatus.PARTIALLY_REFUNDED

        updated = stripe_objects.event(
            "refund.updated",
            stripe_objects.refund(intent, amount=1000, refund_id=made_elsewhere.refund_id),
            event_id="evt_refund_updated",
        )
        assert post_event(Client(), updated).status_code == 200
        assert Refund.objects.count() == 1  # the same refund, not a second one
        assert statuses(repository, order).count(("paid", "partially_refunded")) == 1


def test_refunds_are_found_at_stripe_by_their_metadata(
    stripe_api: str, gateway: PaymentGateway, order: Order
) -> None:
    payment = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=Actor.system("t"))
    refund = services.payment_refund(order_id=order.id, amount_minor=700, actor=Actor.system("t"))
    found = gateway.find_refunds(intent_id=payment.intent_id)
    assert [(r.refund_id, r.amount_minor, r.metadata.get("refund_id")) for r in found] == [
        (refund.provider_refund_id, 700, str(refund.id))
    ]
