"""The orders API over HTTP: create, read, list, edit, cancel, auth, and every error path."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from orders import services
from orders.domain import EventType, Order, OrderQuery, OrderStatus
from orders.models import Product
from orders.repositories import OrderRepository
from tests.conftest import ADDRESS_JSON

# End to end: CI runs these a second time with orders in DynamoDB (`make test-dynamodb`), so
# every order is read through the configured repository, never the ORM.
pytestmark = [pytest.mark.django_db, pytest.mark.e2e, pytest.mark.usefixtures("repository")]


def order_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lines": [{"sku": "MUG-1", "quantity": 2}],
        "shipping_address": dict(ADDRESS_JSON),
        "email": "guest@example.com",
    }
    body.update(overrides)
    return body


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the status and the shape every error body has; return the body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    return body


def stock(sku: str = "MUG-1") -> int:
    return Product.objects.get(sku=sku).stock


def mark_paid(repository: OrderRepository, order: Order, staff: Any) -> None:
    """As the payment services do when a payment settles: the API never sets paid by hand."""
    services.order_transition(
        repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=services.actor_for(staff)
    )


def stored_ids(repository: OrderRepository) -> list[str]:
    """The ids of every stored order, oldest first (whichever backend stores them)."""
    page = repository.list(OrderQuery(newest_first=False, limit=100))
    assert page.next_cursor is None
    return [str(order.id) for order in page.orders]


class TestProducts:
    def test_anyone_can_read_the_catalog(self, api: APIClient, mug: Any, tee: Any) -> None:
        Product.objects.create(sku="OLD", name="Old", price_minor=1, active=False)
        response = api.get("/api/products")
        assert response.status_code == 200
        assert [(p["sku"], p["price_minor"], p["in_stock"]) for p in response.json()] == [
            ("MUG-1", 1450, True),
            ("TEE-1", 2400, True),
        ]

    def test_product_detail_and_404(self, api: APIClient, mug: Any) -> None:
        assert api.get("/api/products/MUG-1").json()["name"] == "Mug"
        error(api.get("/api/products/NOPE"), 404, "not_found")


class TestCreate:
    def test_guest_order_is_priced_by_the_server(
        self, api: APIClient, mug: Any, repository: OrderRepository
    ) -> None:
        tampered = order_body(
            lines=[{"sku": "MUG-1", "quantity": 2, "unit_price_minor": 1, "price_minor": 1}],
            total_minor=2,
            subtotal_minor=2,
            status="paid",
            currency="JPY",
        )
        response = api.post("/api/orders", tampered, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["status"] == "pending_payment"
        assert (body["subtotal_minor"], body["total_minor"], body["currency"]) == (2900, 2900, "USD")
        assert body["lines"][0]["unit_price_minor"] == 1450
        assert body["customer_id"] is None and body["email"] == "guest@example.com"
        assert [e["type"] for e in body["events"]] == ["created"]
        assert response["Location"] == f"/api/orders/{body['id']}"
        assert repository.get(uuid.UUID(body["id"])).total_minor == 2900
        assert stored_ids(repository) == [body["id"]]
        assert stock() == 8

    def test_a_guest_must_give_an_email(self, api: APIClient, mug: Any) -> None:
        body = error(api.post("/api/orders", order_body(email=None) | {}, format="json"), 400, "invalid")
        assert "email" in body["fields"]
        no_email = order_body()
        del no_email["email"]
        assert "email" in error(api.post("/api/orders", no_email, format="json"), 400, "invalid")["fields"]

    def test_a_customer_order_belongs_to_the_customer(
        self, api_as: Callable, customer: Any, mug: Any
    ) -> None:
        body = order_body()
        del body["email"]
        response = api_as(customer).post("/api/orders", body, format="json")
        assert response.status_code == 201
        assert (response.json()["customer_id"], response.json()["email"]) == (customer.pk, customer.email)

    def test_over_order_is_a_400_and_reserves_nothing(
        self, api: APIClient, mug: Any, tee: Any, repository: OrderRepository
    ) -> None:
        body = order_body(lines=[{"sku": "TEE-1", "quantity": 1}, {"sku": "MUG-1", "quantity": 11}])
        fields = error(api.post("/api/orders", body, format="json"), 400, "invalid")["fields"]
        assert "Only 10 of MUG-1 left" in fields["lines"][0]
        assert (stock("MUG-1"), stock("TEE-1")) == (10, 5)
        assert stored_ids(repository) == []

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (order_body(lines=[]), "lines"),
            (order_body(lines="MUG-1"), "lines"),
            (order_body(lines=[{"sku": "MUG-1", "quantity": 0}]), "lines"),
            (order_body(lines=[{"sku": "MUG-1", "quantity": "two"}]), "lines"),
            (order_body(lines=[{"quantity": 1}]), "lines"),
            (order_body(lines=[{"sku": "NOPE", "quantity": 1}]), "lines"),
            (order_body(shipping_address={"name": "x"}), "shipping_address"),
            (order_body(shipping_address=dict(ADDRESS_JSON, country="Germany")), "shipping_address"),
            (order_body(email="not-an-email"), "email"),
            (order_body(notes="x" * 2001), "notes"),
        ],
    )
    def test_bad_input_is_a_400_naming_the_field(
        self, api: APIClient, mug: Any, body: Any, field: str
    ) -> None:
        assert field in error(api.post("/api/orders", body, format="json"), 400, "invalid")["fields"]
        assert stock() == 10

    def test_malformed_json_is_a_400(self, api: APIClient) -> None:
        response = api.post("/api/orders", "{not json", content_type="application/json")
        error(response, 400, "parse_error")

    def test_other_content_types_are_refused(self, api: APIClient) -> None:
        error(api.post("/api/orders", "lines=1", content_type="text/plain"), 415, "unsupported_media_type")


class TestIdempotency:
    def test_same_key_same_body_returns_the_same_order(
        self, api: APIClient, mug: Any, repository: OrderRepository
    ) -> None:
        first = api.post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY="abc-123")
        again = api.post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY="abc-123")
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        assert stored_ids(repository) == [first.json()["id"]]
        assert stock() == 8

    def test_same_key_other_body_is_a_422(
        self, api: APIClient, mug: Any, repository: OrderRepository
    ) -> None:
        first = api.post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY="abc-123")
        changed = order_body(lines=[{"sku": "MUG-1", "quantity": 3}])
        error(
            api.post("/api/orders", changed, format="json", HTTP_IDEMPOTENCY_KEY="abc-123"),
            422,
            "idempotency_conflict",
        )
        assert stored_ids(repository) == [first.json()["id"]]

    def test_keys_of_different_users_do_not_collide(
        self, api_as: Callable, customer: Any, other_customer: Any, mug: Any
    ) -> None:
        a = api_as(customer).post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY="k")
        b = api_as(other_customer).post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY="k")
        assert (a.status_code, b.status_code) == (201, 201)
        assert a.json()["id"] != b.json()["id"]

    @pytest.mark.parametrize("key", ["x" * 256, "has space", "ключ"])
    def test_a_malformed_key_is_a_400(self, api: APIClient, mug: Any, key: str) -> None:
        response = api.post("/api/orders", order_body(), format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert "Idempotency-Key" in error(response, 400, "invalid")["fields"]


class TestReadAndPermissions:
    def test_anonymous_users_cannot_read_orders(self, api: APIClient, place: Callable[..., Order]) -> None:
        order = place()
        error(api.get("/api/orders"), 401, "not_authenticated")
        error(api.get(f"/api/orders/{order.id}"), 401, "not_authenticated")
        error(api.delete(f"/api/orders/{order.id}"), 401, "not_authenticated")

    def test_owner_reads_order_with_its_timeline(
        self, api_as: Callable, customer: Any, place: Callable
    ) -> None:
        order = place(customer=customer, lines={"MUG-1": 3})
        body = api_as(customer).get(f"/api/orders/{order.id}").json()
        assert body["id"] == str(order.id)
        assert body["total_minor"] == 4350
        assert body["allowed_transitions"] == ["cancelled", "paid", "payment_failed"]
        assert body["events"][0]["type"] == "created"

    def test_another_customer_gets_404_everywhere(
        self,
        api_as: Callable,
        customer: Any,
        other_customer: Any,
        place: Callable,
        repository: OrderRepository,
    ) -> None:
        order = place(customer=customer)
        intruder = api_as(other_customer)
        error(intruder.get(f"/api/orders/{order.id}"), 404, "not_found")
        error(
            intruder.patch(f"/api/orders/{order.id}", {"notes": "mine now"}, format="json"), 404, "not_found"
        )
        error(intruder.delete(f"/api/orders/{order.id}"), 404, "not_found")
        assert intruder.get("/api/orders").json()["results"] == []
        stored = repository.get(order.id)
        assert (stored.notes, stored.status, stored.version) == ("", OrderStatus.PENDING_PAYMENT, 1)

    def test_staff_see_every_order(
        self, api_as: Callable, customer: Any, staff: Any, place: Callable
    ) -> None:
        mine = place(customer=customer)
        guest = place()
        client = api_as(staff)
        assert client.get(f"/api/orders/{mine.id}").status_code == 200
        assert {o["id"] for o in client.get("/api/orders").json()["results"]} == {str(mine.id), str(guest.id)}

    @pytest.mark.parametrize("order_id", ["not-a-uuid", str(uuid.uuid4())])
    def test_unknown_or_malformed_ids_are_404(self, api_as: Callable, customer: Any, order_id: str) -> None:
        error(api_as(customer).get(f"/api/orders/{order_id}"), 404, "not_found")


class TestList:
    @pytest.fixture
    def five(self, customer: Any, place: Callable, repository: Any) -> list[Order]:
        orders = [place(customer=customer) for _ in range(5)]
        from orders import services

        services.order_cancel(
            repository=repository, order_id=orders[1].id, actor=services.actor_for(customer)
        )
        return orders

    def test_pages_follow_next_links(self, api_as: Callable, customer: Any, five: list[Order]) -> None:
        client = api_as(customer)
        seen: list[str] = []
        url: str | None = "/api/orders?page_size=2"
        pages = 0
        while url:
            body = client.get(url).json()
            seen += [o["id"] for o in body["results"]]
            url = body["next"]
            pages += 1
        assert pages == 3
        assert seen == [str(o.id) for o in reversed(five)]

    def test_ordering_oldest_first(self, api_as: Callable, customer: Any, five: list[Order]) -> None:
        body = api_as(customer).get("/api/orders?ordering=created_at").json()
        assert [o["id"] for o in body["results"]] == [str(o.id) for o in five]

    def test_filter_by_status(self, api_as: Callable, customer: Any, five: list[Order]) -> None:
        body = api_as(customer).get("/api/orders?status=cancelled").json()
        assert [o["id"] for o in body["results"]] == [str(five[1].id)]

    def test_filter_by_date(self, api_as: Callable, customer: Any, five: list[Order]) -> None:
        client = api_as(customer)
        after = (five[2].created_at).isoformat()
        assert len(client.get("/api/orders", {"created_after": after}).json()["results"]) == 3
        assert len(client.get("/api/orders", {"created_before": after}).json()["results"]) == 2
        tomorrow = (five[0].created_at + timedelta(days=1)).isoformat()
        assert client.get("/api/orders", {"created_after": tomorrow}).json()["results"] == []

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("status=shipped", "status"),
            ("ordering=total", "ordering"),
            ("page_size=0", "page_size"),
            ("page_size=1000", "page_size"),
            ("created_after=yesterday", "created_after"),
            ("cursor=garbage", "cursor"),
        ],
    )
    def test_bad_query_parameters_are_a_400(
        self, api_as: Callable, customer: Any, query: str, field: str
    ) -> None:
        assert field in error(api_as(customer).get(f"/api/orders?{query}"), 400, "invalid")["fields"]


class TestPatch:
    def test_customer_edits_address_and_notes(self, api_as: Callable, customer: Any, place: Callable) -> None:
        order = place(customer=customer)
        address = dict(ADDRESS_JSON, line1="99 New Road")
        response = api_as(customer).patch(
            f"/api/orders/{order.id}", {"shipping_address": address, "notes": "Back door"}, format="json"
        )
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["shipping_address"]["line1"], body["notes"], body["version"]) == (
            "99 New Road",
            "Back door",
            2,
        )
        assert body["events"][-1]["type"] == "edited"

    def test_a_note_is_appended(self, api_as: Callable, customer: Any, place: Callable) -> None:
        order = place(customer=customer)
        body = api_as(customer).patch(f"/api/orders/{order.id}", {"note": "Gift wrap"}, format="json").json()
        assert (body["events"][-1]["type"], body["events"][-1]["data"]) == (
            "note_added",
            {"text": "Gift wrap"},
        )

    @pytest.mark.parametrize("field", ["total_minor", "status_code", "lines", "customer_id", "currency"])
    def test_fields_a_client_may_not_set_are_a_400(
        self, api_as: Callable, customer: Any, place: Callable, field: str
    ) -> None:
        order = place(customer=customer)
        response = api_as(customer).patch(f"/api/orders/{order.id}", {field: 1}, format="json")
        assert field in error(response, 400, "invalid")["fields"]

    def test_an_empty_patch_is_a_400(self, api_as: Callable, customer: Any, place: Callable) -> None:
        order = place(customer=customer)
        error(api_as(customer).patch(f"/api/orders/{order.id}", {}, format="json"), 400, "invalid")

    def test_customers_cannot_set_the_status(
        self, api_as: Callable, customer: Any, place: Callable, repository: OrderRepository
    ) -> None:
        order = place(customer=customer)
        body = error(
            api_as(customer).patch(f"/api/orders/{order.id}", {"status": "paid"}, format="json"),
            403,
            "permission_denied",
        )
        assert body["message"] == "Only staff may change an order's status."
        assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT

    def test_staff_apply_legal_transitions(
        self, api_as: Callable, staff: Any, place: Callable, repository: OrderRepository
    ) -> None:
        order = place()
        mark_paid(repository, order, staff)
        client = api_as(staff)
        body = client.patch(f"/api/orders/{order.id}", {"status": "fulfilled"}, format="json").json()
        assert body["status"] == "fulfilled"
        assert [(e["from_status"], e["to_status"]) for e in body["events"][1:]] == [
            ("pending_payment", "paid"),
            ("paid", "fulfilled"),
        ]
        assert body["events"][-1]["actor"] == f"staff:{staff.pk}"

    @pytest.mark.parametrize("status", ["paid", "partially_refunded", "refunded"])
    def test_statuses_that_follow_money_are_no_bare_edits(
        self, status: str, api_as: Callable, staff: Any, place: Callable, repository: OrderRepository
    ) -> None:
        order = place()
        if status != "paid":
            mark_paid(repository, order, staff)
        before = repository.get(order.id)
        response = api_as(staff).patch(
            f"/api/orders/{order.id}", {"status": status, "notes": "should not stick"}, format="json"
        )
        body = error(response, 409, "status_follows_money")
        assert body["message"].startswith(f"An order becomes {status} only when money moves")
        stored = repository.get(order.id)
        assert (stored.status, stored.notes, stored.version) == (before.status, "", before.version)

    def test_an_illegal_transition_is_a_409_and_changes_nothing(
        self, api_as: Callable, staff: Any, place: Callable, repository: OrderRepository
    ) -> None:
        order = place()
        response = api_as(staff).patch(
            f"/api/orders/{order.id}", {"status": "fulfilled", "notes": "should not stick"}, format="json"
        )
        body = error(response, 409, "illegal_transition")
        assert "pending_payment cannot become fulfilled" in body["message"]
        stored = repository.get(order.id)
        assert (stored.status, stored.notes, stored.version) == (OrderStatus.PENDING_PAYMENT, "", 1)
        assert [e.type for e in repository.events(order.id)] == [EventType.CREATED]

    def test_customers_cannot_edit_a_paid_order(
        self, api_as: Callable, customer: Any, staff: Any, place: Callable, repository: OrderRepository
    ) -> None:
        order = place(customer=customer)
        mark_paid(repository, order, staff)
        error(
            api_as(customer).patch(f"/api/orders/{order.id}", {"notes": "x"}, format="json"),
            409,
            "not_editable",
        )


class TestCancel:
    def test_delete_cancels_and_returns_the_order(
        self, api_as: Callable, customer: Any, place: Callable, repository: Any
    ) -> None:
        order = place(customer=customer, lines={"MUG-1": 3})
        assert stock() == 7
        response = api_as(customer).delete(f"/api/orders/{order.id}")
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        assert stock() == 10
        assert repository.get(order.id).status == OrderStatus.CANCELLED  # kept, not deleted
        assert repository.events(order.id)[-1].type == EventType.STATUS_CHANGED
        error(api_as(customer).delete(f"/api/orders/{order.id}"), 409, "illegal_transition")
        assert stock() == 10


class TestAuth:
    def test_jwt_obtain_use_and_refresh(self, api: APIClient, customer: Any) -> None:
        tokens = api.post(
            "/api/auth/token", {"username": "ada", "password": "pw-for-tests"}, format="json"
        ).json()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
        assert api.get("/api/orders").status_code == 200
        refreshed = APIClient().post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
        assert refreshed.status_code == 200
        fresh = APIClient()
        fresh.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed.json()['access']}")
        assert fresh.get("/api/orders").status_code == 200

    def test_wrong_password_and_bad_tokens_are_401(self, api: APIClient, customer: Any) -> None:
        error(
            api.post("/api/auth/token", {"username": "ada", "password": "nope"}, format="json"),
            401,
            "no_active_account",
        )
        api.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
        assert api.get("/api/orders").status_code == 401
        error(
            APIClient().post("/api/auth/token/refresh", {"refresh": "x"}, format="json"),
            401,
            "token_not_valid",
        )
        error(APIClient().post("/api/auth/token", {}, format="json"), 400, "invalid")


class TestRouting:
    def test_unknown_api_paths_are_json_404(self, api: APIClient) -> None:
        error(api.get("/api/nothing/here"), 404, "not_found")

    def test_wrong_method_is_json_405(self, api: APIClient, mug: Any) -> None:
        error(api.put("/api/products", {}, format="json"), 405, "method_not_allowed")
