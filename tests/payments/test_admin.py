"""The payments admin against the running localstripe: the order's payments and refunds on its
page, refunds through the service (in full, or an amount on the intermediate page), the
read-only payment and refund lists, and stored webhook events with filters and replay."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from orders.services import actor_for
from payments import services
from payments.models import Payment, PaymentStatus, Refund, RefundStatus, WebhookEvent, WebhookResult
from tests.orders.factories import UserFactory
from tests.payments import stripe_objects

pytestmark = pytest.mark.django_db

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"
ORDERS = "/admin/orders/order/"


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    return place(customer=customer, lines={"MUG-1": 2})  # 2900 USD


@pytest.fixture
def paid_order(stripe_api: str, order: Order) -> Order:
    payment = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=Actor.system("t"))
    assert payment.status == PaymentStatus.SUCCEEDED
    return order


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


class TestOrderPage:
    def test_shows_its_payments_and_refunds(
        self, admin_client: Client, stripe_api: str, order: Order, staff: Any
    ) -> None:
        declined = services.payment_confirm(
            order_id=order.id, payment_method=DECLINED, actor=Actor.system("t")
        )
        paid = services.payment_confirm(order_id=order.id, payment_method=VISA, actor=Actor.system("t"))
        services.payment_refund(
            order_id=order.id, actor=actor_for(staff), amount_minor=900, reason="chipped", requested_by=staff
        )

        page = admin_client.get(f"{ORDERS}{order.id}/change/")
        html = page.content.decode()
        assert page.status_code == 200
        assert "Payments and refunds" in html
        assert declined.intent_id and declined.intent_id in html
        assert paid.intent_id and paid.intent_id in html
        assert "Your card was declined." in html
        assert "Failed" in html and "Succeeded" in html
        assert "$9.00" in html and "chipped" in html and f"staff:{staff.pk}" in html
        assert "Refundable: $20.00 of $29.00 paid." in html
        assert Refund.objects.get().provider_refund_id in html
        assert f"{ORDERS}{order.id}/refund/" in html  # 2000 left to refund

    def test_an_order_without_payments_says_so(self, admin_client: Client, order: Order) -> None:
        html = admin_client.get(f"{ORDERS}{order.id}/change/").content.decode()
        assert "No payment yet." in html
        assert f"{ORDERS}{order.id}/refund/" not in html


class TestRefundActions:
    def test_refund_in_full_goes_through_the_service(
        self, admin_client: Client, paid_order: Order, repository: OrderRepository, staff: Any
    ) -> None:
        response = admin_client.post(
            ORDERS, {"action": "refund_in_full", "_selected_action": [str(paid_order.id)]}, follow=True
        )
        assert response.status_code == 200
        assert f"Order {paid_order.reference}: refund of $29.00 succeeded." in messages_of(response)
        assert repository.get(paid_order.id).status == OrderStatus.REFUNDED
        refund = Refund.objects.get()
        assert (refund.amount_minor, refund.status, refund.actor, refund.requested_by) == (
            2900,
            RefundStatus.SUCCEEDED,
            f"staff:{staff.pk}",
            staff,
        )
        assert repository.events(paid_order.id)[-1].actor == f"staff:{staff.pk}"

    def test_the_intermediate_page_refunds_an_amount(
        self, admin_client: Client, paid_order: Order, repository: OrderRepository
    ) -> None:
        selected = {"action": "refund_amount", "_selected_action": [str(paid_order.id)]}
        page = admin_client.post(ORDERS, selected)
        assert page.status_code == 200
        assert "admin/payments/refund.html" in [t.name for t in page.templates]
        html = page.content.decode()
        assert 'name="amount"' in html and 'name="reason"' in html and 'name="refund_all"' in html
        assert "Amount (minor units)" not in html and "Amount (USD)" in html
        assert "Refundable: <strong>$29.00</strong> of $29.00 paid." in html
        assert "Refund everything that is left ($29.00)" in html
        assert not Refund.objects.exists()  # nothing happens before the confirmation

        done = admin_client.post(
            ORDERS, {**selected, "apply": "yes", "amount": "9.00", "reason": "chip"}, follow=True
        )
        assert f"Order {paid_order.reference}: refund of $9.00 succeeded." in messages_of(done)
        assert repository.get(paid_order.id).status == OrderStatus.PARTIALLY_REFUNDED
        refund = Refund.objects.get()
        assert (refund.amount_minor, refund.reason, refund.status) == (900, "chip", RefundStatus.SUCCEEDED)

    def test_an_over_refund_is_a_form_error(
        self, admin_client: Client, paid_order: Order, repository: OrderRepository
    ) -> None:
        selected = {"action": "refund_amount", "_selected_action": [str(paid_order.id)], "apply": "yes"}
        response = admin_client.post(ORDERS, {**selected, "amount": "29.01"})
        assert response.status_code == 200
        assert response.context["form"].errors == {"amount": ["At most $29.00 can be refunded."]}
        assert "At most $29.00 can be refunded." in response.content.decode()
        assert not Refund.objects.exists()
        assert repository.get(paid_order.id).status == OrderStatus.PAID

    @pytest.mark.parametrize(
        ("amount", "error"),
        [
            ("0", "The amount must be more than zero."),
            ("-5", "The amount must be more than zero."),
            ("12.505", "USD has 2 decimals."),
            ("twelve", "Enter an amount of USD, such as 12.50."),
            ("NaN", "Enter an amount of USD."),
            ("1e400", "The amount is too large."),
            ("30", "At most $29.00 can be refunded."),
        ],
    )
    def test_an_amount_that_is_not_money_is_a_form_error(
        self, admin_client: Client, paid_order: Order, amount: str, error: str
    ) -> None:
        url = f"{ORDERS}{paid_order.id}/refund/"
        response = admin_client.post(url, {"amount": amount})
        assert response.status_code == 200
        assert response.context["form"].errors == {"amount": [error]}
        assert not Refund.objects.exists()

    def test_an_empty_amount_refunds_nothing_unless_everything_is_chosen(
        self, admin_client: Client, paid_order: Order, repository: OrderRepository
    ) -> None:
        url = f"{ORDERS}{paid_order.id}/refund/"
        empty = admin_client.post(url, {"amount": ""})
        assert empty.status_code == 200
        assert empty.context["form"].non_field_errors() == [
            "Enter the amount to refund, or tick “Refund everything that is left”."
        ]
        both = admin_client.post(url, {"amount": "1.00", "refund_all": "on"})
        assert both.context["form"].non_field_errors() == [
            "Give an amount or tick “Refund everything that is left”, not both."
        ]
        assert not Refund.objects.exists()
        # The submit button asks first (static/js/confirm-buttons.js).
        page = admin_client.get(url).content.decode()
        assert f'data-confirm="Refund order {paid_order.reference} now?' in page
        assert "js/confirm-buttons.js" in page
        everything = admin_client.post(url, {"refund_all": "on"}, follow=True)
        assert f"Order {paid_order.reference}: refund of $29.00 succeeded." in messages_of(everything)
        assert repository.get(paid_order.id).status == OrderStatus.REFUNDED

    def test_the_refund_page_of_an_unpaid_order_refunds_nothing(
        self, admin_client: Client, stripe_api: str, order: Order
    ) -> None:
        url = f"{ORDERS}{order.id}/refund/"
        page = admin_client.get(url)
        assert (
            page.status_code == 200
            and "Refundable: <strong>$0.00</strong> of $0.00 paid." in page.content.decode()
        )
        over = admin_client.post(url, {"amount": "1.00"})
        assert over.context["form"].errors == {"amount": ["At most $0.00 can be refunded."]}
        everything = admin_client.post(url, {"refund_all": "on"}, follow=True)
        assert messages_of(everything) == [
            f"Order {order.reference} not refunded: An order that is pending_payment cannot be refunded."
        ]
        assert not Refund.objects.exists()

    def test_bad_input_is_shown_on_the_page(
        self, admin_client: Client, paid_order: Order, place: Callable[..., Order]
    ) -> None:
        other = place()
        two = {"action": "refund_amount", "_selected_action": [str(paid_order.id), str(other.id)]}
        response = admin_client.post(ORDERS, {**two, "apply": "yes", "amount": "1.00"})
        assert response.status_code == 200
        assert "An amount can only be given for one order" in response.content.decode()
        assert not Refund.objects.exists()

    def test_an_unpaid_order_is_refused_with_a_message(
        self, admin_client: Client, stripe_api: str, order: Order, repository: OrderRepository
    ) -> None:
        response = admin_client.post(
            ORDERS, {"action": "refund_in_full", "_selected_action": [str(order.id)]}, follow=True
        )
        assert messages_of(response) == [
            f"Order {order.reference} not refunded: An order that is pending_payment cannot be refunded."
        ]
        assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    def test_the_refund_page_of_one_order(
        self, admin_client: Client, paid_order: Order, repository: OrderRepository
    ) -> None:
        url = f"{ORDERS}{paid_order.id}/refund/"
        assert admin_client.get(url).status_code == 200
        done = admin_client.post(url, {"amount": "10.00", "reason": "late"})
        assert done.status_code == 302 and done.url == f"{ORDERS}{paid_order.id}/change/"
        assert repository.get(paid_order.id).status == OrderStatus.PARTIALLY_REFUNDED
        page = admin_client.get(url).content.decode()
        assert "Refundable: <strong>$19.00</strong> of $29.00 paid ($10.00 refunded already)." in page
        rest = admin_client.post(url, {"refund_all": "on"}, follow=True)
        assert f"Order {paid_order.reference}: refund of $19.00 succeeded." in messages_of(rest)
        assert repository.get(paid_order.id).status == OrderStatus.REFUNDED
        assert sorted(Refund.objects.values_list("amount_minor", flat=True)) == [1000, 1900]
        assert admin_client.get(f"{ORDERS}{uuid.uuid4()}/refund/").status_code == 302  # no such order

    def test_refunding_needs_the_refund_permission(self, paid_order: Order) -> None:
        clerk = UserFactory(username="clerk", is_staff=True)
        clerk.user_permissions.add(
            *Permission.objects.filter(
                codename__in=["view_order", "change_order"], content_type__app_label="orders"
            )
        )
        client = Client()
        client.force_login(clerk)
        listing = client.get(ORDERS)
        assert listing.status_code == 200 and "refund_in_full" not in listing.content.decode()
        assert client.get(f"{ORDERS}{paid_order.id}/refund/").status_code == 403
        refused = client.post(ORDERS, {"action": "refund_in_full", "_selected_action": [str(paid_order.id)]})
        assert refused.status_code == 302  # "No action selected."
        assert not Refund.objects.exists()


class TestPaymentAndRefundLists:
    def test_lists_render_with_filters_and_search(
        self, admin_client: Client, paid_order: Order, staff: Any, place: Callable[..., Order]
    ) -> None:
        services.payment_refund(order_id=paid_order.id, actor=actor_for(staff), amount_minor=400)
        payment = Payment.objects.get(order_id=paid_order.id)
        other = place()
        Payment.objects.create(order_id=other.id, attempt=1, amount_minor=1450, currency="USD")

        listing = admin_client.get("/admin/payments/payment/")
        assert listing.status_code == 200
        assert payment.intent_id in listing.content.decode()
        # Money as money, the order as its short reference linking to it.
        assert "$29.00" in listing.content.decode() and "$14.50" in listing.content.decode()
        assert f'title="{paid_order.id}">{paid_order.reference}</a>' in listing.content.decode()
        # Refusing held payments refunds them: the browser asks first (static/js/confirm-buttons.js).
        assert (
            'value="refuse_held" data-confirm="Refuse the selected held payments' in listing.content.decode()
        )
        assert "js/confirm-buttons.js" in listing.content.decode()
        succeeded = admin_client.get("/admin/payments/payment/", {"status__exact": "succeeded"})
        assert str(paid_order.id) in succeeded.content.decode()
        assert str(other.id) not in succeeded.content.decode()
        assert admin_client.get("/admin/payments/payment/", {"provider__exact": "stripe"}).status_code == 200
        by_order = admin_client.get("/admin/payments/payment/", {"q": str(other.id)}).content.decode()
        assert str(other.id) in by_order and payment.intent_id not in by_order
        by_intent = admin_client.get("/admin/payments/payment/", {"q": payment.intent_id}).content.decode()
        assert str(paid_order.id) in by_intent and str(other.id) not in by_intent

        detail = admin_client.get(f"/admin/payments/payment/{payment.pk}/change/")
        assert detail.status_code == 200 and payment.intent_id in detail.content.decode()
        if payment.client_secret:
            assert payment.client_secret not in detail.content.decode()
        assert 'name="status"' not in detail.content.decode()  # read-only
        assert admin_client.get("/admin/payments/payment/add/").status_code == 403

        refund = Refund.objects.get()
        refunds = admin_client.get("/admin/payments/refund/")
        assert refunds.status_code == 200 and refund.provider_refund_id in refunds.content.decode()
        assert "$4.00" in refunds.content.decode()
        assert "$4.00" in detail.content.decode()  # the payment's refunds inline
        assert admin_client.get("/admin/payments/refund/", {"status__exact": "succeeded"}).status_code == 200
        assert admin_client.get("/admin/payments/refund/", {"q": str(paid_order.id)}).status_code == 200
        assert admin_client.get(f"/admin/payments/refund/{refund.pk}/change/").status_code == 200
        assert admin_client.get(f"/admin/payments/refund/{refund.pk}/delete/").status_code == 403


def post_event(payload: dict[str, Any]) -> Any:
    return stripe_objects.deliver(Client(), payload)


class TestWebhookEvents:
    @pytest.fixture
    def failed_event(self, stripe_api: str, order: Order) -> WebhookEvent:
        """An event whose handler fails: its payment points at an order that cannot be read."""
        Payment.objects.create(
            order_id=uuid.uuid4(), attempt=1, amount_minor=2900, currency="USD", intent_id="pi_ghost"
        )
        intent = stripe_objects.payment_intent(order_id=str(order.id), intent_id="pi_ghost", amount=2900)
        payload = stripe_objects.event("payment_intent.succeeded", intent, event_id="evt_ghost")
        assert post_event(payload).status_code == 503
        return WebhookEvent.objects.get(event_id="evt_ghost")

    @pytest.fixture
    def unhandled_event(self, stripe_api: str) -> WebhookEvent:
        payload = stripe_objects.event(
            "customer.created", {"object": "customer", "id": "cus_1"}, event_id="evt_cust"
        )
        assert post_event(payload).status_code == 200
        return WebhookEvent.objects.get(event_id="evt_cust")

    def test_list_filters_and_search(
        self, admin_client: Client, failed_event: WebhookEvent, unhandled_event: WebhookEvent
    ) -> None:
        url = "/admin/payments/webhookevent/"

        def shown(params: dict[str, str]) -> set[str]:
            response = admin_client.get(url, params)
            assert response.status_code == 200
            html = response.content.decode()
            return {e for e in ("evt_ghost", "evt_cust") if e in html}

        assert shown({}) == {"evt_ghost", "evt_cust"}
        assert shown({"result__exact": "failed"}) == {"evt_ghost"}
        assert shown({"result__exact": "unhandled"}) == {"evt_cust"}
        assert shown({"processed": "no"}) == {"evt_ghost"}
        assert shown({"processed": "yes"}) == {"evt_cust"}
        assert shown({"type": "customer.created"}) == {"evt_cust"}
        assert shown({"q": "evt_ghost"}) == {"evt_ghost"}

        detail = admin_client.get(f"{url}{failed_event.pk}/change/").content.decode()
        assert "OrderNotFound" in detail and "pi_ghost" in detail
        assert admin_client.get(f"{url}add/").status_code == 403

    def test_replay_reports_failures_then_applies_the_fixed_event(
        self,
        admin_client: Client,
        failed_event: WebhookEvent,
        unhandled_event: WebhookEvent,
        order: Order,
        repository: OrderRepository,
    ) -> None:
        url = "/admin/payments/webhookevent/"
        replay = {"action": "replay_events", "_selected_action": [str(failed_event.pk)]}

        again = admin_client.post(url, replay, follow=True)
        assert again.status_code == 200
        assert any(
            m.startswith("evt_ghost (payment_intent.succeeded) failed again: OrderNotFound")
            for m in messages_of(again)
        )
        failed_event.refresh_from_db()
        assert (failed_event.result, failed_event.attempts) == (WebhookResult.FAILED, 2)

        Payment.objects.filter(intent_id="pi_ghost").update(order_id=order.id)  # the data is fixed
        both = {
            "action": "replay_events",
            "_selected_action": [str(failed_event.pk), str(unhandled_event.pk)],
        }
        done = admin_client.post(url, both, follow=True)
        assert messages_of(done) == ["Replayed 2 event(s): 1 processed, 1 unhandled."]
        failed_event.refresh_from_db()
        assert failed_event.result == WebhookResult.PROCESSED and failed_event.error == ""
        assert failed_event.processed_at is not None
        assert repository.get(order.id).status == OrderStatus.PAID
        assert Payment.objects.get(intent_id="pi_ghost").status == PaymentStatus.SUCCEEDED
