"""CORS and the Content-Security-Policy, against the running server (pytest-django's live_server).

- CORS: a preflight from an allowed origin is answered by the CORS middleware itself (200, no
  credentials needed) on every /api/ route, the authenticated ones included; from a refused
  origin the answer carries no Access-Control-Allow-Origin, so the browser stops there.
- CSP: every page the site serves carries the policy; only the payment page allows Stripe.js's
  origin, taken from STRIPE_JS_URL when the page is served; CSP_REPORT_ONLY switches the header.
- In Chromium, the admin pages, /ops/ and /api/docs/ render with no `securitypolicyviolation`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from django.test import Client
from playwright.sync_api import Page, expect

from orders.domain import Actor, Order
from payments import services as payment_services

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = "https://app.example.com"
REFUSED = "https://evil.example.net"
TIMEOUT = 30


def preflight(url: str, origin: str, method: str = "POST") -> requests.Response:
    return requests.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
        timeout=TIMEOUT,
    )


@pytest.fixture
def api_routes(place: Callable[..., Order], customer: Any) -> list[tuple[str, str]]:
    """(path, method) of public and authenticated API routes, with real ids."""
    order = place(customer=customer)
    return [
        ("/api/products", "GET"),
        ("/api/orders", "POST"),
        (f"/api/orders/{order.id}", "PATCH"),
        (f"/api/orders/{order.id}", "DELETE"),
        ("/api/payments/confirm", "POST"),
        ("/api/payments/refund", "POST"),
        ("/api/monitoring/errors", "GET"),
        ("/api/integrations/deliveries", "GET"),
        ("/api/auth/token", "POST"),
        ("/api/auth/token/refresh", "POST"),
    ]


@pytest.mark.django_db(transaction=True)
class TestCors:
    @pytest.fixture(autouse=True)
    def _allow(self, settings: Any) -> None:
        settings.CORS_ALLOWED_ORIGINS = [ALLOWED]

    def test_a_preflight_from_an_allowed_origin_needs_no_credentials(
        self, live_server: Any, api_routes: list[tuple[str, str]]
    ) -> None:
        for path, method in api_routes:
            response = preflight(f"{live_server.url}{path}", ALLOWED, method)
            assert response.status_code == 200, (path, response.status_code, response.text)
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED, path
            assert method in response.headers["Access-Control-Allow-Methods"], path
            allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
            assert {"authorization", "content-type", "idempotency-key"} <= set(
                allowed_headers.replace(" ", "").split(",")
            ), path
            assert response.headers["Access-Control-Max-Age"] == "3600"

    def test_a_preflight_from_a_refused_origin_is_not_allowed(
        self, live_server: Any, api_routes: list[tuple[str, str]]
    ) -> None:
        for path, method in api_routes:
            response = preflight(f"{live_server.url}{path}", REFUSED, method)
            assert response.status_code < 500, path
            assert "Access-Control-Allow-Origin" not in response.headers, path
            assert "Access-Control-Allow-Methods" not in response.headers, path

    def test_the_real_request_carries_the_headers_for_the_allowed_origin_only(
        self, live_server: Any, mug: Any
    ) -> None:
        allowed = requests.get(
            f"{live_server.url}/api/products", headers={"Origin": ALLOWED}, timeout=TIMEOUT
        )
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert "Retry-After" in allowed.headers["Access-Control-Expose-Headers"]
        # An error answer too: a browser client on that origin can read why it was refused.
        refused_call = requests.get(
            f"{live_server.url}/api/orders", headers={"Origin": ALLOWED}, timeout=TIMEOUT
        )
        assert refused_call.status_code == 401
        assert refused_call.headers["Access-Control-Allow-Origin"] == ALLOWED
        other = requests.get(f"{live_server.url}/api/products", headers={"Origin": REFUSED}, timeout=TIMEOUT)
        assert "Access-Control-Allow-Origin" not in other.headers

    def test_pages_outside_the_api_send_no_cors_headers(self, live_server: Any, mug: Any) -> None:
        response = preflight(f"{live_server.url}/checkout/", ALLOWED)
        assert "Access-Control-Allow-Origin" not in response.headers
        page = requests.get(f"{live_server.url}/", headers={"Origin": ALLOWED}, timeout=TIMEOUT)
        assert "Access-Control-Allow-Origin" not in page.headers

    def test_no_origin_is_allowed_by_default(self, live_server: Any, settings: Any) -> None:
        settings.CORS_ALLOWED_ORIGINS = []
        response = preflight(f"{live_server.url}/api/orders", ALLOWED)
        assert "Access-Control-Allow-Origin" not in response.headers


def parse_policy(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


@pytest.fixture
def site_pages(place: Callable[..., Order], customer: Any, mug: Any) -> list[tuple[str, str]]:
    """(who, path) of every kind of page the site serves, with real ids."""
    order = place(customer=customer)
    return [
        ("anonymous", "/"),
        ("anonymous", f"/products/{mug.sku}/"),
        ("anonymous", "/cart/"),
        ("anonymous", "/checkout/"),
        ("anonymous", "/accounts/login/"),
        ("anonymous", "/accounts/signup/"),
        ("anonymous", "/no-such-page/"),
        ("anonymous", "/api/docs/"),
        ("anonymous", "/api/schema/"),
        ("anonymous", "/admin/login/"),
        ("customer", "/orders/"),
        ("customer", f"/orders/{order.id}/"),
        ("customer", f"/orders/{order.id}/pay/"),
        ("customer", "/checkout/"),
        ("staff", "/ops/"),
        ("staff", "/admin/"),
        ("staff", "/admin/orders/order/"),
        ("staff", f"/admin/orders/order/{order.id}/change/"),
        ("staff", "/admin/orders/product/"),
        ("staff", f"/admin/orders/product/{mug.pk}/change/"),
        ("staff", "/admin/payments/payment/"),
        ("staff", "/admin/auth/user/"),
    ]


@pytest.mark.django_db(transaction=True)
class TestCsp:
    def test_every_page_carries_the_policy(
        self, live_server: Any, site_pages: list[tuple[str, str]], customer: Any, staff: Any, mug: Any
    ) -> None:
        staff.is_superuser = True
        staff.save()
        sessions = {}
        for name, user in (("anonymous", None), ("customer", customer), ("staff", staff)):
            client = Client()
            if user is not None:
                client.force_login(user)
            client.post(f"/cart/add/{mug.sku}/", {"quantity": 1})  # so /checkout/ shows its form
            session = requests.Session()
            session.cookies.set("sessionid", client.cookies["sessionid"].value)
            sessions[name] = session
        for who, path in site_pages:
            response = sessions[who].get(f"{live_server.url}{path}", timeout=TIMEOUT, allow_redirects=False)
            assert response.status_code in {200, 404}, (who, path, response.status_code)
            policy = parse_policy(response.headers["Content-Security-Policy"])
            assert policy["default-src"] == ["'self'"], path
            assert policy["script-src"][0] == "'self'" and "'unsafe-inline'" not in policy["script-src"], path
            assert policy["style-src"] == ["'self'"], path
            assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"], path
            assert "Content-Security-Policy-Report-Only" not in response.headers

    def test_only_the_payment_page_allows_stripe_js_from_its_configured_origin(
        self, live_server: Any, place: Callable[..., Order], customer: Any, settings: Any
    ) -> None:
        settings.STRIPE_JS_URL = "http://127.0.0.1:9/js.stripe.com/v3/"
        order = place(customer=customer)
        client = Client()
        client.force_login(customer)
        pay = client.get(f"/orders/{order.id}/pay/")
        assert pay.status_code == 200
        policy = parse_policy(pay["Content-Security-Policy"])
        for directive in ("script-src", "connect-src", "frame-src"):
            assert "http://127.0.0.1:9" in policy[directive], directive
        detail = parse_policy(client.get(f"/orders/{order.id}/")["Content-Security-Policy"])
        assert "http://127.0.0.1:9" not in str(detail)

        settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"
        policy = parse_policy(client.get(f"/orders/{order.id}/pay/")["Content-Security-Policy"])
        assert {"https://js.stripe.com", "https://*.js.stripe.com"} <= set(policy["script-src"])
        assert "https://api.stripe.com" in policy["connect-src"]
        assert "https://hooks.stripe.com" in policy["frame-src"]

    def test_the_api_docs_run_their_one_script_by_nonce(self, db: None) -> None:
        response = Client().get("/api/docs/")
        policy = parse_policy(response["Content-Security-Policy"])
        nonces = [source for source in policy["script-src"] if source.startswith("'nonce-")]
        assert len(nonces) == 1
        html = response.content.decode()
        assert f'<script nonce="{nonces[0][7:-1]}">' in html
        assert "<style" not in html and " style=" not in html
        # A page without inline script names no nonce.
        assert "'nonce-" not in Client().get("/accounts/login/")["Content-Security-Policy"]

    def test_report_only_is_a_switch(self) -> None:
        code = (
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'; django.setup();"
            "from django.conf import settings;"
            "print(hasattr(settings, 'CONTENT_SECURITY_POLICY'),"
            " hasattr(settings, 'CONTENT_SECURITY_POLICY_REPORT_ONLY'))"
        )
        env = {**os.environ, "CSP_REPORT_ONLY": "true"}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == ["False", "True"]

    def test_report_only_sends_the_other_header(self, db: None, settings: Any) -> None:
        settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = settings.CONTENT_SECURITY_POLICY
        del settings.CONTENT_SECURITY_POLICY
        response = Client().get("/accounts/login/")
        assert "Content-Security-Policy" not in response
        assert "default-src 'self'" in response["Content-Security-Policy-Report-Only"]


# --- In the browser ----------------------------------------------------------------------------
WATCH_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_admin_ops_and_docs_render_without_policy_violations(
    page: Page, live_server: Any, place: Callable[..., Order], staff: Any, mug: Any, settings: Any
) -> None:
    staff.is_superuser = True
    staff.save()
    settings.PAYMENT_GATEWAY = "tests.payments.fakes.FakeGateway"
    order = place()
    payment_services.payment_confirm(
        order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("t")
    )
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(WATCH_VIOLATIONS)
    base = live_server.url

    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", staff.username)
    page.fill("#id_password", "pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/admin/")

    visited = []
    for path, ready in (
        ("/admin/", "#content"),
        ("/admin/orders/order/", "#content"),
        (f"/admin/orders/order/{order.id}/change/", "#order-timeline"),
        ("/admin/orders/product/", "#changelist"),
        (f"/admin/orders/product/{mug.pk}/change/", "#product_form"),
        ("/admin/orders/product/add/", "#product_form"),
        ("/admin/auth/user/", "#changelist"),
        ("/ops/", "#ops-live"),
        ("/api/docs/", ".swagger-ui .information-container"),
    ):
        page.goto(f"{base}{path}")
        expect(page.locator(ready).first).to_be_visible()
        violations = page.evaluate("window.__csp")
        visited.append((path, violations))
    assert all(not violations for _, violations in visited), visited
    assert not [line for line in console if "Content Security Policy" in line], console

    # The order's money actions still ask first (a script file now, not an inline onclick).
    asked: list[str] = []

    def dismiss(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.goto(f"{base}/admin/orders/order/{order.id}/change/")
    page.locator("#order-actions button[data-confirm]").first.click()
    assert asked and page.url == f"{base}/admin/orders/order/{order.id}/change/"
    assert page.evaluate("window.__csp") == []

    # The watch itself works: an inline style attribute is reported.
    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
    expect(page.locator("p[style]")).to_have_count(1)
    page.wait_for_function("window.__csp.length > 0")
