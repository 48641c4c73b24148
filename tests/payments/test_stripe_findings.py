"""The rest of what replaying Stripe's real contract found (issue 11), each against the running
Stripe stand-in: idempotency conflicts and every Stripe error class (finding 2), reconciliation by
search and by an events cursor (8), bodies the webhook cannot verify or parse (9), and a pending
refund that cannot be settled (1). The event-level findings are in test_stripe_contract.py."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import stripe
from django.core.management import CommandError, call_command
from django.test import Client

from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from payments import services
from payments.gateways.base import (
    GatewayConflict,
    GatewayError,
    GatewayRequestRefused,
    IntentRequest,
    PaymentGateway,
    RefundRequest,
)
from payments.gateways.stripe import _translated_errors
from payments.models import Payment, PaymentStatus, Refund, RefundStatus, WebhookEvent, WebhookRefusal
from tests.payments import stripe_objects
from tests.payments.conftest import WEBHOOK_SECRET

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("repository")]

VISA = "pm_card_visa"
ACTOR = Actor.system("test")


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    return place(customer=customer, lines={"MUG-1": 2})  # 2900 USD


def intent_request(
    order: Order, *, key: str, payment_method: str = VISA, order_id: str = ""
) -> IntentRequest:
    return IntentRequest(
        order_id=order_id or str(order.id),
        attempt=1,
        amount_minor=order.total_minor,
        currency=order.currency,
        payment_method=payment_method,
        idempotency_key=key,
    )


class TestIdempotency:
    """Finding 2."""

    def test_a_stuck_attempt_claimed_again_repeats_its_own_request(
        self, stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        """The first call reached Stripe and its answer was lost; the customer then tries
        another card. The attempt is repeated as it was (same key, same parameters), which
        Stripe answers with the first outcome: not an idempotency error, not a second charge."""
        payment = Payment.objects.create(
            order_id=order.id, attempt=1, amount_minor=2900, currency="USD", payment_method=VISA
        )
        first = gateway.create_intent(intent_request(order, key=f"order:{order.id}:payment:1"))
        Payment.objects.filter(id=payment.id).update(updated_at=payment.updated_at - timedelta(minutes=5))

        again = services.payment_confirm(order_id=order.id, payment_method="pm_card_mastercard", actor=ACTOR)
        assert (again.id, again.status, again.intent_id) == (
            payment.id,
            PaymentStatus.SUCCEEDED,
            first.intent_id,
        )
        assert [i.intent_id for i in gateway.find_intents(order_id=str(order.id))] == [first.intent_id]
        assert repository.get(order.id).status == OrderStatus.PAID

    def test_a_key_used_with_other_parameters_is_a_409_and_the_next_attempt_pays(
        self, stripe_api: str, gateway: PaymentGateway, order: Order, api_as: Callable, customer: Any
    ) -> None:
        """Stripe answers `idempotency_error`: a 409 in our error shape, never a 500. While
        Stripe's search may not see an intent yet, the attempt stays open (no second charge can
        start beside one that may exist); claimed again later and still unseen, it fails, and the
        next confirm is a new attempt with a key of its own."""
        gateway.create_intent(
            intent_request(
                order, key=f"order:{order.id}:payment:1", order_id="someone-else", payment_method=VISA
            )
        )
        client = api_as(customer)
        body = {"order_id": str(order.id), "payment_method": VISA}
        wait = client.post("/api/payments/confirm", body, format="json")
        assert wait.status_code == 409, wait.content
        assert wait.json()["code"] == "payment_in_progress"
        (attempt,) = Payment.objects.filter(order_id=order.id)
        assert (attempt.status, attempt.failure_code) == (PaymentStatus.CREATING, "idempotency_error")
        assert client.post("/api/payments/confirm", body, format="json").json()["status"] == "creating"

        later = attempt.updated_at - services.stale_claim() - timedelta(seconds=1)
        Payment.objects.filter(id=attempt.id).update(updated_at=later)
        conflict = client.post("/api/payments/confirm", body, format="json")
        assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
        attempt.refresh_from_db()
        assert (attempt.status, attempt.failure_code) == (PaymentStatus.FAILED, "idempotency_error")

        paid = client.post("/api/payments/confirm", body, format="json")
        assert paid.status_code == 200 and (paid.json()["attempt"], paid.json()["status"]) == (2, "succeeded")

    def test_the_stand_in_refuses_a_reused_key_as_stripe_does(
        self, stripe_api: str, gateway: PaymentGateway, order: Order
    ) -> None:
        gateway.create_intent(intent_request(order, key="k1"))
        with pytest.raises(GatewayConflict) as refused:
            gateway.create_intent(intent_request(order, key="k1", payment_method="pm_card_mastercard"))
        assert refused.value.provider_code == "idempotency_error"

    @pytest.mark.parametrize(
        ("error", "expected", "code"),
        [
            (
                stripe.IdempotencyError("Keys for idempotent requests …", http_status=400),
                GatewayConflict,
                "idempotency_error",
            ),
            (
                stripe.InvalidRequestError(
                    "No such payment_intent", "intent", code="resource_missing", http_status=404
                ),
                GatewayRequestRefused,
                "resource_missing",
            ),
            (
                stripe.CardError("Your card was declined.", None, "card_declined", http_status=402),
                GatewayRequestRefused,
                "card_declined",
            ),
            (stripe.AuthenticationError("Invalid API Key", http_status=401), GatewayRequestRefused, "auth"),
            (stripe.PermissionError("Not allowed", http_status=403), GatewayRequestRefused, "auth"),
            (stripe.RateLimitError("Too many requests", http_status=429), GatewayError, None),
            (stripe.APIConnectionError("Connection refused"), GatewayError, None),
            (stripe.APIError("Internal error", http_status=500), GatewayError, None),
            (
                stripe.StripeError("Something new", http_status=400, code="brand_new"),
                GatewayRequestRefused,
                "brand_new",
            ),
            (stripe.StripeError("Something new", http_status=503), GatewayError, None),
        ],
    )
    def test_every_stripe_error_class_becomes_one_of_the_ports(
        self, error: Exception, expected: type[Exception], code: str | None
    ) -> None:
        with pytest.raises(expected) as raised, _translated_errors():
            raise error
        assert type(raised.value) is expected
        if code is not None:
            assert raised.value.provider_code == code  # type: ignore[attr-defined]


class TestReconciliation:
    """Finding 8: intents are found by Stripe's search and events by a cursor, never by listing
    the whole account; and each run goes on from where the last one stopped."""

    def test_search_finds_the_attempt_among_other_orders_intents(
        self, stripe_api: str, gateway: PaymentGateway, order: Order, place: Callable[..., Order]
    ) -> None:
        others = [place(lines={"MUG-1": 1}) for _ in range(3)]
        for other in others:
            gateway.create_intent(intent_request(other, key=f"o:{other.id}"))
        mine = gateway.create_intent(intent_request(order, key="mine"))
        assert [i.intent_id for i in gateway.find_intents(order_id=str(order.id), attempt=1)] == [
            mine.intent_id
        ]
        assert gateway.find_intents(order_id=str(order.id), attempt=2) == []

    def test_runs_are_incremental_and_apply_events_that_never_arrived(
        self, stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
    ) -> None:
        paid = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)
        first = io.StringIO()
        call_command("reconcile_payments", stdout=first, stderr=io.StringIO())
        assert "Checked 0 payment(s)" in first.getvalue()

        # A refund made in Stripe's Dashboard; its webhooks never reached us.
        made = gateway.refund(
            RefundRequest(intent_id=paid.intent_id, amount_minor=500, idempotency_key="dash")
        )
        assert not Refund.objects.exists()
        second = io.StringIO()
        call_command("reconcile_payments", stdout=second, stderr=io.StringIO())
        assert "never received by webhook (applied now)" in second.getvalue()
        refund = Refund.objects.get(provider_refund_id=made.refund_id)
        assert (refund.amount_minor, refund.status) == (500, RefundStatus.SUCCEEDED)
        assert repository.get(order.id).status == OrderStatus.PARTIALLY_REFUNDED
        assert WebhookEvent.objects.filter(type="refund.created").count() == 1

        third = io.StringIO()
        call_command("reconcile_payments", stdout=third, stderr=io.StringIO())
        assert " 0 never received by webhook" in third.getvalue()  # nothing applied twice
        assert Refund.objects.count() == 1

    def test_a_pending_refund_that_cannot_be_settled_does_not_stop_the_others(
        self, stripe_api: str, gateway: PaymentGateway, order: Order, place: Callable[..., Order]
    ) -> None:
        """Finding 1 (second part): reconciliation skips and reports a row it cannot settle."""
        good = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)
        other = place(lines={"MUG-1": 1})
        broken = services.payment_confirm(order_id=other.id, payment_method=VISA, actor=ACTOR)
        stuck_broken = Refund.objects.create(payment=broken, amount_minor=100, actor="t")
        stuck_good = Refund.objects.create(payment=good, amount_minor=300, actor="t")
        for refund, payment in ((stuck_broken, broken), (stuck_good, good)):
            gateway.refund(
                RefundRequest(
                    intent_id=payment.intent_id,
                    amount_minor=refund.amount_minor,
                    idempotency_key=f"refund:{refund.id}",
                    metadata={"refund_id": str(refund.id)},
                )
            )
        Payment.objects.filter(id=broken.id).update(order_id=uuid.uuid4())  # its order is gone
        changes = {c.refund_id: c for c in services.refund_reconcile_pending(older_than=timedelta(0))}
        assert "OrderNotFound" in changes[stuck_broken.id].error
        assert (changes[stuck_good.id].status_after, changes[stuck_good.id].error) == ("succeeded", "")
        stuck_good.refresh_from_db()
        assert stuck_good.status == RefundStatus.SUCCEEDED
        with pytest.raises(CommandError, match="could not be checked"):
            call_command("reconcile_payments", stdout=io.StringIO(), stderr=io.StringIO())


def test_a_dashboard_refund_counts_although_one_of_ours_is_stuck_unsent(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    """Our full refund timed out before Stripe got it (pending, no Stripe id); staff then refunded
    everything in the Dashboard. Stripe's report is recorded, not cut to nothing."""
    paid = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)
    Refund.objects.create(payment=paid, amount_minor=2900, actor="staff:1")  # never reached Stripe
    made = gateway.refund(RefundRequest(intent_id=paid.intent_id, amount_minor=2900, idempotency_key="dash"))
    intent = stripe_objects.payment_intent(order_id=str(order.id), intent_id=paid.intent_id)
    evt = stripe_objects.event(
        "refund.created", stripe_objects.refund(intent, amount=2900, refund_id=made.refund_id)
    )
    assert stripe_objects.deliver(Client(), evt).status_code == 200
    recorded = Refund.objects.get(provider_refund_id=made.refund_id)
    assert (recorded.amount_minor, recorded.status, recorded.flag) == (2900, RefundStatus.SUCCEEDED, "")
    assert repository.get(order.id).status == OrderStatus.REFUNDED


def test_the_events_sweep_reads_every_page(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    """More events than one page (100) since the cursor: none is left behind."""
    paid = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=ACTOR)
    for i in range(60):  # each refund is two events: refund.created and charge.refunded
        gateway.refund(RefundRequest(intent_id=paid.intent_id, amount_minor=10, idempotency_key=f"dash-{i}"))
    sweep = services.payment_reconcile_events()
    assert sweep.listed > 100 and not sweep.errors
    assert Refund.objects.filter(status=RefundStatus.SUCCEEDED).count() == 60
    assert services.payment_reconcile_events().missed == 0


def test_a_foreign_intent_for_an_unpaid_order_is_judged_against_the_order(
    stripe_api: str, order: Order, repository: OrderRepository
) -> None:
    """An intent we never made, naming our order and an attempt that has its own intent, took
    100 for a 2900 order: held for review, never marks the order paid."""
    Payment.objects.create(
        order_id=order.id, attempt=1, amount_minor=2900, currency="USD", intent_id="pi_ours", status="failed"
    )
    foreign = stripe_objects.payment_intent(order_id=str(order.id), attempt=1, amount=100)
    assert (
        stripe_objects.deliver(
            Client(), stripe_objects.event("payment_intent.succeeded", foreign)
        ).status_code
        == 200
    )
    held = Payment.objects.get(intent_id=foreign["id"])
    assert held.status == PaymentStatus.REVIEW and "100 received, not 2900" in held.review_reason
    assert repository.get(order.id).status != OrderStatus.PAID


class TestRefusedBodies:
    """Finding 9: whatever the body, a 400 in the JSON error shape, and a record of it."""

    def post(self, body: bytes, signature: str | None = None) -> Any:
        header = signature if signature is not None else stripe_objects.signature(body, secret=WEBHOOK_SECRET)
        return Client().post(
            "/webhooks/stripe", body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            (b'{"id": "evt_1", "type": "x\xff\xfe"}', "not UTF-8"),
            (b"[" * 100_000, "nested too deep"),
            (b'["an", "array"]', "not in Stripe's format"),
            (b'{"id": "evt_1"}', "not in Stripe's format"),
        ],
        ids=["not-utf8", "deeply-nested", "not-an-object", "not-an-event"],
    )
    def test_a_signed_body_that_cannot_be_parsed_is_400(
        self, stripe_api: str, body: bytes, reason: str
    ) -> None:
        response = self.post(body)
        assert response.status_code == 400 and response["Content-Type"] == "application/json"
        assert response.json()["code"] == "invalid_webhook" and reason in response.json()["message"]
        refusal = WebhookRefusal.objects.get()
        assert reason in refusal.reason and refusal.size == len(body) and refusal.signed
        assert not WebhookEvent.objects.exists()

    def test_a_signature_header_that_is_not_ascii_is_400(self, stripe_api: str) -> None:
        response = self.post(b"{}", signature="t=1,v1=\u00e9")
        assert response.status_code == 400 and "not ASCII" in response.json()["message"]

    def test_a_body_over_the_limit_is_400_unread(self, stripe_api: str, settings: Any) -> None:
        settings.STRIPE_WEBHOOK_MAX_BYTES = 1000
        response = self.post(b" " * 5000 + b"{}")
        assert response.status_code == 400 and "larger than 1000 bytes" in response.json()["message"]
        assert WebhookRefusal.objects.get().size == 5002

    def test_refusals_are_kept_bounded_and_listed(self, stripe_api: str, settings: Any) -> None:
        settings.STRIPE_WEBHOOK_REFUSALS_KEPT = 10
        for _ in range(250):
            assert self.post(b"{}", signature="t=1,v1=forged").status_code == 400
        assert WebhookRefusal.objects.count() <= 10 + 99  # pruned every 100 records
        out = io.StringIO()
        call_command("stripe_events", "refusals", "--limit", "3", stdout=out)
        lines = out.getvalue().splitlines()
        assert len(lines) == 3 and all("127.0.0.1" in line and "signed" in line for line in lines)
        assert all("whsec" not in line for line in lines)


def test_the_webhook_endpoint_is_configured_with_the_handled_events(stripe_api: str) -> None:
    out = io.StringIO()
    call_command("stripe_webhook_endpoint", "--url", "https://shop.example/webhooks/stripe", stdout=out)
    created = out.getvalue()
    assert "Created we_" in created and "STRIPE_WEBHOOK_SECRET=whsec_" in created
    assert all(f"  {event}\n" in created for event in services.HANDLED_EVENTS)
    again = io.StringIO()
    call_command("stripe_webhook_endpoint", "--url", "https://shop.example/webhooks/stripe", stdout=again)
    assert "Updated we_" in again.getvalue() and "whsec_" not in again.getvalue()
    endpoints = stripe.StripeClient(
        "sk_test_suite", base_addresses={"api": stripe_api}
    ).v1.webhook_endpoints.list()
    (endpoint,) = endpoints.data
    assert sorted(endpoint.enabled_events) == sorted(services.HANDLED_EVENTS)


class TestHeldPayments:
    """Finding 5's other half: what staff do with a payment held for review."""

    def hold(self, gateway: PaymentGateway, order: Order) -> Payment:
        """Stripe took 3000 for a 2900 order (its intent made elsewhere, with our metadata)."""
        payment = Payment.objects.create(
            order_id=order.id, attempt=1, amount_minor=order.total_minor, currency="USD", payment_method=VISA
        )
        taken = gateway.create_intent(
            replace(intent_request(order, key=f"held:{order.id}"), amount_minor=3000)
        )
        Payment.objects.filter(id=payment.id).update(intent_id=taken.intent_id)
        evt = stripe_objects.event(
            "payment_intent.succeeded",
            stripe_objects.payment_intent(order_id=str(order.id), intent_id=taken.intent_id, amount=3000),
        )
        assert stripe_objects.deliver(Client(), evt).status_code == 200
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.REVIEW
        return payment

    def test_staff_accept_one_and_refuse_another(
        self,
        stripe_api: str,
        gateway: PaymentGateway,
        place: Callable[..., Order],
        admin_client: Client,
        repository: OrderRepository,
    ) -> None:
        accepted_order, refused_order = place(lines={"MUG-1": 2}), place(lines={"MUG-1": 2})
        accepted, refused = self.hold(gateway, accepted_order), self.hold(gateway, refused_order)
        url = "/admin/payments/payment/"
        for action, payment in (("accept_held", accepted), ("refuse_held", refused)):
            response = admin_client.post(
                url, {"action": action, "_selected_action": [str(payment.id)]}, follow=True
            )
            assert response.status_code == 200
        accepted.refresh_from_db()
        refused.refresh_from_db()
        assert accepted.status == PaymentStatus.SUCCEEDED and "Accepted by staff:" in accepted.review_reason
        assert repository.get(accepted_order.id).status == OrderStatus.PAID
        assert refused.status == PaymentStatus.REVERSED
        assert [(r.amount_minor, r.status) for r in refused.refunds.all()] == [(3000, RefundStatus.SUCCEEDED)]
        assert [r.amount_minor for r in gateway.find_refunds(intent_id=refused.intent_id)] == [3000]
        assert repository.get(refused_order.id).status == OrderStatus.PENDING_PAYMENT
        again = admin_client.post(
            url, {"action": "accept_held", "_selected_action": [str(refused.id)]}, follow=True
        )
        assert any("not held for review" in str(m) for m in again.context["messages"])
