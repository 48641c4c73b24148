"""API keys against the running server: each scope opens exactly its operations, revoked and
expired keys are refused, a key acts as its user (a customer's key sees that customer's orders,
staff-only operations stay staff-only), and staff manage keys in the admin and with
`manage.py api_keys`."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from access import services
from access.models import ApiKey
from orders.domain import Order
from tests.access.forms import csrf_token, log_in
from tests.conftest import ADDRESS_JSON

ORDER_BODY = {"lines": [{"sku": "MUG-1", "quantity": 1}], "shipping_address": ADDRESS_JSON}


def call(base: str, method: str, path: str, key: str | None, body: Any = None) -> requests.Response:
    headers = {"Authorization": f"Api-Key {key}"} if key else {}
    return requests.request(method, f"{base}{path}", headers=headers, json=body, timeout=30)


@pytest.fixture
def make_key() -> Callable[..., str]:
    def make(user: Any, *scopes: str, **kwargs: Any) -> str:
        _key, raw = services.api_key_create(name="test key", user=user, scopes=scopes, **kwargs)
        return raw

    return make


def operations(order: Order) -> list[tuple[str, str, Any, str | None, int]]:
    """Every API operation: method, path, body, the scope it needs, and its answer with that
    scope for a staff key (an error answer proves the request got past the scope check)."""
    missing = uuid.uuid4()
    return [
        ("GET", "/api/products", None, None, 200),
        ("GET", "/api/products/MUG-1", None, None, 200),
        ("GET", "/api/orders", None, "orders:read", 200),
        ("GET", f"/api/orders/{order.id}", None, "orders:read", 200),
        ("POST", "/api/orders", ORDER_BODY, "orders:write", 201),
        ("PATCH", f"/api/orders/{order.id}", {"note": "Leave at the door."}, "orders:write", 200),
        ("DELETE", f"/api/orders/{missing}", None, "orders:write", 404),
        ("GET", f"/api/payments/{missing}", None, "orders:read", 404),
        ("POST", "/api/payments/confirm", {}, "payments:write", 400),
        ("POST", "/api/payments/refund", {}, "payments:refund", 400),
        ("GET", "/api/monitoring/metrics", None, "monitoring:read", 200),
        ("GET", "/api/monitoring/integrations", None, "monitoring:read", 200),
        ("GET", "/api/monitoring/errors", None, "monitoring:read", 200),
        ("GET", "/api/monitoring/alerts", None, "monitoring:read", 200),
        ("GET", "/api/integrations/deliveries", None, "monitoring:read", 200),
        ("POST", f"/api/integrations/deliveries/{missing}/retry", None, "integrations:write", 404),
    ]


def test_each_scope_allows_its_operations_and_no_other(
    live_server: Any, staff: Any, customer: Any, place: Callable[..., Order], make_key: Callable[..., str]
) -> None:
    order = place(customer=customer)
    only = {scope: make_key(staff, scope) for scope in settings.API_SCOPES}
    all_but = {scope: make_key(staff, *(set(settings.API_SCOPES) - {scope})) for scope in settings.API_SCOPES}
    for method, path, body, scope, allowed in operations(order):
        if scope is None:  # the public catalog: any key, whatever its scopes
            answer = call(live_server.url, method, path, only["payments:write"], body)
            assert answer.status_code == allowed, (method, path, answer.text)
            continue
        answer = call(live_server.url, method, path, only[scope], body)
        assert answer.status_code == allowed, (method, path, scope, answer.text)
        refused = call(live_server.url, method, path, all_but[scope], body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.json() == {
            "code": "insufficient_scope",
            "message": f"This operation needs the scope {scope}.",
        }


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_wrong_revoked_and_expired_keys_get_401_without_the_key_in_the_answer(
    live_server: Any, customer: Any, make_key: Callable[..., str]
) -> None:
    revoked = make_key(customer, "orders:read")
    services.api_key_revoke(prefix=revoked.partition(".")[0])
    expired = make_key(customer, "orders:read", expires_at=timezone.now() - timedelta(seconds=1))
    good = make_key(customer, "orders:read")
    wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for key, code, message in [
        (revoked, "api_key_revoked", "This API key has been revoked."),
        (expired, "api_key_expired", "This API key has expired."),
        (wrong, "invalid_api_key", "The API key is not valid."),
        ("no-dot-at-all", "invalid_api_key", "The API key is not valid."),
    ]:
        answer = call(live_server.url, "GET", "/api/orders", key)
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"code": code, "message": message}
        assert key not in answer.text
        assert not key.partition(".")[2] or key.partition(".")[2] not in answer.text
    assert call(live_server.url, "GET", "/api/orders", good).status_code == 200


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_a_key_stops_working_when_its_expiry_passes(
    live_server: Any, customer: Any, make_key: Callable[..., str]
) -> None:
    expires_at = timezone.now() + timedelta(days=30)
    key = make_key(customer, "orders:read", expires_at=expires_at)
    assert call(live_server.url, "GET", "/api/orders", key).status_code == 200
    with time_machine.travel(expires_at + timedelta(minutes=1), tick=True):
        answer = call(live_server.url, "GET", "/api/orders", key)
    assert answer.status_code == 401
    assert answer.json()["code"] == "api_key_expired"


def test_a_customers_key_sees_only_that_customers_orders(
    live_server: Any,
    customer: Any,
    other_customer: Any,
    place: Callable[..., Order],
    make_key: Callable[..., str],
) -> None:
    mine = {str(place(customer=customer).id) for _ in range(2)}
    theirs = place(customer=other_customer)
    key = make_key(customer, "orders:read", "orders:write")
    listed = call(live_server.url, "GET", "/api/orders", key)
    assert listed.status_code == 200
    assert {row["id"] for row in listed.json()["results"]} == mine
    assert call(live_server.url, "GET", f"/api/orders/{theirs.id}", key).status_code == 404
    assert call(live_server.url, "DELETE", f"/api/orders/{theirs.id}", key).status_code == 404
    # An order placed with the key belongs to the key's user.
    placed = call(live_server.url, "POST", "/api/orders", key, ORDER_BODY)
    assert placed.status_code == 201, placed.text
    assert placed.json()["email"] == customer.email


def test_staff_only_operations_stay_staff_only_whatever_the_scopes(
    live_server: Any, customer: Any, place: Callable[..., Order], make_key: Callable[..., str]
) -> None:
    order = place(customer=customer)
    key = make_key(customer, *settings.API_SCOPES)
    for method, path, body in [
        ("POST", "/api/payments/refund", {"order_id": str(order.id)}),
        ("GET", "/api/monitoring/metrics", None),
        ("GET", "/api/integrations/deliveries", None),
        ("POST", f"/api/integrations/deliveries/{uuid.uuid4()}/retry", None),
        ("PATCH", f"/api/orders/{order.id}", {"status": "fulfilled"}),
    ]:
        answer = call(live_server.url, method, path, key, body)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["code"] == "permission_denied", answer.text


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_last_used_at_is_set_and_written_at_most_once_a_minute(
    live_server: Any, customer: Any, make_key: Callable[..., str]
) -> None:
    raw = make_key(customer, "orders:read")
    key = ApiKey.objects.get(prefix=raw.partition(".")[0])
    assert key.last_used_at is None
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert call(live_server.url, "GET", "/api/orders", raw).status_code == 200
        key.refresh_from_db()
        assert key.last_used_at == start
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        assert call(live_server.url, "GET", "/api/orders", raw).status_code == 200
        key.refresh_from_db()
        assert key.last_used_at == start  # within the minute: no write
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        assert call(live_server.url, "GET", "/api/orders", raw).status_code == 200
        key.refresh_from_db()
        assert key.last_used_at == start + timedelta(seconds=61)


def test_staff_create_a_key_in_the_admin_see_it_once_and_revoke_it(live_server: Any, staff: Any) -> None:
    staff.is_superuser = True
    staff.save()
    base = live_server.url
    browser = requests.Session()
    log_in(browser, base, staff.username, path="/admin/login/")
    add_url = f"{base}/admin/access/apikey/add/"
    form = browser.get(add_url, timeout=30)
    assert form.status_code == 200
    assert "orders:read" in form.text and "Read orders" in form.text  # the scopes to tick
    created = browser.post(
        add_url,
        data={
            "csrfmiddlewaretoken": csrf_token(form.text),
            "name": "reporting",
            "user": str(staff.pk),
            "scopes": ["orders:read", "monitoring:read"],
            "expiry_date_0": "",
            "expiry_date_1": "",
            "_save": "Save",
        },
        headers={"Referer": add_url},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    shown = re.search(r"The API key for reporting is: ([A-Za-z0-9]+\.[A-Za-z0-9]+)\.", created.text)
    assert shown, created.text
    raw = shown.group(1)
    key = ApiKey.objects.get(name="reporting")
    assert (key.prefix, key.user, sorted(key.scopes)) == (
        raw.partition(".")[0],
        staff,
        ["monitoring:read", "orders:read"],
    )
    assert raw not in key.hashed_key and raw.partition(".")[2] not in key.id  # only a hash is stored
    assert call(base, "GET", "/api/monitoring/alerts", raw).status_code == 200

    changelist = browser.get(f"{base}/admin/access/apikey/", timeout=30)
    assert key.prefix in changelist.text and "reporting" in changelist.text
    assert raw not in changelist.text  # shown once, never again
    assert raw not in browser.get(f"{base}/admin/access/apikey/{key.pk}/change/", timeout=30).text

    revoked = browser.post(
        f"{base}/admin/access/apikey/",
        data={
            "csrfmiddlewaretoken": csrf_token(changelist.text),
            "action": "revoke_keys",
            "_selected_action": [key.pk],
            "index": "0",
        },
        headers={"Referer": f"{base}/admin/access/apikey/"},
        timeout=30,
    )
    assert revoked.status_code == 200
    assert "Revoked 1 API key(s)." in revoked.text
    key.refresh_from_db()
    assert key.revoked
    assert call(base, "GET", "/api/monitoring/alerts", raw).json()["code"] == "api_key_revoked"


def test_manage_py_api_keys_create_list_revoke(live_server: Any, staff: Any) -> None:
    out = io.StringIO()
    call_command(
        "api_keys",
        "create",
        "--name",
        "scraper",
        "--user",
        staff.username,
        "--scope",
        "monitoring:read",
        "--scope",
        "orders:read",
        "--expires-days",
        "30",
        stdout=out,
    )
    raw = out.getvalue().strip().splitlines()[-1]
    prefix = raw.partition(".")[0]
    key = ApiKey.objects.get(prefix=prefix)
    assert key.expiry_date is not None
    assert timedelta(days=29) < key.expiry_date - timezone.now() <= timedelta(days=30)
    assert call(live_server.url, "GET", "/api/monitoring/metrics", raw).status_code == 200

    listing = io.StringIO()
    call_command("api_keys", "list", stdout=listing)
    row = next(line for line in listing.getvalue().splitlines() if line.startswith(prefix))
    assert "scraper" in row and staff.username in row and "monitoring:read,orders:read" in row
    assert row.endswith("active") and "never" not in row.split()[-2]  # last used: just now
    assert raw not in listing.getvalue()

    call_command("api_keys", "revoke", prefix, stdout=io.StringIO())
    listing = io.StringIO()
    call_command("api_keys", "list", stdout=listing)
    assert next(line for line in listing.getvalue().splitlines() if line.startswith(prefix)).endswith(
        "revoked"
    )
    assert call(live_server.url, "GET", "/api/monitoring/metrics", raw).status_code == 401


def test_manage_py_api_keys_refuses_unknown_users_and_scopes(staff: Any) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="No user"):
        call_command("api_keys", "create", "--name", "x", "--user", "nobody", "--scope", "orders:read")
    with pytest.raises(CommandError):
        call_command("api_keys", "create", "--name", "x", "--user", staff.username, "--scope", "root")
    with pytest.raises(CommandError, match="No API key"):
        call_command("api_keys", "revoke", "nosuchpx")


def _api_views() -> list[tuple[str, type]]:
    from django.urls import URLPattern, URLResolver, get_resolver
    from rest_framework.views import APIView

    found: list[tuple[str, type]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "view_class", None)
                if isinstance(view_class, type) and issubclass(view_class, APIView):
                    found.append((prefix + str(pattern.pattern), view_class))

    walk(get_resolver().url_patterns, "/")
    return found


def test_every_api_operation_that_accepts_keys_checks_their_scopes() -> None:
    """A new API view that authenticates keys and tokens must declare the scope of each of its
    methods and list HasScopes; otherwise a key with any scope could call it."""
    from types import SimpleNamespace

    from access.authentication import ApiKeyAuthentication, OAuth2TokenAuthentication
    from access.permissions import HasScopes

    checked = 0
    for route, view_class in _api_views():
        if not route.startswith("/api/") or view_class.__module__.startswith("drf_spectacular."):
            continue  # the schema and its docs are public to every caller
        view = view_class()
        if not any(
            isinstance(a, ApiKeyAuthentication | OAuth2TokenAuthentication) for a in view.get_authenticators()
        ):
            continue  # keys and tokens are not even read there (token endpoints, health)
        methods = [
            m.upper() for m in view_class.http_method_names if hasattr(view_class, m) and m != "options"
        ]
        for method in methods:
            view.request = SimpleNamespace(method=method)
            assert any(isinstance(p, HasScopes) for p in view.get_permissions()), (route, method)
            assert method in getattr(view_class, "required_scopes", {}) or method == "HEAD", (route, method)
            if view_class.required_scopes.get(method):
                assert view_class.required_scopes[method] in settings.API_SCOPES, (route, method)
            checked += 1
    assert checked >= 16
