"""Live status in a real browser against the real server: gunicorn started from the Procfile's
`web` line (uvicorn workers serving config/asgi.py) with TWO worker processes, so the stream
and the request that changes the order may be answered by different processes, which only the
shared cache (here the database cache table) connects.

A customer's order page turns "Paid" while the test pays through the API, and /ops/ counts a
new order, both without a reload (a marker set on the page's window object is still there).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from orders.management.commands.seed_demo import (
    DEMO_CUSTOMER_PASSWORD,
    DEMO_CUSTOMER_USERNAME,
    DEMO_STAFF_PASSWORD,
    DEMO_STAFF_USERNAME,
)
from sandbox.stripe.server import StripeSandboxThread
from tests.polling import DEADLINE_SECONDS, eventually
from tests.test_run import HANG_SECONDS, http
from tools.processes import (
    descendants,
    free_port,
    manage,
    port_closed,
    procfile_command,
    start,
    stop,
    web_server_env,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADDRESS = {"name": "Ada", "line1": "12 Row", "city": "London", "postal_code": "N1", "country": "GB"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The Procfile's web server with two workers, its own SQLite database (migrated, demo data)
    and a Stripe stand-in; yields its base URL once it answers."""
    stripe = StripeSandboxThread(webhook_delay=None)
    stripe.start()
    port = free_port()
    folder = tmp_path_factory.mktemp("live-server")
    env = {
        **web_server_env(folder=folder, port=port, stripe_url=stripe.url),
        "MONITORING_FLUSH_SECONDS": "0.5",
    }
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        manage(env, *command, timeout=HANG_SECONDS)
    log = folder / "gunicorn.log"
    process = start(procfile_command("web"), env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
            return http("GET", f"{base}/api/monitoring/health")[0] == 200

        eventually(up, what="the web server")
        # gunicorn's master and its two workers.
        eventually(lambda: len(descendants(process.pid)) >= 2, what="two gunicorn workers")
        yield {"base": base, "log": log, "pid": process.pid}
    finally:
        stop(process, timeout=DEADLINE_SECONDS)
        stripe.stop()
        eventually(lambda: port_closed(port), what=f"nothing listening on port {port} any more")


def token(base: str, username: str, password: str) -> dict[str, str]:
    status, tokens = http("POST", f"{base}/api/auth/token", {"username": username, "password": password})
    assert status == 200, tokens
    return {"Authorization": f"Bearer {tokens['access']}"}


def place_order(base: str, auth: dict[str, str]) -> dict[str, Any]:
    status, order = http(
        "POST",
        f"{base}/api/orders",
        {"lines": [{"sku": "MUG-001", "quantity": 1}], "shipping_address": ADDRESS},
        headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, order
    return order


def log_in(page: Page, base: str, username: str, password: str, then: str) -> None:
    page.goto(f"{base}/accounts/login/?next={then}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.locator("main").get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{then}")


def mark_window(page: Page) -> None:
    """A marker that only lives as long as this document: a reload or navigation drops it."""
    page.evaluate("window.__notReloaded = true")


def not_reloaded(page: Page) -> bool:
    return page.evaluate("window.__notReloaded === true")


def test_the_order_page_turns_paid_by_itself_when_the_order_is_paid_through_the_api(
    page: Page, server: dict[str, Any]
) -> None:
    base = server["base"]
    assert len(descendants(server["pid"])) >= 2  # two web processes (gunicorn workers)
    auth = token(base, DEMO_CUSTOMER_USERNAME, DEMO_CUSTOMER_PASSWORD)
    order = place_order(base, auth)
    log_in(page, base, DEMO_CUSTOMER_USERNAME, DEMO_CUSTOMER_PASSWORD, f"/orders/{order['id']}/")
    status = page.locator("#status-title .status")
    expect(status).to_have_text("Pending payment")
    # The page's stream is open (server-sent events, not the fallback poll).
    expect(page.locator("html")).to_have_attribute("data-live-mode", "stream")
    mark_window(page)

    paid_status, payment = http(
        "POST",
        f"{base}/api/payments/confirm",
        {"order_id": order["id"], "payment_method": "pm_card_visa"},
        auth,
    )
    assert (paid_status, payment["status"]) == (200, "succeeded"), payment

    expect(status).to_have_text("Paid")
    expect(page.locator("#order-live .pay-now")).to_have_count(0)
    assert not_reloaded(page)
    assert page.locator("html").get_attribute("data-live-mode") == "stream"


def test_ops_counts_a_new_order_by_itself(page: Page, server: dict[str, Any]) -> None:
    base = server["base"]
    log_in(page, base, DEMO_STAFF_USERNAME, DEMO_STAFF_PASSWORD, "/ops/")
    expect(page.locator("html")).to_have_attribute("data-live-mode", "stream")
    tile = page.locator("#figure-orders-created .tile-value")
    before = int(tile.inner_text())
    mark_window(page)

    place_order(base, token(base, DEMO_CUSTOMER_USERNAME, DEMO_CUSTOMER_PASSWORD))

    expect(tile).to_have_text(str(before + 1))
    expect(page.locator("#ops-refresh-status")).to_contain_text("Updated at")
    assert not_reloaded(page)


def test_open_streams_hold_no_worker_thread(server: dict[str, Any]) -> None:
    """More open streams than the two workers have threads (GUNICORN_THREADS=4 each): the shop
    page and the API still answer, and every stream is still open and says it is one."""
    import requests

    base = server["base"]
    session = requests.Session()
    session.get(f"{base}/accounts/login/", timeout=HANG_SECONDS)
    login = session.post(
        f"{base}/accounts/login/",
        data={
            "username": DEMO_STAFF_USERNAME,
            "password": DEMO_STAFF_PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=HANG_SECONDS,
    )
    assert login.status_code == 200 and login.url == f"{base}/", login.url
    streams = [session.get(f"{base}/live/ops/", stream=True, timeout=HANG_SECONDS) for _ in range(12)]
    try:
        for stream in streams:
            assert stream.status_code == 200
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert next(stream.iter_content(chunk_size=None)).startswith(b"retry: ")
        assert session.get(f"{base}/", timeout=HANG_SECONDS).status_code == 200
        assert http("GET", f"{base}/api/products")[0] == 200
    finally:
        for stream in streams:
            stream.close()
