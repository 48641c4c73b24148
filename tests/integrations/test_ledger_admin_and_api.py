"""Dead letters for staff: the admin's ledger and retry actions, the API, the resend action."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

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


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_retry_messages_count_what_was_queued_and_what_was_skipped(admin_client: Client, dead: Order) -> None:
    ledger = "/admin/integrations/delivery/"
    email, sns = Delivery.objects.get(integration="email"), Delivery.objects.get(integration="sns")
    # From the dead-letter filter: retrying takes the row out of the filter, which once made "-1 skipped".
    one = admin_client.post(
        f"{ledger}?state__exact=dead", {"action": "retry", "_selected_action": [str(email.id)]}, follow=True
    )
    assert messages_of(one) == ["1 delivery queued again."]
    delivered = Delivery.objects.exclude(integration__in=["email", "sns"]).first()  # the sheet's
    assert delivered is not None
    Delivery.objects.filter(pk=delivered.pk).update(state=DeliveryState.SUCCEEDED)
    Delivery.objects.filter(pk=email.pk).update(state=DeliveryState.DEAD)
    two = admin_client.post(
        ledger,
        {"action": "retry", "_selected_action": [str(email.id), str(sns.id), str(delivered.id)]},
        follow=True,
    )
    assert messages_of(two) == ["2 deliveries queued again; 1 skipped (already delivered)."]
    none = admin_client.post(
        f"{ledger}?state__exact=pending",
        {"action": "retry_all_matching", "_selected_action": [str(email.id)]},
        follow=True,
    )
    assert messages_of(none) == ["No delivery queued again; 2 skipped (already queued)."]


def test_the_ledger_shows_short_references_and_cuts_long_errors(admin_client: Client, dead: Order) -> None:
    long_error = "x" * 300
    Delivery.objects.filter(integration="email").update(last_error_message=long_error)
    html = admin_client.get("/admin/integrations/delivery/").content.decode()
    assert f'title="{dead.id}">{dead.reference}</a>' in html
    assert f'<span class="truncate" title="HTTPError: {long_error}">HTTPError: {"x" * 68}…</span>' in html
    assert "css/admin-order.css" in html


def delivered_after_a_retry(dead: Order, admin_client: Client) -> Delivery:
    """The dead email retried by staff in the admin, then delivered: 1 attempt before, 1 since."""
    email = Delivery.objects.get(integration="email", order_id=dead.id)
    admin_client.post(
        "/admin/integrations/delivery/", {"action": "retry", "_selected_action": [str(email.id)]}
    )
    services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email"))
    email.refresh_from_db()
    assert (email.state, email.attempts, email.earlier_attempts) == (DeliveryState.SUCCEEDED, 1, 1)
    return email


def test_the_ledger_shows_total_attempts_and_when_the_last_error_happened(
    admin_client: Client, dead: Order
) -> None:
    sns = Delivery.objects.get(integration="sns", order_id=dead.id)
    assert sns.last_error_at is not None
    email = delivered_after_a_retry(dead, admin_client)
    ledger = admin_client.get("/admin/integrations/delivery/")
    assert ledger.status_code == 200
    html = ledger.content.decode()
    # The total, with its split between the two series in the title.
    retried = timezone.localtime(email.retried_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    assert (
        f'<span class="attempts-split" title="2 (1 since staff retried it at {retried}, 1 before)">2</span>'
        in html
    )
    # A dead letter's last error is current: its time, no history mark.
    failed = timezone.localtime(sns.last_error_at)
    assert f'<div class="error-when"><time datetime="{failed.isoformat()}"' in html
    # The delivered email's last error is history, said so.
    assert html.count("before it was delivered") == 1
    assert '<div class="error-when error-history">' in html
    # Sorting by either column is no error.
    for column in (6, 7):
        assert admin_client.get("/admin/integrations/delivery/", {"o": str(column)}).status_code == 200

    change = admin_client.get(f"/admin/integrations/delivery/{email.id}/change/").content.decode()
    assert "Total attempts" in change and f"2 (1 since staff retried it at {retried}, 1 before)" in change
    delivered = timezone.localtime(email.succeeded_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    assert f"History: it came before it was delivered (at {delivered})." in change
    dead_change = admin_client.get(f"/admin/integrations/delivery/{sns.id}/change/").content.decode()
    assert "Current: the delivery is dead." in dead_change


def test_the_order_page_marks_a_delivered_emails_last_error_as_history(
    admin_client: Client, dead: Order
) -> None:
    delivered_after_a_retry(dead, admin_client)
    page = admin_client.get(f"/admin/orders/order/{dead.id}/change/").content.decode()
    deliveries = page.split('id="panel-deliveries"', 1)[1].split("</table>", 1)[0]
    assert deliveries.count("before it was delivered") == 1
    assert 'title="2 (1 since staff retried it at' in deliveries


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
