"""OAuth 2.0 against the running server, driven by a real client library (Authlib): the
authorization-code flow with PKCE through the consent page, then the API with the token (its
scopes enforced), refresh, revocation and introspection; client credentials for a machine
client acting as its application's user; and a code flow without PKCE refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from oauth2_provider.models import get_application_model

from orders.domain import Order
from tests.access.forms import csrf_token, form_fields, log_in

Application = get_application_model()
SECRET = "a-client-secret-for-tests-only-0123456789"


def make_app(*, grant: str, redirect_uri: str = "", user: Any = None, name: str = "Ledger Sync") -> Any:
    """A confidential application; its secret is stored hashed, so the test keeps SECRET."""
    return Application.objects.create(
        name=name,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=grant,
        redirect_uris=redirect_uri,
        client_secret=SECRET,
        user=user,
    )


def consent(browser: requests.Session, authorize_url: str, *, allow: bool = True) -> requests.Response:
    """Open the consent page as the logged-in user and answer it; returns the redirect."""
    page = browser.get(authorize_url, allow_redirects=False, timeout=30)
    assert page.status_code == 200, page.text
    data = form_fields(page.text, "authorizationForm")
    data["csrfmiddlewaretoken"] = csrf_token(page.text)
    if allow:
        data["allow"] = "Authorize"
    answer = browser.post(
        page.url, data=data, headers={"Referer": page.url}, allow_redirects=False, timeout=30
    )
    assert answer.status_code == 302, answer.text
    return answer


def test_authorization_code_with_pkce_then_the_api_refresh_revoke_and_introspect(
    live_server: Any, customer: Any, other_customer: Any, place: Callable[..., Order]
) -> None:
    base = live_server.url
    redirect_uri = f"{base}/oauth-callback"  # never followed: the code is read from Location
    app = make_app(grant=Application.GRANT_AUTHORIZATION_CODE, redirect_uri=redirect_uri)
    mine = place(customer=customer)
    place(customer=other_customer)

    browser = requests.Session()
    log_in(browser, base, customer.username)
    client = OAuth2Session(
        app.client_id,
        SECRET,
        scope="orders:read",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    verifier = generate_token(64)
    authorize_url, state = client.create_authorization_url(f"{base}/o/authorize/", code_verifier=verifier)
    assert "code_challenge=" in authorize_url and "code_challenge_method=S256" in authorize_url

    page = browser.get(authorize_url, timeout=30)
    assert page.status_code == 200
    assert "Ledger Sync" in page.text and "Read orders" in page.text  # the app and the scope
    assert 'href="/static/css/site.css"' in page.text  # in the site's layout
    form_action = page.headers.get("Content-Security-Policy", "")
    assert f"form-action 'self' {base}" in form_action  # the consent may lead back to the app

    answer = consent(browser, authorize_url)
    location = answer.headers["Location"]
    assert location.startswith(f"{redirect_uri}?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state] and query["code"]

    token = client.fetch_token(f"{base}/o/token/", authorization_response=location, code_verifier=verifier)
    assert token["scope"] == "orders:read" and token["refresh_token"]

    listed = client.get(f"{base}/api/orders", timeout=30)
    assert listed.status_code == 200, listed.text
    assert [row["id"] for row in listed.json()["results"]] == [str(mine.id)]  # acts as the customer
    write = client.patch(f"{base}/api/orders/{mine.id}", json={"note": "hello"}, timeout=30)
    assert write.status_code == 403
    assert write.json() == {
        "code": "insufficient_scope",
        "message": "This operation needs the scope orders:write.",
    }

    old_access = token["access_token"]
    token = client.refresh_token(f"{base}/o/token/")
    assert token["access_token"] != old_access
    assert client.get(f"{base}/api/orders", timeout=30).status_code == 200

    introspect_url = f"{base}/o/introspect/"
    seen = client.introspect_token(introspect_url, token=token["access_token"])
    assert seen.status_code == 200
    assert seen.json()["active"] is True
    assert (seen.json()["scope"], seen.json()["username"]) == ("orders:read", customer.username)

    revoked = client.revoke_token(
        f"{base}/o/revoke_token/", token=token["access_token"], token_type_hint="access_token"
    )
    assert revoked.status_code == 200, revoked.text
    refused = client.get(f"{base}/api/orders", timeout=30)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_token"
    assert client.introspect_token(introspect_url, token=token["access_token"]).json() == {"active": False}


def test_the_user_can_deny_consent(live_server: Any, customer: Any) -> None:
    base = live_server.url
    redirect_uri = f"{base}/oauth-callback"
    app = make_app(grant=Application.GRANT_AUTHORIZATION_CODE, redirect_uri=redirect_uri)
    browser = requests.Session()
    log_in(browser, base, customer.username)
    client = OAuth2Session(
        app.client_id, SECRET, scope="orders:read", redirect_uri=redirect_uri, code_challenge_method="S256"
    )
    authorize_url, _ = client.create_authorization_url(
        f"{base}/o/authorize/", code_verifier=generate_token(64)
    )
    query = parse_qs(urlsplit(consent(browser, authorize_url, allow=False).headers["Location"]).query)
    assert query["error"] == ["access_denied"] and "code" not in query


def test_client_credentials_act_as_the_applications_user(live_server: Any, staff: Any, customer: Any) -> None:
    base = live_server.url
    token_url = f"{base}/o/token/"
    app = make_app(grant=Application.GRANT_CLIENT_CREDENTIALS, user=staff, name="Dashboard")
    client = OAuth2Session(app.client_id, SECRET, scope="monitoring:read")
    token = client.fetch_token(token_url, grant_type="client_credentials")
    assert token["scope"] == "monitoring:read"
    metrics = client.get(f"{base}/api/monitoring/metrics", timeout=30)
    assert metrics.status_code == 200, metrics.text
    assert client.get(f"{base}/api/monitoring/alerts", timeout=30).status_code == 200
    other = client.get(f"{base}/api/orders", timeout=30)
    assert (other.status_code, other.json()["code"]) == (403, "insufficient_scope")

    # The user's rights still apply: a customer's application gets the scope but not the data.
    customers_app = make_app(grant=Application.GRANT_CLIENT_CREDENTIALS, user=customer, name="Own")
    weak = OAuth2Session(customers_app.client_id, SECRET, scope="monitoring:read")
    weak.fetch_token(token_url, grant_type="client_credentials")
    refused = weak.get(f"{base}/api/monitoring/metrics", timeout=30)
    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")

    # An application without a user has nobody to act for: no token.
    orphan = make_app(grant=Application.GRANT_CLIENT_CREDENTIALS, name="Orphan")
    answer = requests.post(
        token_url,
        data={"grant_type": "client_credentials", "scope": "monitoring:read"},
        auth=(orphan.client_id, SECRET),
        timeout=30,
    )
    assert answer.status_code in {400, 401}
    assert answer.json()["error"] == "unauthorized_client"


def test_a_code_flow_without_pkce_is_refused(live_server: Any, customer: Any) -> None:
    base = live_server.url
    redirect_uri = f"{base}/oauth-callback"
    app = make_app(grant=Application.GRANT_AUTHORIZATION_CODE, redirect_uri=redirect_uri)
    browser = requests.Session()
    log_in(browser, base, customer.username)

    no_pkce = OAuth2Session(app.client_id, SECRET, scope="orders:read", redirect_uri=redirect_uri)
    authorize_url, _ = no_pkce.create_authorization_url(f"{base}/o/authorize/")
    assert "code_challenge" not in authorize_url
    answer = browser.get(authorize_url, allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["error"] == ["invalid_request"] and "code" not in query

    # A code issued to a PKCE request cannot be exchanged without its verifier.
    client = OAuth2Session(
        app.client_id, SECRET, scope="orders:read", redirect_uri=redirect_uri, code_challenge_method="S256"
    )
    authorize_url, _ = client.create_authorization_url(
        f"{base}/o/authorize/", code_verifier=generate_token(64)
    )
    code = parse_qs(urlsplit(consent(browser, authorize_url).headers["Location"]).query)["code"][0]
    exchange = requests.post(
        f"{base}/o/token/",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri},
        auth=(app.client_id, SECRET),
        timeout=30,
    )
    assert exchange.status_code == 400
    assert exchange.json()["error"] in {"invalid_request", "invalid_grant"}


@pytest.mark.parametrize("method", ["plain"])
def test_the_plain_pkce_method_is_refused(live_server: Any, customer: Any, method: str) -> None:
    base = live_server.url
    redirect_uri = f"{base}/oauth-callback"
    app = make_app(grant=Application.GRANT_AUTHORIZATION_CODE, redirect_uri=redirect_uri)
    browser = requests.Session()
    log_in(browser, base, customer.username)
    client = OAuth2Session(
        app.client_id, SECRET, scope="orders:read", redirect_uri=redirect_uri, code_challenge_method=method
    )
    authorize_url, _ = client.create_authorization_url(
        f"{base}/o/authorize/", code_verifier=generate_token(64)
    )
    answer = browser.get(authorize_url, allow_redirects=False, timeout=30)
    if answer.status_code == 200:  # refused when the code would be issued
        answer = consent(browser, authorize_url)
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert "code" not in query and query["error"] == ["invalid_request"]
