"""The payment page and its JSON endpoints, through the test client, against localstripe.

The browser's part (Stripe.js turning card details into a `pm_...` id) is stood in for by
Stripe's test payment method ids; tests/payments/test_browser.py drives the real page.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import stripe
from django.test import Client
from django.urls import reverse

from orders import services as order_services
from orders.domain import Actor, Order, OrderQuery, OrderStatus
from orders.repositories import OrderRepository
from payments.models import Payment, PaymentStatus
from tests.payments.conftest import JS_URL

# End to end: CI runs these a second time with orders in DynamoDB (`make test-dynamodb`), so
# every order is read through the configured repository, never the ORM.
pytestmark = [pytest.mark.django_db, pytest.mark.e2e, pytest.mark.usefixtures("repository", "stripe_js")]

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"  # card 4000000000000341


# --- helpers ----------------------------------------------------------------------------------
def pay_url(order: Order, name: str = "pay") -> str:
    return reverse(f"payments:{name}", args=[order.id])


def order_url(order: Order) -> str:
    return reverse("orders:order_detail", args=[order.id])


def post_json(client: Client, url: str, body: Any = None, **extra: Any) -> Any:
    return client.post(url, json.dumps(body or {}), content_type="application/json", **extra)


def as_guest_of(client: Client, order: Order) -> Client:
    session = client.session
    session["guest_orders"] = [str(order.id)]
    session.save()
    return client


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def stripe_client(api_base: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_suite", base_addresses={"api": api_base}, max_network_retries=0)


def three_d_secure_method(api_base: str) -> str:
    """A payment method for 4000 0025 0000 3155, which asks for 3-D Secure (made server-side
    here; on the page Stripe.js makes it from the card element)."""
    method = stripe_client(api_base).v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4000002500003155", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    return method.id


def authenticate_in_browser(api_base: str, client_secret: str, *, success: bool) -> None:
    """What the stand-in Stripe.js's `confirmCardPayment` does when its 3-D Secure modal is answered."""
    intent_id = client_secret.split("_secret_")[0]
    request = urllib.request.Request(  # noqa: S310 - the local stand-in
        f"{api_base}/v1/payment_intents/{intent_id}/_authenticate?success={str(success).lower()}",
        data=json.dumps({"key": "pk_test_suite", "client_secret": client_secret}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        assert response.status == 200


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_status(repository: OrderRepository, order: Order, *statuses: OrderStatus) -> None:
    for status in statuses:
        order_services.order_transition(
            repository=repository, order_id=order.id, to_status=status, actor=Actor.system("test")
        )


# --- the page -------------------------------------------------------------------------------
@pytest.mark.parametrize("viewer", ["owner", "guest", "staff"])
def test_the_page_renders_for_those_who_may_see_the_order(
    client: Client, place: Callable[..., Order], customer: Any, staff: Any, viewer: str
) -> None:
    if viewer == "guest":
        order = place(lines={"MUG-1": 2})
        as_guest_of(client, order)
    else:
        order = place(customer=customer, lines={"MUG-1": 2})
        client.force_login(customer if viewer == "owner" else staff)

    response = client.get(pay_url(order))

    assert response.status_code == 200
    assert [t.name for t in response.templates][:2] == ["payments/pay.html", "base.html"]
    html = response.content.decode()
    assert '<strong class="order-total">$29.00</strong>' in html
    assert '<div id="card-element"' in html
    assert ">Pay $29.00</button>" in html
    assert 'id="pay-error"' in html
    assert f'<script src="{JS_URL}"></script>' in html
    assert '<script src="/static/js/checkout.js"></script>' in html
    assert 'data-publishable-key="pk_test_suite"' in html
    assert f'data-confirm-url="{pay_url(order, "pay_confirm")}"' in html
    assert re.search(r'data-csrf-token="\w{32,}"', html)
    assert "None yet." in html
    assert "4242 4242 4242 4242" in html  # test mode: the test cards are shown


@pytest.mark.parametrize("viewer", ["other customer", "anonymous", "other guest"])
def test_the_page_and_its_endpoints_are_404_for_everyone_else(
    client: Client, place: Callable[..., Order], customer: Any, other_customer: Any, viewer: str
) -> None:
    order = place(customer=customer) if viewer != "other guest" else place()
    if viewer == "other customer":
        client.force_login(other_customer)
    elif viewer == "other guest":
        as_guest_of(client, place())  # a guest who placed another order

    assert client.get(pay_url(order)).status_code == 404
    for name in ("pay_setup", "pay_confirm", "pay_sync"):
        response = post_json(client, pay_url(order, name), {"payment_method": VISA})
        assert response.status_code == 404, name
        assert response.json() == {"status": "error", "code": "not_found", "message": "No such order."}
    assert not Payment.objects.exists()


def test_an_unknown_order_is_404(owner: Client) -> None:
    assert owner.get(f"/orders/{uuid.uuid4()}/pay/").status_code == 404
    assert owner.get("/orders/not-a-uuid/pay/").status_code == 404
    assert (
        post_json(owner, f"/orders/{uuid.uuid4()}/pay/confirm", {"payment_method": VISA}).status_code == 404
    )


@pytest.mark.parametrize(
    ("statuses", "message"),
    [
        ((OrderStatus.PAID,), "This order is already paid."),
        ((OrderStatus.CANCELLED,), "This order is cancelled, so it cannot be paid."),
        ((OrderStatus.PAID, OrderStatus.REFUNDED), "This order is refunded: there is nothing to pay."),
    ],
)
def test_an_order_that_cannot_be_paid_redirects_to_its_page(
    owner: Client, order: Order, repository: OrderRepository, statuses: tuple[OrderStatus, ...], message: str
) -> None:
    set_status(repository, order, *statuses)

    response = owner.get(pay_url(order), follow=True)

    assert response.redirect_chain == [(order_url(order), 302)]
    assert message in messages_of(response)
    assert "Pay now" not in response.content.decode()


def test_the_order_page_links_to_the_payment_page_while_payable(
    owner: Client, order: Order, repository: OrderRepository
) -> None:
    html = owner.get(order_url(order)).content.decode()
    assert "Your order is reserved and waiting for payment." in html
    assert f'href="{pay_url(order)}">Pay now</a>' in html

    set_status(repository, order, OrderStatus.PAID)
    html = owner.get(order_url(order)).content.decode()
    assert "Pay now" not in html


# --- paying ---------------------------------------------------------------------------------
def test_setup_gives_a_setup_intent_secret(stripe_api: str, owner: Client, order: Order) -> None:
    first = post_json(owner, pay_url(order, "pay_setup"))
    second = post_json(owner, pay_url(order, "pay_setup"))

    assert first.status_code == 200, first.content
    secret = first.json()["client_secret"]
    assert re.fullmatch(r"seti_\w+_secret_\w+", secret)
    # Every try gets its own: a retry after a decline never gets a used SetupIntent back.
    assert second.json()["client_secret"] != secret
    assert not Payment.objects.exists()


def test_paying_with_a_good_card(
    stripe_api: str, owner: Client, order: Order, repository: OrderRepository
) -> None:
    response = post_json(owner, pay_url(order, "pay_confirm"), {"payment_method": VISA})

    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "succeeded",
        "attempt": 1,
        "message": "Payment received.",
        "redirect": order_url(order),
    }
    assert repository.get(order.id).status == OrderStatus.PAID
    payment = Payment.objects.get(order_id=order.id)
    assert (payment.status, payment.payment_method) == (PaymentStatus.SUCCEEDED, VISA)

    page = owner.get(order_url(order))
    assert "Payment received. Thank you!" in messages_of(page)
    assert '<span class="status status-paid">Paid</span>' in page.content.decode()
    # Paying again (a double click) charges nothing more.
    again = post_json(owner, pay_url(order, "pay_confirm"), {"payment_method": VISA})
    assert again.json()["status"] == "succeeded"
    assert Payment.objects.count() == 1


def test_a_guest_pays_after_a_declined_card_without_a_new_order(
    stripe_api: str, client: Client, place: Callable[..., Order], repository: OrderRepository
) -> None:
    order = place(lines={"MUG-1": 2})
    as_guest_of(client, order)

    declined = post_json(client, pay_url(order, "pay_confirm"), {"payment_method": DECLINED})

    assert declined.status_code == 402, declined.content
    assert declined.json() == {
        "status": "failed",
        "attempt": 1,
        "message": "Your card was declined.",
        "code": "card_declined",
    }
    assert repository.get(order.id).status == OrderStatus.PAYMENT_FAILED
    order_page = client.get(order_url(order)).content.decode()
    assert '<span class="failure-reason">Your card was declined.</span>' in order_page
    assert f'href="{pay_url(order)}">Pay now</a>' in order_page
    pay_page = client.get(pay_url(order)).content.decode()
    assert re.search(r"Attempt 1: <span[^>]*>Failed</span>\s*<span[^>]*>Your card was declined.", pay_page)

    paid = post_json(client, pay_url(order, "pay_confirm"), {"payment_method": VISA})

    assert paid.status_code == 200, paid.content
    assert (paid.json()["status"], paid.json()["attempt"]) == ("succeeded", 2)
    assert repository.get(order.id).status == OrderStatus.PAID
    assert len(repository.list(OrderQuery(limit=10)).orders) == 1
    assert list(Payment.objects.order_by("attempt").values_list("status", flat=True)) == [
        PaymentStatus.FAILED,
        PaymentStatus.SUCCEEDED,
    ]
    events = [e.data.get("failure_message") for e in repository.events(order.id) if e.to_status]
    assert "Your card was declined." in events


@pytest.mark.parametrize(
    ("success", "status", "code", "order_status"),
    [
        (True, "succeeded", 200, OrderStatus.PAID),
        (False, "failed", 402, OrderStatus.PAYMENT_FAILED),
    ],
)
def test_3d_secure_then_sync(
    stripe_api: str,
    owner: Client,
    order: Order,
    repository: OrderRepository,
    success: bool,
    status: str,
    code: int,
    order_status: OrderStatus,
) -> None:
    method = three_d_secure_method(stripe_api)

    response = post_json(owner, pay_url(order, "pay_confirm"), {"payment_method": method})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "requires_action"
    assert re.fullmatch(r"pi_\w+_secret_\w+", body["client_secret"])
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    authenticate_in_browser(stripe_api, body["client_secret"], success=success)
    synced = post_json(owner, pay_url(order, "pay_sync"))

    assert synced.status_code == code, synced.content
    assert synced.json()["status"] == status
    assert "client_secret" not in synced.json()
    assert repository.get(order.id).status == order_status
    if not success:
        assert synced.json()["message"] == "The provided PaymentMethod has failed authentication."


def test_sync_before_any_payment(stripe_api: str, owner: Client, order: Order) -> None:
    response = post_json(owner, pay_url(order, "pay_sync"))
    assert response.status_code == 409
    assert response.json()["code"] == "no_payment"


def test_sync_of_a_paid_order_sends_the_page_to_the_order(
    stripe_api: str, owner: Client, order: Order
) -> None:
    post_json(owner, pay_url(order, "pay_confirm"), {"payment_method": VISA})
    response = post_json(owner, pay_url(order, "pay_sync"))
    assert response.status_code == 200
    assert response.json()["redirect"] == order_url(order)


@pytest.mark.parametrize("name", ["pay_setup", "pay_confirm"])
def test_an_order_that_cannot_be_paid_is_refused(
    stripe_api: str, owner: Client, order: Order, repository: OrderRepository, name: str
) -> None:
    set_status(repository, order, OrderStatus.CANCELLED)

    response = post_json(owner, pay_url(order, name), {"payment_method": VISA})

    assert response.status_code == 409
    body = response.json()
    assert (body["status"], body["code"], body["redirect"]) == ("error", "not_payable", order_url(order))
    assert "cancelled" in body["message"]
    assert not Payment.objects.exists()


def test_an_unreachable_stripe_is_a_503_to_try_again(
    stripe_api: str, settings: Any, owner: Client, order: Order, repository: OrderRepository
) -> None:
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{closed_port()}"

    for name in ("pay_setup", "pay_confirm"):
        response = post_json(owner, pay_url(order, name), {"payment_method": VISA})
        assert response.status_code == 503, name
        assert response.json()["code"] == "payment_provider_unavailable"
        assert "try again" in response.json()["message"]
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT


# --- bad requests ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[]",
        '"pm_card_visa"',
        "{}",
        '{"payment_method": 42}',
        '{"payment_method": "4242424242424242"}',
        '{"payment_method": "pm_"}',
        '{"payment_method": "pm_card visa"}',
        json.dumps({"payment_method": "pm_" + "x" * 300}),
        b"\xff\xfe",
    ],
)
def test_a_bad_body_is_a_400_in_json(owner: Client, order: Order, body: str | bytes) -> None:
    response = owner.post(pay_url(order, "pay_confirm"), body, content_type="application/json")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "invalid"
    assert response.json()["message"]
    assert not Payment.objects.exists()


def test_the_endpoints_answer_only_post(owner: Client, order: Order) -> None:
    for name in ("pay_setup", "pay_confirm", "pay_sync"):
        response = owner.get(pay_url(order, name))
        assert response.status_code == 405
        assert response["Allow"] == "POST"
        assert response.json()["code"] == "method_not_allowed"
    assert owner.post(pay_url(order)).status_code == 405


def test_csrf_is_enforced(stripe_api: str, customer: Any, order: Order, repository: OrderRepository) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(customer)

    for name in ("pay_setup", "pay_confirm", "pay_sync"):
        refused = post_json(client, pay_url(order, name), {"payment_method": VISA})
        assert refused.status_code == 403, name
    assert not Payment.objects.exists()

    page = client.get(pay_url(order)).content.decode()
    token = re.search(r'data-csrf-token="(\w+)"', page).group(1)
    setup = post_json(client, pay_url(order, "pay_setup"), HTTP_X_CSRFTOKEN=token)
    paid = post_json(client, pay_url(order, "pay_confirm"), {"payment_method": VISA}, HTTP_X_CSRFTOKEN=token)

    assert setup.status_code == 200, setup.content
    assert paid.status_code == 200, paid.content
    assert repository.get(order.id).status == OrderStatus.PAID


def test_the_order_page_shows_the_newest_failure_reason(
    stripe_api: str, owner: Client, order: Order, repository: OrderRepository
) -> None:
    needs_3ds = post_json(
        owner, pay_url(order, "pay_confirm"), {"payment_method": three_d_secure_method(stripe_api)}
    )
    authenticate_in_browser(stripe_api, needs_3ds.json()["client_secret"], success=False)
    assert post_json(owner, pay_url(order, "pay_sync")).status_code == 402
    html = owner.get(order_url(order)).content.decode()
    assert '<span class="failure-reason">The provided PaymentMethod has failed authentication.</span>' in html

    assert post_json(owner, pay_url(order, "pay_confirm"), {"payment_method": DECLINED}).status_code == 402

    html = owner.get(order_url(order)).content.decode()
    assert repository.get(order.id).status == OrderStatus.PAYMENT_FAILED
    assert html.count('class="failure-reason"') == 1
    assert '<span class="failure-reason">Your card was declined.</span>' in html
