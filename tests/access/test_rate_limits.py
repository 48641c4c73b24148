"""Rate limits: one budget for every server process, 429 in the JSON shape with Retry-After.

The first tests start two real web servers (separate processes) on one database and alternate
requests between them: a budget of N lets exactly N through, whichever process answers. Budgets
are an hour long, so no verdict depends on how fast the machine is. The rest run in-process.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import time_machine
from django.test import RequestFactory, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from access.throttling import client_address, parse_rate
from tests.conftest import ADDRESS_JSON
from tests.polling import DEADLINE_SECONDS, eventually
from tests.stores import orders_in_dynamodb
from tests.test_run import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
BUDGET = 3  # requests per hour for each limited route on the two servers


@pytest.fixture(scope="module")
def two_servers(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[list[str]]:
    """Two `runserver` processes on one fresh SQLite database (its shared-cache table made by
    `migrate`), with small budgets; one proxy trusted, so each test can speak from an address of
    its own in X-Forwarded-For. With orders in DynamoDB, they share a table of their own."""
    folder = tmp_path_factory.mktemp("two-servers")
    store = two_servers_store(request)
    env = {
        **os.environ,
        "DJANGO_ENV": "development",
        "SQLITE_PATH": str(folder / "db.sqlite3"),
        "REDIS_URL": "",
        "RATE_LIMIT_LOGIN": f"{BUDGET}/hour",
        "RATE_LIMIT_ORDER_CREATE_ANON": f"{BUDGET}/hour",
        "RATE_LIMIT_PAYMENT_CONFIRM": f"{BUDGET}/hour",
        "RATE_LIMIT_WEBHOOK": f"{BUDGET}/hour",
        "RATE_LIMIT_TRUSTED_PROXY_COUNT": "1",
        # Wrong passwords here test the rate limit, not the lockout.
        "LOGIN_LOCKOUT_FAILURES": "0",
        "LOGIN_LOCKOUT_ADDRESS_FAILURES": "0",
        "MONITORING_FLUSH_SECONDS": "0",
        "DJANGO_SUPERUSER_PASSWORD": "pw-for-two-servers",
        **store,
    }
    env.pop("DATABASE_URL", None)
    manage = [sys.executable, "manage.py"]
    for command in (
        ["migrate", "--noinput"],
        ["createsuperuser", "--noinput", "--username", "payer", "--email", "payer@example.com"],
    ):
        subprocess.run(
            [*manage, *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=DEADLINE_SECONDS
        )
    ports = [free_port(), free_port()]
    logs = [(folder / f"server-{port}.log").open("w") for port in ports]
    processes = [
        subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for base, process in zip(bases, processes, strict=True):

            def up(base: str = base, process: subprocess.Popen[bytes] = process) -> bool:
                assert process.poll() is None, f"the server at {base} exited"
                return requests.get(f"{base}/api/products", timeout=DEADLINE_SECONDS).status_code == 200

            eventually(up, what=f"the server at {base}")
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def two_servers_store(request: pytest.FixtureRequest) -> dict[str, str]:
    """With orders in DynamoDB: the variables of a table made for the two servers (on the
    session's moto, which the tests using them do not reset), else none."""
    if not orders_in_dynamodb():
        return {}
    from orders.repositories.dynamodb import create_tables, dynamodb_client

    env = {
        "DYNAMODB_ENDPOINT_URL": request.getfixturevalue("dynamodb_server"),
        "DYNAMODB_TABLE": f"cis-orders-two-servers-{uuid.uuid4().hex[:8]}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    with override_settings(**env):
        create_tables(dynamodb_client())
    return env


def _alternate(bases: list[str]) -> Iterator[str]:
    return itertools.cycle(bases)


def _assert_rate_limited(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "rate_limited"
    wait = int(response.headers["Retry-After"])
    assert 0 < wait <= 3600
    assert response.json()["message"] == f"Too many requests; try again in {wait} s."


@pytest.mark.slow
def test_the_login_budget_is_shared_by_two_server_processes(two_servers: list[str]) -> None:
    servers = _alternate(two_servers)
    answers = [
        requests.post(
            f"{next(servers)}/api/auth/token",
            json={"username": "nobody", "password": "wrong"},
            timeout=DEADLINE_SECONDS,
        )
        for _ in range(BUDGET + 1)
    ]
    # Each server saw at most two of them: alone, neither would have refused any.
    assert [a.status_code for a in answers[:BUDGET]] == [401] * BUDGET
    _assert_rate_limited(answers[BUDGET])
    # The other server refuses too: the budget is spent for everyone at this address.
    _assert_rate_limited(
        requests.post(
            f"{next(servers)}/api/auth/token",
            json={"username": "payer", "password": "pw-for-two-servers"},
            timeout=DEADLINE_SECONDS,
        )
    )


@pytest.mark.slow
def test_anonymous_orders_through_the_api_and_the_checkout_form_share_one_budget(
    two_servers: list[str],
) -> None:
    servers = _alternate(two_servers)
    address = {"X-Forwarded-For": "203.0.113.7"}
    order = {
        "lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}],
        "shipping_address": ADDRESS_JSON,
        "email": "guest@example.com",
    }
    api = [
        requests.post(
            f"{next(servers)}/api/orders",
            json=order,
            headers={**address, "Idempotency-Key": uuid.uuid4().hex},
            timeout=DEADLINE_SECONDS,
        )
        for _ in range(BUDGET - 1)
    ]
    assert [a.status_code for a in api] == [400] * (BUDGET - 1)  # counted, then refused by validation
    # The checkout form (a browser with its CSRF cookie; an empty cart) takes the last one.
    browser = requests.Session()
    browser.headers.update(address)
    base = next(servers)
    browser.get(f"{base}/accounts/login/", timeout=DEADLINE_SECONDS)
    form = {"csrfmiddlewaretoken": browser.cookies["csrftoken"]}
    first = browser.post(f"{base}/checkout/", data=form, allow_redirects=False, timeout=DEADLINE_SECONDS)
    assert first.status_code == 302  # the empty cart: back to the cart page
    _assert_rate_limited(
        browser.post(f"{next(servers)}/checkout/", data=form, allow_redirects=False, timeout=DEADLINE_SECONDS)
    )
    _assert_rate_limited(
        requests.post(
            f"{next(servers)}/api/orders",
            json=order,
            headers={**address, "Idempotency-Key": uuid.uuid4().hex},
            timeout=DEADLINE_SECONDS,
        )
    )
    # Another address has its own budget.
    other = requests.post(
        f"{next(servers)}/api/orders",
        json=order,
        headers={"X-Forwarded-For": "203.0.113.8", "Idempotency-Key": uuid.uuid4().hex},
        timeout=DEADLINE_SECONDS,
    )
    assert other.status_code == 400


@pytest.mark.slow
def test_the_webhook_budget_is_per_source_address(two_servers: list[str]) -> None:
    servers = _alternate(two_servers)
    address = {"X-Forwarded-For": "198.51.100.20", "Stripe-Signature": "t=1,v1=bad"}
    answers = [
        requests.post(
            f"{next(servers)}/webhooks/stripe", data=b"{}", headers=address, timeout=DEADLINE_SECONDS
        )
        for _ in range(BUDGET + 1)
    ]
    assert [a.status_code for a in answers[:BUDGET]] == [400] * BUDGET  # counted, then the signature fails
    _assert_rate_limited(answers[BUDGET])


@pytest.mark.slow
def test_payment_confirmation_is_limited_per_user_across_the_api_and_the_pay_page(
    two_servers: list[str],
) -> None:
    servers = _alternate(two_servers)
    login = requests.post(
        f"{next(servers)}/api/auth/token",
        json={"username": "payer", "password": "pw-for-two-servers"},
        headers={"X-Forwarded-For": "192.0.2.50"},
        timeout=DEADLINE_SECONDS,
    )
    assert login.status_code == 200, login.text
    bearer = {"Authorization": f"Bearer {login.json()['access']}"}
    # The budget follows the user, whatever address each call comes from.
    answers = [
        requests.post(
            f"{next(servers)}/api/payments/confirm",
            json={},
            headers={**bearer, "X-Forwarded-For": f"192.0.2.{60 + n}"},
            timeout=DEADLINE_SECONDS,
        )
        for n in range(BUDGET + 1)
    ]
    assert [a.status_code for a in answers[:BUDGET]] == [400] * BUDGET
    _assert_rate_limited(answers[BUDGET])
    # The pay page's confirm call is a plain Django view on the same budget (a session login).
    browser = requests.Session()
    base = next(servers)
    browser.headers["X-Forwarded-For"] = "192.0.2.99"
    browser.get(f"{base}/accounts/login/", timeout=DEADLINE_SECONDS)
    logged_in = browser.post(
        f"{base}/accounts/login/",
        data={
            "username": "payer",
            "password": "pw-for-two-servers",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        allow_redirects=False,
        timeout=DEADLINE_SECONDS,
    )
    assert logged_in.status_code == 302, logged_in.text
    _assert_rate_limited(
        browser.post(
            f"{next(servers)}/orders/{uuid.uuid4()}/pay/confirm",
            json={"payment_method": "pm_card_visa"},
            headers={"X-CSRFToken": browser.cookies["csrftoken"]},
            timeout=DEADLINE_SECONDS,
        )
    )


# --- in-process ----------------------------------------------------------------------------
@pytest.fixture
def small_budgets(settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "2/min",
            "anon": "2/min",
            "order_create_anon": "1/hour",
        },
    }


@pytest.mark.usefixtures("repository")  # reaches the order store
@pytest.mark.django_db
@pytest.mark.usefixtures("small_budgets")
def test_each_user_has_a_budget_of_their_own_and_it_comes_back_after_the_window(
    api_as: Any, customer: Any, other_customer: Any
) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        # Logging in is anonymous: the login budget, not the users'.
        ada, grace = api_as(customer), api_as(other_customer)
        assert [ada.get("/api/orders").status_code for _ in range(2)] == [200, 200]
        refused = ada.get("/api/orders")
        assert refused.status_code == 429
        assert refused["Retry-After"] == "60"
        assert refused.json() == {"code": "rate_limited", "message": "Too many requests; try again in 60 s."}
        assert grace.get("/api/orders").status_code == 200
    with time_machine.travel(start + timedelta(seconds=45), tick=False):
        assert ada.get("/api/orders")["Retry-After"] == "15"
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        assert ada.get("/api/orders").status_code == 200


@pytest.mark.usefixtures("repository")  # reaches the order store
@pytest.mark.django_db
@pytest.mark.usefixtures("small_budgets")
def test_the_anonymous_order_budget_does_not_apply_to_customers(api_as: Any, customer: Any, mug: Any) -> None:
    order = {"lines": [{"sku": mug.sku, "quantity": 1}], "shipping_address": ADDRESS_JSON}
    client = api_as(customer)
    for _ in range(2):
        placed = client.post("/api/orders", order, format="json", HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)
        assert placed.status_code == 201, placed.content
    guest = APIClient()
    body = {**order, "email": "guest@example.com"}
    assert guest.post("/api/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="g1").status_code == 201
    assert guest.post("/api/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="g2").status_code == 429


def test_rates_and_addresses_are_read_as_documented(settings: Any) -> None:
    assert parse_rate("10/min") == (10, 60)
    assert parse_rate("20/hour") == (20, 3600)
    assert parse_rate("5/s") == (5, 1)
    assert parse_rate("off") is None
    with pytest.raises(ValueError, match="not <requests>"):
        parse_rate("ten/min")
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1, 2.2.2.2")
    settings.RATE_LIMIT_TRUSTED_PROXY_COUNT = 0
    assert client_address(request) == "10.0.0.1"  # a header anyone can send is ignored
    settings.RATE_LIMIT_TRUSTED_PROXY_COUNT = 1
    assert client_address(request) == "2.2.2.2"  # what our one proxy saw, not what the client claims
    settings.RATE_LIMIT_TRUSTED_PROXY_COUNT = 3
    assert client_address(request) == "10.0.0.1"  # fewer entries than proxies: not to be trusted


@pytest.mark.django_db
def test_oauth_token_endpoints_and_signup_are_rate_limited_per_address(settings: Any) -> None:
    """Client secrets and codes cannot be guessed at speed, nor accounts made in bulk. The three
    OAuth endpoints share the token budget of an address; sign-up draws on the login budget."""
    from django.test import Client

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**rates, "token_refresh": "2/min", "login": "2/min"},
    }
    client = Client()
    tokens = [client.post("/o/token/", {"grant_type": "client_credentials"}).status_code for _ in range(3)]
    assert 429 not in tokens[:2] and tokens[2] == 429
    assert client.post("/o/introspect/", {"token": "x"}).status_code == 429
    assert client.post("/o/revoke_token/", {"token": "x"}).status_code == 429
    signups = [client.post("/accounts/signup/", {"username": "x"}).status_code for _ in range(3)]
    assert 429 not in signups[:2] and signups[2] == 429
