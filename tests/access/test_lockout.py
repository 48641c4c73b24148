"""Login lockout on the token endpoint, the login page and the admin's login, and the audit line
of every failed login (which never holds the password)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests.orders.factories import UserFactory

PASSWORD = "pw-for-tests"  # the factories' password
WRONG = "Wr0ng-but-secret-S3cret!"


@pytest.fixture(autouse=True)
def _no_login_budget(db: None, settings: Any) -> None:
    """The login rate limit is not what these tests are about (tests/conftest.py empties the
    shared cache, lockouts included, before each test)."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login": "off"},
    }


def token(username: str, password: str, address: str = "127.0.0.1") -> Any:
    return APIClient().post(
        "/api/auth/token", {"username": username, "password": password}, format="json", REMOTE_ADDR=address
    )


def form_login(username: str, password: str, address: str = "127.0.0.1") -> tuple[Any, Client]:
    client = Client()
    answer = client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )
    return answer, client


def admin_login(username: str, password: str) -> tuple[Any, Client]:
    client = Client()
    answer = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return answer, client


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_a_username_is_locked_after_five_failures_even_for_the_right_password_until_it_expires(
    staff: Any,
) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        # From five addresses: the count is the username's, wherever the guesses come from.
        assert [token("staffer", WRONG, f"10.0.0.{n}").status_code for n in range(5)] == [401] * 5
        refused = token("staffer", PASSWORD)
        assert refused.status_code == 429
        assert refused["Retry-After"] == "900"
        assert refused.json()["code"] == "locked_out"
        # The login page and the admin's login refuse it too, with a form error.
        page, browser = form_login("staffer", PASSWORD)
        assert page.status_code == 200 and not logged_in(browser)
        assert "Too many failed logins" in page.content.decode()
        admin_page, admin_browser = admin_login("staffer", PASSWORD)
        assert admin_page.status_code == 200 and not logged_in(admin_browser)
        assert "Too many failed logins" in admin_page.content.decode()
        # Another username is not affected.
        assert token("ada", PASSWORD).status_code == 401  # no such user here, but not locked out
    with time_machine.travel(start + timedelta(seconds=899), tick=False):
        assert token("staffer", PASSWORD)["Retry-After"] == "1"
    with time_machine.travel(start + timedelta(seconds=901), tick=False):
        assert token("staffer", PASSWORD).status_code == 200
        admin_page, admin_browser = admin_login("staffer", PASSWORD)
        assert admin_page.status_code == 302 and logged_in(admin_browser)


def test_an_address_is_locked_after_its_failures_for_every_username(settings: Any, customer: Any) -> None:
    settings.LOGIN_LOCKOUT_ADDRESS_FAILURES = 3
    for name in ("root", "admin", "test"):
        assert token(name, WRONG, "192.0.2.9").status_code == 401
    assert token("ada", PASSWORD, "192.0.2.9").status_code == 429
    page, browser = form_login("ada", PASSWORD, "192.0.2.9")
    assert "Too many failed logins" in page.content.decode() and not logged_in(browser)
    # The account itself is fine from anywhere else.
    assert token("ada", PASSWORD, "192.0.2.10").status_code == 200


def test_a_success_clears_the_username_count(customer: Any) -> None:
    for _ in range(4):
        assert token("ada", WRONG).status_code == 401
    page, browser = form_login("ada", PASSWORD)  # a session login clears it as well as a token
    assert page.status_code == 302 and logged_in(browser)
    for _ in range(4):
        assert token("ada", WRONG).status_code == 401
    assert token("ada", PASSWORD).status_code == 200


def test_every_failed_login_is_audited_with_username_address_and_reason_never_the_password(
    caplog: pytest.LogCaptureFixture, settings: Any, staff: Any
) -> None:
    settings.LOGIN_LOCKOUT_FAILURES = 3
    UserFactory(username="sleeper", is_active=False)
    caplog.set_level(logging.INFO)
    token("staffer", WRONG, "198.51.100.1")
    form_login("staffer", WRONG, "198.51.100.2")
    admin_login("staffer", WRONG)
    token("sleeper", PASSWORD, "198.51.100.3")  # the right password of an inactive account
    token("staffer", WRONG, "198.51.100.4")  # locked out: three failures already
    audit = [r for r in caplog.records if r.name == "access.audit"]
    seen = [(r.username, r.address, r.channel, r.reason) for r in audit]  # type: ignore[attr-defined]
    assert seen == [
        ("staffer", "198.51.100.1", "api", "bad_credentials"),
        ("staffer", "198.51.100.2", "form", "bad_credentials"),
        ("staffer", "127.0.0.1", "admin", "bad_credentials"),
        ("sleeper", "198.51.100.3", "api", "inactive"),
        ("staffer", "198.51.100.4", "api", "locked_out"),
    ]
    assert all("staffer" in r.getMessage() or "sleeper" in r.getMessage() for r in audit)
    # Not in any line of any logger, nor in anything attached to one.
    for record in caplog.records:
        for secret in (WRONG, PASSWORD):
            assert secret not in record.getMessage()
            assert secret not in repr(record.__dict__)
    assert WRONG not in caplog.text and PASSWORD not in caplog.text


def test_a_username_cannot_break_the_audit_line(caplog: pytest.LogCaptureFixture, db: None) -> None:
    caplog.set_level(logging.INFO)
    token("eve\nINFO forged line", WRONG)
    [record] = [r for r in caplog.records if r.name == "access.audit"]
    assert "\n" not in record.getMessage()
    assert record.username == "eve\\nINFO forged line"  # type: ignore[attr-defined]
