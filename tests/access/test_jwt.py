"""JWTs against the running server: single-use refresh tokens, logout, and a password change
that stops the tokens issued before it."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.concurrency import race
from tests.polling import DEADLINE_SECONDS

PASSWORD = "pw-for-tests"  # the factories' password


def post(base: str, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{base}{path}", json=body, timeout=DEADLINE_SECONDS)


def login(base: str, username: str = "ada", password: str = PASSWORD) -> dict[str, str]:
    answer = post(base, "/api/auth/token", {"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    return answer.json()


def orders(base: str, access: str) -> requests.Response:
    return requests.get(
        f"{base}/api/orders", headers={"Authorization": f"Bearer {access}"}, timeout=DEADLINE_SECONDS
    )


def refresh(base: str, token: str) -> requests.Response:
    return post(base, "/api/auth/token/refresh", {"refresh": token})


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_a_refresh_token_works_once_and_its_successor_takes_over(live_server: Any, customer: Any) -> None:
    base = live_server.url
    first = login(base)
    renewed = refresh(base, first["refresh"])
    assert renewed.status_code == 200, renewed.text
    pair = renewed.json()
    assert pair["refresh"] != first["refresh"] and pair["access"] != first["access"]
    again = refresh(base, first["refresh"])
    assert again.status_code == 401
    assert again.json()["code"] == "token_not_valid"
    assert orders(base, pair["access"]).status_code == 200
    assert refresh(base, pair["refresh"]).status_code == 200


def test_of_two_refreshes_racing_with_one_token_only_one_gets_a_new_pair(
    live_server: Any, customer: Any
) -> None:
    base = live_server.url
    token = login(base)["refresh"]
    answers = race(2, lambda _: refresh(base, token).status_code)
    assert sorted(answers) == [200, 401]


def test_logout_revokes_the_refresh_token_and_logout_everywhere_revokes_every_one(
    live_server: Any, customer: Any
) -> None:
    base = live_server.url
    phone, laptop, tablet = login(base), login(base), login(base)
    out = post(base, "/api/auth/logout", {"refresh": phone["refresh"]})
    assert out.status_code == 200 and out.json() == {"revoked": 1}
    assert refresh(base, phone["refresh"]).status_code == 401
    assert post(base, "/api/auth/logout", {"refresh": phone["refresh"]}).status_code == 401  # already
    assert refresh(base, laptop["refresh"]).status_code == 200  # the other sessions go on
    everywhere = post(base, "/api/auth/logout", {"refresh": tablet["refresh"], "all": True})
    assert everywhere.status_code == 200 and everywhere.json()["revoked"] == 2  # tablet + laptop's renewed
    assert refresh(base, tablet["refresh"]).status_code == 401
    assert login(base)["access"]  # logging in again works


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_a_password_change_on_the_account_page_stops_the_tokens_issued_before_it(
    live_server: Any, customer: Any
) -> None:
    base = live_server.url
    before = login(base)
    assert orders(base, before["access"]).status_code == 200
    browser = requests.Session()
    browser.get(f"{base}/accounts/login/", timeout=DEADLINE_SECONDS)
    browser.post(
        f"{base}/accounts/login/",
        data={"username": "ada", "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        timeout=DEADLINE_SECONDS,
    )
    page = browser.get(f"{base}/accounts/password/", timeout=DEADLINE_SECONDS)
    assert page.status_code == 200 and "Change password" in page.text
    changed = browser.post(
        f"{base}/accounts/password/",
        data={
            "old_password": PASSWORD,
            "new_password1": "a-new-Passphrase-77",
            "new_password2": "a-new-Passphrase-77",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        allow_redirects=False,
        timeout=DEADLINE_SECONDS,
    )
    assert changed.status_code == 302 and changed.headers["Location"] == "/accounts/password/done/"
    stale = orders(base, before["access"])
    assert stale.status_code == 401 and stale.json()["code"] == "token_revoked"
    assert refresh(base, before["refresh"]).status_code == 401
    # The browser that changed it stays logged in; new tokens need the new password.
    assert (
        browser.get(f"{base}/accounts/password/", allow_redirects=False, timeout=DEADLINE_SECONDS).status_code
        == 200
    )
    assert post(base, "/api/auth/token", {"username": "ada", "password": PASSWORD}).status_code == 401
    after = login(base, password="a-new-Passphrase-77")
    assert orders(base, after["access"]).status_code == 200


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_a_password_set_anywhere_stops_old_tokens(live_server: Any, customer: Any) -> None:
    base = live_server.url
    before = login(base)
    renewed = refresh(base, login(base)["refresh"]).json()  # a rotated one is revoked as well
    customer.set_password("set-in-a-shell-or-the-admin-9")
    customer.save()
    for pair in (before, renewed):
        assert orders(base, pair["access"]).status_code == 401
        assert refresh(base, pair["refresh"]).status_code == 401
    # Saving the user for anything else leaves tokens alone.
    fresh = login(base, password="set-in-a-shell-or-the-admin-9")
    customer.email = "ada@example.org"
    customer.save()
    assert orders(base, fresh["access"]).status_code == 200
    assert refresh(base, fresh["refresh"]).status_code == 200


def test_a_token_not_made_by_the_login_endpoint_is_refused(live_server: Any, customer: Any) -> None:
    """simplejwt's own tokens carry no password stamp: they could not be revoked, so they are
    not accepted."""
    base = live_server.url
    unstamped = orders(base, str(AccessToken.for_user(customer)))
    assert unstamped.status_code == 401 and unstamped.json()["code"] == "token_revoked"
    assert refresh(base, str(RefreshToken.for_user(customer))).status_code == 401


@pytest.mark.django_db
def test_expired_refresh_tokens_are_flushed_daily() -> None:
    """The schedule comes from a data migration (pytest runs without migrations: apply it)."""
    import importlib

    from django.apps import apps
    from django_q.models import Schedule

    from access.tasks import flush_expired_tokens

    migration = importlib.import_module("access.migrations.0002_flush_expired_tokens_schedule")
    migration.create_schedule(apps, None)
    migration.create_schedule(apps, None)  # idempotent
    schedule = Schedule.objects.get(name="access-flush-expired-tokens")
    assert (schedule.func, schedule.schedule_type) == ("access.tasks.flush_expired_tokens", Schedule.DAILY)
    for app, name in migration.Migration.dependencies:
        importlib.import_module(f"{app}.migrations.{name}")
    flush_expired_tokens()  # simplejwt's command runs
