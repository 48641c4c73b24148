"""The one order admin (/admin/orders/order/): orders managed through the repository port and
the same services as the API, so it works whichever adapter stores orders (this module runs on
both), with the payments and deliveries panels and actions that those apps register."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from integrations.models import Delivery
from integrations.services import outbox_relay
from orders.admin import registry, views
from orders.admin.registry import OrderAdminPanel
from orders.domain import Actor, EventType, Order, OrderStatus
from orders.models import Product
from orders.repositories import OrderRepository
from orders.services import order_transition
from payments import services as payment_services
from payments.models import Refund, RefundStatus
from tests.orders.factories import UserFactory

pytestmark = pytest.mark.django_db

STORE = "/admin/orders/order/"


def detail(order: Order | uuid.UUID) -> str:
    return f"{STORE}{getattr(order, 'id', order)}/change/"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def shown_ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:500]
    return [str(row["id"]) for row in response.context["rows"]]


@pytest.fixture
def fake_gateway(settings: Any) -> None:
    settings.PAYMENT_GATEWAY = "tests.payments.fakes.FakeGateway"


@pytest.fixture
def paid(place: Callable[..., Order], customer: Any, fake_gateway: None) -> Order:
    """An order of 2 mugs (2900 USD) paid through the in-memory gateway, its deliveries made."""
    order = place(customer=customer, lines={"MUG-1": 2})
    payment = payment_services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("t")
    )
    assert payment.intent_id
    outbox_relay(dispatch=False)
    return order


# --- the list -------------------------------------------------------------------------------
class TestList:
    def test_lists_orders_newest_first_and_filters_by_status(
        self, admin_client: Client, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        first, second, third = place(), place(), place()
        order_transition(
            repository=repository, order_id=second.id, to_status=OrderStatus.CANCELLED, actor=Actor.system()
        )
        page = admin_client.get(STORE)
        assert shown_ids(page) == [str(third.id), str(second.id), str(first.id)]
        html = page.content.decode()
        assert "admin/orders/order/list.html" in [t.name for t in page.templates]
        assert 'id="changelist-filter"' in html and "Orders" in html
        assert f'href="{detail(first)}"' in html and "$14.50" in html

        assert shown_ids(admin_client.get(STORE, {"status": "cancelled"})) == [str(second.id)]
        assert shown_ids(admin_client.get(STORE, {"status": "pending_payment", "sort": "oldest"})) == [
            str(first.id),
            str(third.id),
        ]
        assert shown_ids(admin_client.get(STORE, {"status": "paid"})) == []

    def test_pages_through_a_cursor(
        self, admin_client: Client, place: Callable[..., Order], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(views, "PAGE_SIZE", 2)
        orders = [place() for _ in range(5)]
        newest_first = [str(order.id) for order in reversed(orders)]

        seen: list[str] = []
        url = STORE
        for _ in range(3):
            page = admin_client.get(url)
            seen += shown_ids(page)
            url = page.context["next_url"] and f"{STORE}{page.context['next_url']}"
            if not url:
                break
            assert "Next page" in page.content.decode()
        assert seen == newest_first
        assert page.context["first_url"]  # a way back from the last page
        assert not page.context["next_url"]

        oldest = admin_client.get(STORE, {"sort": "oldest"})
        assert shown_ids(oldest) == [str(orders[0].id), str(orders[1].id)]
        following = admin_client.get(f"{STORE}{oldest.context['next_url']}")
        assert shown_ids(following) == [str(orders[2].id), str(orders[3].id)]

    def test_a_cursor_of_other_filters_is_refused_with_a_message(
        self, admin_client: Client, place: Callable[..., Order], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(views, "PAGE_SIZE", 1)
        place(), place()
        cursor = parse_qs(admin_client.get(STORE).context["next_url"][1:])["cursor"][0]
        page = admin_client.get(STORE, {"cursor": cursor, "sort": "oldest"})
        assert len(shown_ids(page)) == 1
        assert any("not valid for this listing" in m for m in messages_of(page))
        assert admin_client.get(STORE, {"cursor": "garbage"}).status_code == 200

    def test_filters_by_date(self, admin_client: Client, place: Callable[..., Order]) -> None:
        order = place()
        today = timezone.localdate(order.created_at)  # the order's day, even if midnight has passed since
        yesterday, tomorrow = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=1)).isoformat()
        assert shown_ids(admin_client.get(STORE, {"created_from": today.isoformat()})) == [str(order.id)]
        assert shown_ids(admin_client.get(STORE, {"created_to": today.isoformat()})) == [str(order.id)]
        assert shown_ids(admin_client.get(STORE, {"created_from": tomorrow})) == []
        assert shown_ids(admin_client.get(STORE, {"created_to": yesterday})) == []
        page = admin_client.get(STORE, {"created_from": tomorrow, "created_to": yesterday})
        assert shown_ids(page) == [str(order.id)]  # filters ignored, and said so
        assert messages_of(page) == ["Filters ignored: The start date is after the end date."]
        assert "Past 7 days" in page.content.decode()

    def test_searches_by_id_reference_email_and_username(
        self, admin_client: Client, place: Callable[..., Order], customer: Any
    ) -> None:
        mine = place(customer=customer)
        guest = place(email="someone.else@example.com")
        assert shown_ids(admin_client.get(STORE, {"q": customer.username.upper()})) == [str(mine.id)]
        assert shown_ids(admin_client.get(STORE, {"q": str(mine.id)})) == [str(mine.id)]
        assert shown_ids(admin_client.get(STORE, {"q": f" {guest.id} "})) == [str(guest.id)]
        assert shown_ids(admin_client.get(STORE, {"q": "someone.else@example.com"})) == [str(guest.id)]
        assert shown_ids(admin_client.get(STORE, {"q": "Someone.Else@EXAMPLE.com"})) == [str(guest.id)]
        assert shown_ids(admin_client.get(STORE, {"q": "someone.else@example.com", "status": "paid"})) == []
        reference = str(guest.id)[:8]
        assert shown_ids(admin_client.get(STORE, {"q": reference.upper()})) == [str(guest.id)]
        assert shown_ids(admin_client.get(STORE, {"q": f"#{reference}"})) == [str(guest.id)]
        assert reference.upper() in admin_client.get(STORE).content.decode()  # as customers see it
        missing = admin_client.get(STORE, {"q": str(uuid.uuid4())})
        assert shown_ids(missing) == [] and "No order has the id" in missing.content.decode()

    def test_a_search_that_is_no_id_reference_or_email_says_what_works(
        self, admin_client: Client, place: Callable[..., Order]
    ) -> None:
        guest = place(email="someone.else@example.com")
        page = admin_client.get(STORE, {"q": "someone.else"})
        assert shown_ids(page) == []
        assert "Search by a whole order id, a reference" in page.content.decode()
        assert shown_ids(admin_client.get(STORE, {"q": "nobody@example.com"})) == []
        assert shown_ids(admin_client.get(STORE, {"q": str(guest.id)})) == [str(guest.id)]


# --- one order ------------------------------------------------------------------------------
class TestDetail:
    def test_shows_the_order_its_lines_timeline_and_panels(
        self, admin_client: Client, paid: Order, staff: Any
    ) -> None:
        page = admin_client.get(detail(paid))
        assert page.status_code == 200
        html = page.content.decode()
        assert "admin/orders/order/detail.html" in [t.name for t in page.templates]
        # fields, lines and totals
        assert str(paid.id) in html and "MUG-1" in html and "$29.00" in html and "Ada Lovelace" in html
        # the timeline
        assert "Event timeline" in html and "Created" in html and "pending_payment &rarr; paid" in html
        assert "total: $29.00" in html and "total_minor" not in html  # the event's amounts as money
        # the payments panel, with a refund page that comes back here
        assert "Payments and refunds" in html and "pi_fake_" in html and "Succeeded" in html
        assert f"/admin/orders/order/{paid.id}/refund/" in html
        # the deliveries panel
        assert "Deliveries (email, sheet, notification)" in html and "order.paid" in html
        # legal transitions from paid that move no money (refunds are payment actions)
        assert [row["status"].value for row in page.context["transitions"]] == ["fulfilled"]
        assert 'value="fulfilled"' in html and 'value="cancelled"' not in html
        assert 'value="refunded"' not in html and 'value="partially_refunded"' not in html
        assert "Mark refunded" not in html and "Mark partially refunded" not in html
        assert {a.name for a in page.context["actions"]} >= {"refund_in_full", "resend_confirmation_email"}
        assert "Refund in full" in html and "Resend the confirmation email" in html
        assert 'data-confirm="' in html  # a refund asks first (static/js/confirm-buttons.js)

    def test_an_unpaid_order_without_deliveries(
        self, admin_client: Client, place: Callable[..., Order]
    ) -> None:
        order = place()
        html = admin_client.get(detail(order)).content.decode()
        assert "No payment yet." in html and "None yet." in html
        assert f"/admin/orders/order/{order.id}/refund/" not in html

    def test_an_unknown_order_goes_back_to_the_list(self, admin_client: Client) -> None:
        response = admin_client.get(detail(uuid.uuid4()), follow=True)
        assert response.redirect_chain[-1][0] == STORE
        assert any("No order has the id" in m for m in messages_of(response))
        assert admin_client.get(f"{STORE}not-a-uuid/").status_code == 404

    def test_a_broken_panel_does_not_break_the_page(
        self, admin_client: Client, place: Callable[..., Order], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(request: Any, order: Order) -> str:
            raise RuntimeError("boom")

        panels = [*registry.order_admin_panels, OrderAdminPanel("broken", "Broken", broken)]
        monkeypatch.setattr(registry, "order_admin_panels", panels)
        page = admin_client.get(detail(place()))
        assert page.status_code == 200 and "This section could not be shown" in page.content.decode()


class TestTransitions:
    def test_a_legal_transition_goes_through_the_service(
        self, admin_client: Client, place: Callable[..., Order], repository: OrderRepository, staff: Any
    ) -> None:
        order = place(lines={"MUG-1": 2})
        assert Product.objects.get(sku="MUG-1").stock == 8
        response = admin_client.post(
            detail(order), {"_op": "transition", "to_status": "cancelled"}, follow=True
        )
        assert response.redirect_chain == [(detail(order), 302)]
        assert messages_of(response) == ["Order marked cancelled."]
        assert repository.get(order.id).status == OrderStatus.CANCELLED
        assert Product.objects.get(sku="MUG-1").stock == 10  # released, as through the API
        event = repository.events(order.id)[-1]
        assert (event.to_status, event.actor, event.data) == (
            OrderStatus.CANCELLED,
            f"staff:{staff.pk}",
            {"via": "admin"},
        )
        assert "This status is final" not in response.content.decode()
        assert "Cancelled is final" in response.content.decode()

    def test_an_illegal_transition_is_a_message_and_changes_nothing(
        self, admin_client: Client, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        order = place()
        response = admin_client.post(
            detail(order), {"_op": "transition", "to_status": "fulfilled"}, follow=True
        )
        assert response.status_code == 200
        assert messages_of(response) == [
            "An order that is pending_payment cannot become fulfilled; allowed: cancelled, paid, payment_failed."
        ]
        assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT
        assert len(repository.events(order.id)) == 1

        nonsense = admin_client.post(
            detail(order), {"_op": "transition", "to_status": "shipped"}, follow=True
        )
        assert messages_of(nonsense) == ["'shipped' is not an order status."]
        unknown = admin_client.post(detail(order), {"_op": "explode"}, follow=True)
        assert messages_of(unknown) == ["Nothing was done: unknown operation."]


class TestEditing:
    def edit(self, order: Order, **changes: Any) -> dict[str, Any]:
        return {
            "_op": "edit",
            **order.shipping_address.as_dict(),
            "notes": order.notes,
            "version": order.version,
            **changes,
        }

    def test_editing_the_address_and_notes_is_audited(
        self, admin_client: Client, place: Callable[..., Order], repository: OrderRepository, staff: Any
    ) -> None:
        order = place()
        response = admin_client.post(
            detail(order), self.edit(order, city="Leeds", notes="Fragile", country="gb"), follow=True
        )
        assert messages_of(response) == ["Shipping address and notes saved."]
        stored = repository.get(order.id)
        assert (stored.shipping_address.city, stored.shipping_address.country, stored.notes) == (
            "Leeds",
            "GB",
            "Fragile",
        )
        assert stored.version == 2
        event = repository.events(order.id)[-1]
        assert (event.type, event.actor) == (EventType.EDITED, f"staff:{staff.pk}")
        assert event.data["changed"]["notes"] == {"from": "", "to": "Fragile"}

        same = admin_client.post(detail(order), self.edit(stored), follow=True)
        assert messages_of(same) == ["Nothing changed."]
        assert repository.get(order.id).version == 2

    def test_the_country_is_chosen_by_name(self, admin_client: Client, place: Callable[..., Order]) -> None:
        html = admin_client.get(detail(place())).content.decode()
        select = html[html.index('<select name="country"') :]
        select = select[: select.index("</select>")]
        assert '<option value="GB" selected>United Kingdom</option>' in select
        assert '<option value="DE">Germany</option>' in select
        assert 'name="country" maxlength' not in html  # no two-letter box any more

    def test_staff_may_edit_a_paid_order(
        self, admin_client: Client, paid: Order, repository: OrderRepository
    ) -> None:
        order = repository.get(paid.id)
        admin_client.post(detail(order), self.edit(order, line2="Flat 3"))
        assert repository.get(order.id).shipping_address.line2 == "Flat 3"

    def test_a_stale_form_or_bad_input_is_not_saved(
        self, admin_client: Client, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        order = place()
        stale = self.edit(order, city="Leeds")
        admin_client.post(detail(order), {"_op": "note", "text": "someone else was here"})
        response = admin_client.post(detail(order), stale)
        assert response.status_code == 200
        assert any("changed since this form was opened" in m for m in messages_of(response))
        assert repository.get(order.id).shipping_address.city == "London"

        bad = admin_client.post(
            detail(order), self.edit(repository.get(order.id), country="Britain", name="")
        )
        assert bad.status_code == 200
        errors = bad.context["edit_form"].errors
        assert set(errors) == {"country", "name"}
        assert errors["country"] == ["Choose a country from the list."]
        assert repository.get(order.id).version == 2  # only the note

    def test_adding_a_note(
        self, admin_client: Client, place: Callable[..., Order], repository: OrderRepository, staff: Any
    ) -> None:
        order = place()
        response = admin_client.post(
            detail(order), {"_op": "note", "text": "  Called the customer  "}, follow=True
        )
        assert messages_of(response) == ["Note added."]
        event = repository.events(order.id)[-1]
        assert (event.type, event.actor, event.data) == (
            EventType.NOTE_ADDED,
            f"staff:{staff.pk}",
            {"text": "Called the customer"},
        )
        assert "Called the customer" in response.content.decode()

        empty = admin_client.post(detail(order), {"_op": "note", "text": "   "})
        assert empty.status_code == 200 and empty.context["note_form"].errors
        assert len(repository.events(order.id)) == 2


# --- the actions other apps register ----------------------------------------------------------
class TestActions:
    def test_resend_the_confirmation_email(self, admin_client: Client, paid: Order) -> None:
        response = admin_client.post(
            detail(paid), {"_op": "action", "action": "resend_confirmation_email"}, follow=True
        )
        assert response.status_code == 200
        assert len(messages_of(response)) == 1
        assert messages_of(response)[0].startswith(f"Order {paid.reference}: confirmation email queued again")
        resent = Delivery.objects.get(integration="email", idempotency_key__endswith=":resend-1")
        assert resent.order_id == paid.id

    def test_resend_without_a_confirmation_email_is_a_message(
        self, admin_client: Client, place: Callable[..., Order]
    ) -> None:
        order = place()
        response = admin_client.post(
            detail(order), {"_op": "action", "action": "resend_confirmation_email"}, follow=True
        )
        assert messages_of(response) == ["This order has no confirmation email to send again."]
        unknown = admin_client.post(detail(order), {"_op": "action", "action": "nope"}, follow=True)
        assert messages_of(unknown) == ["There is no action 'nope'."]

    def test_refund_in_full(
        self, admin_client: Client, paid: Order, repository: OrderRepository, staff: Any
    ) -> None:
        response = admin_client.post(detail(paid), {"_op": "action", "action": "refund_in_full"}, follow=True)
        assert messages_of(response) == [f"Order {paid.reference}: refund of $29.00 succeeded."]
        assert repository.get(paid.id).status == OrderStatus.REFUNDED
        refund = Refund.objects.get()
        assert (refund.amount_minor, refund.status, refund.requested_by) == (
            2900,
            RefundStatus.SUCCEEDED,
            staff,
        )
        html = response.content.decode()
        assert "$29.00" in html and f"/admin/orders/order/{paid.id}/refund/" not in html  # nothing left

        again = admin_client.post(detail(paid), {"_op": "action", "action": "refund_in_full"}, follow=True)
        assert messages_of(again) == [
            f"Order {paid.reference} not refunded: An order that is refunded cannot be refunded."
        ]

    def test_the_refund_page_reads_the_repository_and_comes_back(
        self, admin_client: Client, paid: Order, repository: OrderRepository
    ) -> None:
        url = f"/admin/orders/order/{paid.id}/refund/"
        assert admin_client.get(url).status_code == 200
        done = admin_client.post(url, {"amount": "9.00", "reason": "chipped"})
        assert done.status_code == 302 and done.url == detail(paid)
        assert repository.get(paid.id).status == OrderStatus.PARTIALLY_REFUNDED
        elsewhere = admin_client.post(
            f"/admin/orders/order/{paid.id}/refund/?next=https://evil.example/", {"amount": "1"}
        )
        assert elsewhere.url == f"/admin/orders/order/{paid.id}/change/"

    def test_refunding_needs_the_refund_permission(self, paid: Order, repository: OrderRepository) -> None:
        clerk = UserFactory(username="clerk", is_staff=True)
        clerk.user_permissions.add(
            *Permission.objects.filter(
                codename__in=["view_order", "change_order"], content_type__app_label="orders"
            )
        )
        client = Client()
        client.force_login(clerk)
        page = client.get(detail(paid))
        html = page.content.decode()
        assert page.status_code == 200
        assert "Refund in full" not in html and f"/admin/orders/order/{paid.id}/refund/" not in html
        assert "Resend the confirmation email" in html
        refused = client.post(detail(paid), {"_op": "action", "action": "refund_in_full"})
        assert refused.status_code == 403
        assert repository.get(paid.id).status == OrderStatus.PAID and not Refund.objects.exists()


# --- who may, and where staff land ----------------------------------------------------------
class TestAccess:
    def test_non_staff_are_sent_to_the_login_page(
        self, client: Client, customer: Any, place: Callable[..., Order]
    ) -> None:
        order = place(customer=customer)
        for url in (STORE, detail(order)):
            anonymous = client.get(url)
            assert anonymous.status_code == 302 and anonymous.url.startswith("/admin/login/")
        client.force_login(customer)
        response = client.post(detail(order), {"_op": "transition", "to_status": "cancelled"})
        assert response.status_code == 302 and response.url.startswith("/admin/login/")
        assert client.get(STORE).url.startswith("/admin/login/")

    def test_staff_need_the_order_permissions(
        self, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        order = place()
        clerk = UserFactory(username="clerk", is_staff=True)
        client = Client()
        client.force_login(clerk)
        assert client.get(STORE).status_code == 403
        assert client.get(detail(order)).status_code == 403

        clerk.user_permissions.add(
            Permission.objects.get(codename="view_order", content_type__app_label="orders")
        )
        client.force_login(clerk)  # a fresh user object: permissions are cached per instance
        assert client.get(STORE).status_code == 200
        page = client.get(detail(order))
        assert page.status_code == 200
        html = page.content.decode()
        assert 'name="to_status"' not in html and 'id="order-edit"' not in html
        assert client.post(detail(order), {"_op": "transition", "to_status": "cancelled"}).status_code == 403
        assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    def test_the_admin_index_lists_orders(self, admin_client: Client) -> None:
        index = admin_client.get("/admin/").content.decode()
        assert f'href="{STORE}"' in index and ">Orders<" in index
        assert f'href="{STORE}"' in admin_client.get("/admin/orders/").content.decode()

    def test_staff_who_may_only_see_orders_find_them_on_the_index(self) -> None:
        clerk = UserFactory(username="clerk", is_staff=True)
        clerk.user_permissions.add(
            Permission.objects.get(codename="view_order", content_type__app_label="orders")
        )
        client = Client()
        client.force_login(clerk)
        index = client.get("/admin/").content.decode()
        assert f'href="{STORE}"' in index and "Products" not in index
        assert client.get("/admin/orders/").status_code == 200


@pytest.fixture(autouse=True)
def _registered_extensions() -> Iterator[None]:
    """The payments and integrations admin modules registered their panels and actions."""
    names = {panel.name for panel in registry.order_admin_panels}
    assert {"payments", "deliveries"} <= names
    yield


@pytest.fixture(autouse=True)
def _order_store(repository: OrderRepository) -> None:
    """Every test here uses the configured order store (the DynamoDB pass's too)."""
