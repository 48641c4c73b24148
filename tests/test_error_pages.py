"""Error pages in the site's style, the favicon, and a 403 logged as one line, not a traceback."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.test import Client, RequestFactory
from django.views.defaults import bad_request, permission_denied

from core.exceptions import handler500
from core.log_filters import ExpectedClientErrors

pytestmark = pytest.mark.django_db


def test_a_customer_opening_ops_gets_the_styled_403_and_one_log_line_without_traceback(
    client: Client, customer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.force_login(customer)
    with caplog.at_level(logging.WARNING):
        response = client.get("/ops/")

    assert response.status_code == 403
    html = response.content.decode()
    assert "<h1>This page is not for you</h1>" in html
    assert "It is for the shop's staff." in html
    assert 'href="/static/css/site.css"' in html or "/static/css/site." in html
    assert 'class="site-header"' in html and "My orders" in html
    forbidden = [r for r in caplog.records if r.name == "django.request"]
    assert [r.getMessage() for r in forbidden] == ["Forbidden (Permission denied): /ops/"]
    assert all(r.exc_info is None and r.exc_text is None for r in forbidden)
    assert "Traceback" not in caplog.text


def test_the_403_page_offers_an_anonymous_visitor_the_login() -> None:
    request = RequestFactory().get("/somewhere/")
    request.user = AnonymousUser()
    request.session = SessionStore()

    response = permission_denied(request, PermissionDenied())

    assert response.status_code == 403
    html = response.content.decode()
    assert "Log in with an account that may see it." in html
    assert 'href="/accounts/login/?next=/somewhere/"' in html


def test_a_server_error_still_logs_its_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "boom", None, exc_info)
    record.status_code = 500

    assert ExpectedClientErrors().filter(record) is True
    assert record.exc_info is exc_info


def test_the_404_page_is_in_the_sites_style(client: Client) -> None:
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1>Page not found</h1>" in html
    assert 'class="site-header"' in html and 'rel="icon"' in html


def test_the_500_page_stands_alone_in_the_sites_style() -> None:
    request = RequestFactory().get("/products/")

    response = handler500(request)

    assert response.status_code == 500
    html = response.content.decode()
    assert "<h1>Something went wrong</h1>" in html
    assert '<link rel="stylesheet" href="/static/css/site.css">' in html
    assert '<link rel="icon" href="/favicon.ico" sizes="any">' in html


def test_the_favicon_is_served(client: Client) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 302
    icon = client.get(response["Location"])
    assert icon.status_code == 200
    body = b"".join(icon.streaming_content) if icon.streaming else icon.content
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert icon["Content-Type"] in ("image/x-icon", "image/vnd.microsoft.icon")


def test_every_page_links_the_icon(client: Client, mug: Any) -> None:
    html = client.get("/").content.decode()

    assert '<link rel="icon" href="/static/favicon.ico" sizes="any">' in html


def test_djangos_records_print_once_through_the_roots_handlers() -> None:
    # Django's default console handler (DEBUG only) printed each 403 a second time, traceback and all.
    assert logging.getLogger("django").handlers == []
    assert logging.getLogger("django").propagate and logging.getLogger("django.request").propagate


def test_a_form_without_its_csrf_token_gets_the_styled_page(mug: Any) -> None:
    client = Client(enforce_csrf_checks=True)

    response = client.post(f"/cart/add/{mug.sku}/", {"quantity": 1})

    assert response.status_code == 403
    html = response.content.decode()
    assert "<h1>Please try again</h1>" in html and 'class="site-header"' in html


def test_a_bad_request_gets_the_styled_page() -> None:
    response = bad_request(RequestFactory().get("/"), SuspiciousOperation("bad"))

    assert response.status_code == 400
    html = response.content.decode()
    assert "<h1>Bad request</h1>" in html and '<link rel="stylesheet" href="/static/css/site.css">' in html
