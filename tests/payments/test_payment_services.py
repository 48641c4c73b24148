"""Payment services with the in-memory gateway: ordering of reports, retries, refund limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from payments import services
from payments.gateways.base import GatewayError, IntentStatus
from payments.models import Payment, PaymentStatus, Refund, RefundStatus
from tests.payments.fakes import FakeGateway

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test")


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    return place(customer=customer, lines={"MUG-1": 2})


def confirm(order: Order, fake: FakeGateway, method: str = "pm_card_visa") -> Payment:
    return services.payment_confirm(order_id=order.id, payment_method=method, actor=ACTOR, gateway=fake)


def test_a_successful_payment_pays_the_order(
    order: Order, fake: FakeGateway, repository: OrderRepository
) -> None:
    payment = confirm(order, fake)
    assert (payment.status, payment.amount_received_minor, payment.attempt) == (
        PaymentStatus.SUCCEEDED,
        2900,
        1,
    )
    assert repository.get(order.id).status == OrderStatus.PAID
    assert fake.calls == [("create_intent", f"order:{order.id}:payment:1")]


def test_confirming_a_paid_order_again_calls_nobody(order: Order, fake: FakeGateway) -> None:
    first = confirm(order, fake)
    again = confirm(order, fake, "pm_card_chargeCustomerFail")
    assert again.id == first.id and again.status == PaymentStatus.SUCCEEDED
    assert len(fake.calls) == 1


def test_each_retry_after_a_decline_is_a_new_attempt_with_its_own_key(
    order: Order, fake: FakeGateway, repository: OrderRepository
) -> None:
    declined = confirm(order, fake, "pm_card_chargeCustomerFail")
    assert (declined.status, declined.failure_code) == (PaymentStatus.FAILED, "card_declined")
    assert repository.get(order.id).status == OrderStatus.PAYMENT_FAILED
    paid = confirm(order, fake)
    assert paid.attempt == 2
    assert [key for _, key in fake.calls] == [f"order:{order.id}:payment:1", f"order:{order.id}:payment:2"]
    assert repository.get(order.id).status == OrderStatus.PAID


def test_an_unreachable_provider_leaves_a_claim_that_is_retried_with_the_same_key(
    order: Order, fake: FakeGateway, repository: OrderRepository
) -> None:
    fake.fail_next = 1
    # The clock stands still until the claim is aged on purpose below: "soon after" holds however
    # slowly this runs.
    with time_machine.travel(timezone.now(), tick=False):
        with pytest.raises(GatewayError):
            confirm(order, fake)
        claimed = Payment.objects.get(order_id=order.id)
        assert claimed.status == PaymentStatus.CREATING
        # Soon after, a repeat returns the claim without calling the provider again (it may be busy).
        assert confirm(order, fake).id == claimed.id
        assert len(fake.calls) == 1
    # Once the claim is stale, the same attempt is tried again with the same idempotency key.
    Payment.objects.filter(id=claimed.id).update(updated_at=timezone.now() - timedelta(minutes=5))
    paid = confirm(order, fake)
    assert (paid.id, paid.status) == (claimed.id, PaymentStatus.SUCCEEDED)
    assert [key for _, key in fake.calls] == [f"order:{order.id}:payment:1"] * 2
    assert repository.get(order.id).status == OrderStatus.PAID


def test_reports_never_move_a_payment_backwards(
    order: Order, fake: FakeGateway, repository: OrderRepository
) -> None:
    payment = confirm(order, fake, "pm_card_threeDSecure2Required")
    assert payment.status == PaymentStatus.REQUIRES_ACTION
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT
    done = fake.complete_action(payment.intent_id)
    services.payment_apply_intent(
        payment_id=payment.id, intent=done, actor=ACTOR, event_created=done.created + 10
    )
    older = replace(done, status=IntentStatus.REQUIRES_ACTION)
    late_failure = replace(
        done, status=IntentStatus.REQUIRES_PAYMENT_METHOD, error_code="card_declined", error_message="late"
    )
    for report, created in [(older, done.created + 20), (late_failure, done.created + 30), (late_failure, 1)]:
        services.payment_apply_intent(
            payment_id=payment.id, intent=report, actor=ACTOR, event_created=created
        )
    payment.refresh_from_db()
    assert (payment.status, payment.failure_message) == (PaymentStatus.SUCCEEDED, "")
    assert repository.get(order.id).status == OrderStatus.PAID


def test_a_failure_of_an_older_attempt_does_not_fail_the_order(
    order: Order, fake: FakeGateway, repository: OrderRepository
) -> None:
    first = confirm(order, fake, "pm_card_threeDSecure2Required")  # attempt 1 waits for 3-D Secure
    Payment.objects.filter(id=first.id).update(status=PaymentStatus.CANCELED)  # abandoned
    second = confirm(order, fake, "pm_card_threeDSecure2Required")
    assert second.attempt == 2
    failed = replace(
        fake.intents[first.intent_id],
        status=IntentStatus.REQUIRES_PAYMENT_METHOD,
        error_code="authentication_failed",
        error_message="3-D Secure failed",
    )
    Payment.objects.filter(id=first.id).update(status=PaymentStatus.REQUIRES_ACTION)
    services.payment_apply_intent(payment_id=first.id, intent=failed, actor=ACTOR)
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT


class TestRefundLimits:
    @pytest.fixture
    def paid(self, order: Order, fake: FakeGateway) -> Order:
        confirm(order, fake)
        return order

    def test_pending_refunds_count_against_what_is_left(self, paid: Order, fake: FakeGateway) -> None:
        fake.fail_next = 1
        with pytest.raises(GatewayError):
            services.payment_refund(order_id=paid.id, amount_minor=2000, actor=ACTOR, gateway=fake)
        pending = Refund.objects.get()
        assert pending.status == RefundStatus.PENDING  # the provider may or may not have done it
        with pytest.raises(services.RefundRefused, match=r"^At most \$9\.00 can still be refunded\.$"):
            services.payment_refund(order_id=paid.id, amount_minor=901, actor=ACTOR, gateway=fake)
        refund = services.payment_refund(order_id=paid.id, amount_minor=900, actor=ACTOR, gateway=fake)
        assert refund.status == RefundStatus.SUCCEEDED

    def test_zero_and_negative_amounts_are_refused(self, paid: Order, fake: FakeGateway) -> None:
        for amount in (0, -5):
            with pytest.raises(services.RefundRefused):
                services.payment_refund(order_id=paid.id, amount_minor=amount, actor=ACTOR, gateway=fake)
        assert not Refund.objects.exists()

    def test_a_full_refund_refunds_the_order_once(
        self, paid: Order, fake: FakeGateway, repository: OrderRepository
    ) -> None:
        refund = services.payment_refund(order_id=paid.id, actor=ACTOR, gateway=fake, reason="damaged")
        assert (refund.amount_minor, refund.reason) == (2900, "damaged")
        assert repository.get(paid.id).status == OrderStatus.REFUNDED
        # The provider's later word on the same refund changes nothing more.
        services.refund_apply(
            refund_id=refund.id, result=fake.refunds[refund.provider_refund_id], actor=ACTOR
        )
        transitions = [e.to_status for e in repository.events(paid.id) if e.to_status == OrderStatus.REFUNDED]
        assert transitions == [OrderStatus.REFUNDED]
        assert fake.calls[-1] == ("refund", f"refund:{refund.id}")


class TestPendingRefundsAreSettled:
    @pytest.fixture
    def paid(self, order: Order, fake: FakeGateway) -> Order:
        confirm(order, fake)
        return order

    def age(self) -> None:
        Refund.objects.update(updated_at=timezone.now() - timedelta(minutes=10))

    def test_a_refund_whose_answer_was_lost_is_found_and_applied(
        self, paid: Order, fake: FakeGateway, repository: OrderRepository
    ) -> None:
        fake.lose_next_answer = True
        with time_machine.travel(timezone.now(), tick=False):  # "too recent" at any speed
            with pytest.raises(GatewayError):
                services.payment_refund(order_id=paid.id, actor=ACTOR, gateway=fake)
            assert services.refund_reconcile_pending(gateway=fake) == []  # too recent to judge
        self.age()
        [change] = services.refund_reconcile_pending(gateway=fake)
        assert (change.status_before, change.status_after) == ("pending", "succeeded")
        assert Refund.objects.get().status == RefundStatus.SUCCEEDED
        assert repository.get(paid.id).status == OrderStatus.REFUNDED

    def test_a_refund_stripe_never_got_is_failed_and_its_amount_freed(
        self, paid: Order, fake: FakeGateway, repository: OrderRepository
    ) -> None:
        fake.fail_next = 1
        with pytest.raises(GatewayError):
            services.payment_refund(order_id=paid.id, amount_minor=2900, actor=ACTOR, gateway=fake)
        self.age()
        [dry] = services.refund_reconcile_pending(gateway=fake, dry_run=True)
        assert dry.status_after == "failed" and Refund.objects.get().status == RefundStatus.PENDING
        services.refund_reconcile_pending(gateway=fake)
        assert Refund.objects.get().status == RefundStatus.FAILED
        again = services.payment_refund(order_id=paid.id, amount_minor=2900, actor=ACTOR, gateway=fake)
        assert again.status == RefundStatus.SUCCEEDED
        assert repository.get(paid.id).status == OrderStatus.REFUNDED
