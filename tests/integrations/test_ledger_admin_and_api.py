"""Dead letters for staff: the admin's ledger and retry actions, the API, the resend action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from integrations import services
from integrations.adapters.base import DeliveryError
from integrations.models import Delivery, DeliveryState
from orders import services as order_services
from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from tests.integrations.fakes import FakeAdapter

pytestmark = pytest.mark.django_db

PERMANENT = DeliveryError(
    transient=False, error_class="HTTPError", message="400 bad from address", provider_status=400
)


@pytest.fixture
def dead(place: Callable[..., Order], repository: OrderRepository) -> Order:
    """A paid order whose email and SNS deliveries are dead letters."""
    order = place()
    order_services.order_transition(
        repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=Actor.system("t")
    )
    services.outbox_relay(dispatch=False)
    for name in ("email", "sns"):
        services.deliveries_dispatch(integration=name, adapter=FakeAdapter(name=name, script=[PERMANENT]))
    return order


def test_the_ledger_lists_and_filters_dead_letters(admin_client: Client, dead: Order) -> None:
    page = admin_client.get(
        "/admin/integrations/delivery/", {"state__exact": "dead", "integration__exact": "email"}
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert "400 bad from address" in html and html.count("order.paid") >= 1
    assert admin_client.get("/admin/integrations/delivery/", {"q": str(dead.id)}).status_code == 200


def test_retry_and_retry_all_matching(admin_client: Client, dead: Order) -> None:
    email = Delivery.objects.get(integration="email")
    admin_client.post(
        "/admin/integrations/delivery/", {"action": "retry", "_selected_action": [str(email.id)]}
    )
    email.refresh_from_db()
    assert (email.state, email.attempts) == (DeliveryState.PENDING, 0)
    # "all matching" takes the filters, not the ticked rows.
    admin_client.post(
        "/admin/integrations/delivery/?integration__exact=sns",
        {"action": "retry_all_matching", "_selected_action": [str(email.id)]},
    )
    assert Delivery.objects.get(integration="sns").state == DeliveryState.PENDING


def test_the_order_page_shows_deliveries_and_resends_the_email(admin_client: Client, dead: Order) -> None:
    services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email"))  # nothing due: dead
    page = admin_client.get(f"/admin/orders/order/{dead.id}/change/").content.decode()
    assert "Deliveries (email, sheet, notification)" in page and "400 bad from address" in page
    response = admin_client.post(
        "/admin/orders/order/",
        {"action": "resend_confirmation_email", "_selected_action": [str(dead.id)]},
        follow=True,
    )
    assert "confirmation email queued again" in response.content.decode()
    assert Delivery.objects.filter(integration="email", idempotency_key__endswith=":resend-1").count() == 1


def test_staff_retry_a_dead_delivery_through_the_api(
    api_as: Callable, staff: Any, customer: Any, dead: Order
) -> None:
    email = Delivery.objects.get(integration="email")
    assert api_as(customer).post(f"/api/integrations/deliveries/{email.id}/retry").status_code == 403
    listing = api_as(staff).get("/api/integrations/deliveries", {"state": "dead"})
    assert {d["integration"] for d in listing.json()} == {"email", "sns"}
    response = api_as(staff).post(f"/api/integrations/deliveries/{email.id}/retry")
    assert response.status_code == 200 and response.json()["state"] == "pending"
    again = api_as(staff).post(f"/api/integrations/deliveries/{email.id}/retry")
    assert again.status_code == 409 and again.json()["code"] == "not_retryable"
    assert api_as(staff).post("/api/integrations/deliveries/nope/retry").status_code == 404


def test_the_command_retries_dead_letters_of_one_integration(dead: Order) -> None:
    call_command("deliveries", "retry", "--dead", "--integration", "sns")
    assert Delivery.objects.get(integration="sns").state == DeliveryState.PENDING
    assert Delivery.objects.get(integration="email").state == DeliveryState.DEAD
