"""Reconciliation against the running localstripe, with no webhooks registered: whatever a lost
confirm answer or a missed webhook left out of step, `reconcile_payments` repairs from Stripe.
A few cases use the in-memory gateway: dry runs predict exactly what a real run does."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from payments import services
from payments.gateways.base import IntentRequest, PaymentGateway
from payments.models import Payment, PaymentStatus
from tests.payments.fakes import ACTION_METHODS, FakeGateway

pytestmark = pytest.mark.django_db

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    return place(customer=customer, lines={"MUG-1": 2})  # 2900 USD


def lost_confirm(gateway: PaymentGateway, order: Order, payment_method: str, *, attempt: int = 1) -> Payment:
    """Claim an attempt and pay at Stripe, but never apply the answer (the process died), and no
    webhook is registered to tell us: only Stripe knows."""
    payment = Payment.objects.create(
        order_id=order.id, attempt=attempt, amount_minor=order.total_minor, currency=order.currency
    )
    gateway.create_intent(
        IntentRequest(
            order_id=str(order.id),
            attempt=attempt,
            amount_minor=order.total_minor,
            currency=order.currency,
            payment_method=payment_method,
            idempotency_key=f"order:{order.id}:payment:{attempt}",
        )
    )
    return payment


def reconcile(*args: str, stderr: io.StringIO | None = None) -> str:
    out = io.StringIO()
    call_command("reconcile_payments", *args, stdout=out, stderr=stderr or io.StringIO())
    return out.getvalue()


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_missed_webhook_is_repaired(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    payment = lost_confirm(gateway, order, VISA)
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT  # nothing told us

    err = io.StringIO()
    out = reconcile(stderr=err)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED and payment.intent_id.startswith("pi_")
    assert payment.amount_received_minor == 2900
    assert repository.get(order.id).status == OrderStatus.PAID
    assert repository.events(order.id)[-1].actor == "system:reconcile"
    assert (
        f"payment {payment.id} creating → succeeded; order {order.id} pending_payment → paid"
        f" (attempt 1, {payment.intent_id})"
    ) in out
    assert (
        "Checked 1 payment(s)" in out
        and "1 changed, 1 order(s) moved, 0 pending refund(s) settled, 0 could not be checked." in out
    )
    assert err.getvalue() == ""  # not a terminal: no progress bar

    events = len(repository.events(order.id))
    again = reconcile()
    assert "Checked 0 payment(s)" in again and "0 changed" in again
    assert len(repository.events(order.id)) == events


def test_dry_run_reports_and_changes_nothing(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    payment = lost_confirm(gateway, order, VISA)
    out = reconcile("--dry-run")
    assert f"[dry run] payment {payment.id} creating → succeeded" in out
    assert f"order {order.id} pending_payment → paid" in out
    assert "1 would change, 1 order(s) would move" in out and "Dry run: nothing was changed." in out
    payment.refresh_from_db()
    assert (payment.status, payment.intent_id) == (PaymentStatus.CREATING, None)
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    assert "1 changed" in reconcile()
    assert repository.get(order.id).status == OrderStatus.PAID


def test_a_declined_attempt_reconciles_to_payment_failed(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    payment = lost_confirm(gateway, order, DECLINED)
    out = reconcile()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert (payment.failure_code, payment.failure_message) == ("card_declined", "Your card was declined.")
    assert repository.get(order.id).status == OrderStatus.PAYMENT_FAILED
    assert f"payment {payment.id} creating → failed; order {order.id} pending_payment → payment_failed" in out
    assert "0 changed" in reconcile()


def test_a_known_intent_is_retrieved_by_its_id(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    """We learnt the intent id and saw it processing; its success webhook never came."""
    payment = lost_confirm(gateway, order, VISA)
    (intent,) = gateway.find_intents(order_id=str(order.id))
    Payment.objects.filter(id=payment.id).update(intent_id=intent.intent_id, status=PaymentStatus.PROCESSING)

    out = reconcile()
    assert f"payment {payment.id} processing → succeeded" in out
    assert repository.get(order.id).status == OrderStatus.PAID


def test_an_order_behind_its_succeeded_payment_is_moved(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    """The payment row says succeeded but the order's write was lost: still pending_payment."""
    payment = lost_confirm(gateway, order, VISA)
    (intent,) = gateway.find_intents(order_id=str(order.id))
    Payment.objects.filter(id=payment.id).update(
        intent_id=intent.intent_id, status=PaymentStatus.SUCCEEDED, amount_received_minor=2900
    )

    out = reconcile()
    assert f"payment {payment.id} stays succeeded; order {order.id} pending_payment → paid" in out
    assert repository.get(order.id).status == OrderStatus.PAID
    assert "0 changed" in reconcile()


def test_the_time_window(
    stripe_api: str, gateway: PaymentGateway, order: Order, repository: OrderRepository
) -> None:
    payment = lost_confirm(gateway, order, VISA)
    Payment.objects.filter(id=payment.id).update(created_at=timezone.now() - timedelta(days=3))

    # The payment sweep looks at payments created in the window (the last 24 hours before the
    # first run); the events sweep would still apply the intent's event, created just now.
    first = reconcile("--dry-run")
    assert "Checked 0 payment(s)" in first and "1 never received by webhook (would be applied)" in first
    assert "Checked 0 payment(s)" in reconcile("--hours", "48", "--dry-run")
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    since = (timezone.now() - timedelta(days=4)).isoformat()
    assert "1 would change" in reconcile("--since", since, "--dry-run")
    assert "1 changed" in reconcile("--hours", "100")
    assert repository.get(order.id).status == OrderStatus.PAID

    with pytest.raises(CommandError, match="not an ISO 8601"):
        reconcile("--since", "yesterday")


def test_a_payment_stripe_does_not_know_is_reported(
    stripe_api: str, order: Order, repository: OrderRepository
) -> None:
    payment = Payment.objects.create(
        order_id=order.id,
        attempt=1,
        amount_minor=2900,
        currency="USD",
        intent_id="pi_missing",
        status=PaymentStatus.PROCESSING,
    )
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 payment"):
        reconcile(stderr=err)
    assert f"payment {payment.id} (order {order.id}) could not be checked" in err.getvalue()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT


def test_an_attempt_stripe_never_saw_is_left_to_be_claimed_again(
    stripe_api: str, order: Order, repository: OrderRepository
) -> None:
    payment = Payment.objects.create(order_id=order.id, attempt=1, amount_minor=2900, currency="USD")
    out = reconcile()
    assert "Checked 1 payment(s)" in out and "0 changed" in out
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CREATING


def test_a_progress_bar_on_a_terminal_only(stripe_api: str, gateway: PaymentGateway, order: Order) -> None:
    lost_confirm(gateway, order, VISA)
    terminal = TTY()
    reconcile("--dry-run", stderr=terminal)
    assert "Reconciling payments" in terminal.getvalue()

    quiet = TTY()
    reconcile("--dry-run", "--no-progress", stderr=quiet)
    assert quiet.getvalue() == ""


def test_the_service_returns_the_changes(
    stripe_api: str, gateway: PaymentGateway, order: Order, place: Callable[..., Order]
) -> None:
    declined_order = place(lines={"MUG-1": 1})
    paid = lost_confirm(gateway, order, VISA)
    declined = lost_confirm(gateway, declined_order, DECLINED)

    changes = services.payment_reconcile(since=timezone.now() - timedelta(hours=1), gateway=gateway)
    by_payment = {change.payment_id: change for change in changes}
    assert set(by_payment) == {paid.id, declined.id}
    change = by_payment[paid.id]
    assert (change.order_id, change.attempt, change.error) == (order.id, 1, "")
    assert (change.payment_before, change.payment_after) == ("creating", "succeeded")
    assert (change.order_before, change.order_after) == ("pending_payment", "paid")
    assert change.intent_id.startswith("pi_") and change.payment_changed and change.order_changed
    failed = by_payment[declined.id]
    assert (failed.payment_after, failed.order_after) == ("failed", "payment_failed")
    assert services.payment_reconcile(since=timezone.now() - timedelta(hours=1)) == []


@pytest.mark.parametrize("payment_method", [VISA, DECLINED, next(iter(ACTION_METHODS))])
def test_a_dry_run_predicts_the_real_run(
    payment_method: str, order: Order, place: Callable[..., Order], repository: OrderRepository
) -> None:
    fake = FakeGateway()
    earlier = place(lines={"MUG-1": 1})
    # An older order whose first attempt failed properly and whose second one was lost.
    services.payment_confirm(
        order_id=earlier.id, payment_method=DECLINED, actor=Actor.system("t"), gateway=fake
    )
    lost_confirm(fake, earlier, payment_method, attempt=2)
    lost_confirm(fake, order, payment_method)
    since = timezone.now() - timedelta(hours=1)

    predicted = services.payment_reconcile(since=since, gateway=fake, dry_run=True)
    done = services.payment_reconcile(since=since, gateway=fake)
    assert predicted == done and len(done) == 2
    assert services.payment_reconcile(since=since, gateway=fake) == []


def test_a_payment_waiting_for_3d_secure_is_finished_once_the_customer_is(
    order: Order, repository: OrderRepository
) -> None:
    fake = FakeGateway()
    payment = lost_confirm(fake, order, next(iter(ACTION_METHODS)))
    since = timezone.now() - timedelta(hours=1)
    (waiting,) = services.payment_reconcile(since=since, gateway=fake)
    assert (waiting.payment_after, waiting.order_after) == ("requires_action", "pending_payment")
    assert services.payment_reconcile(since=since, gateway=fake) == []  # still waiting: no change

    fake.complete_action(waiting.intent_id)
    (paid,) = services.payment_reconcile(since=since, gateway=fake)
    assert (paid.payment_before, paid.payment_after, paid.order_after) == (
        "requires_action",
        "succeeded",
        "paid",
    )
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED


def test_an_unreachable_provider_is_an_error_and_changes_nothing(order: Order) -> None:
    fake = FakeGateway()
    payment = lost_confirm(fake, order, VISA)
    fake.fail_next = 1
    (change,) = services.payment_reconcile(since=timezone.now() - timedelta(hours=1), gateway=fake)
    assert change.error.startswith("GatewayError") and change.payment_after == "creating"
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CREATING
    assert len(services.payment_reconcile(since=timezone.now() - timedelta(hours=1), gateway=fake)) == 1
