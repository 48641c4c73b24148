"""An operator watches an outage on /ops/ in a real browser: headless Chromium through Playwright
against the live server, with SendGrid's stand-in failing (503s), SNS on moto and the Sheets
stand-in working. Takes a screenshot of the page; with SAVE_SCREENSHOTS=1 it replaces docs/ops.png
(shown in the README), otherwise it goes to the test's temporary folder and the tree stays clean.

Needs Debian's `chromium` at /usr/bin/chromium (`make test` installs it when it can).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import Page, expect

from integrations import services
from integrations.models import Delivery, DeliveryState
from integrations.resilience import CircuitBreaker, shared_cache
from monitoring import views
from monitoring.models import ProbeResult
from orders.domain import Actor, Order
from payments import services as payment_services
from tests.payments.fakes import FakeGateway
from tests.polling import DEADLINE_SECONDS, eventually

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DOCS_SCREENSHOT = Path(django_settings.BASE_DIR) / "docs" / "ops.png"
PAID = 5


@pytest.fixture
def outage(
    settings: Any,
    sendgrid_sandbox: Any,
    sheets_sandbox: Any,
    aws_sandbox: dict[str, Any],
    mug: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Every stand-in up, SendGrid answering 503: one email call per delivery, given up at the
    first failure, so five failures dead-letter five emails and open the email circuit."""
    integrations = copy.deepcopy(settings.INTEGRATIONS)
    integrations["email"]["batch"] = 1
    integrations["email"]["retry"]["max_attempts"] = 1
    integrations["sheets"]["flush_seconds"] = 0.0
    settings.INTEGRATIONS = integrations
    settings.BREAKER_FAILURE_THRESHOLD = 5
    settings.BREAKER_COOLDOWN_SECONDS = 3600  # stays open while the operator looks
    for name in integrations:
        CircuitBreaker(name).reset()
        for key in (f"pause:{name}", f"ratelimit:{name}", f"dispatch-queued:{name}"):
            shared_cache().delete(key)
    monkeypatch.setattr(views, "REFRESH_SECONDS", 1)  # the page refreshes itself every second
    mug.stock = 100
    mug.save()
    sendgrid_sandbox.set_faults(fail_next=1000, status=503)
    return sendgrid_sandbox


def log_in(page: Page, base: str, user: Any) -> None:
    page.goto(f"{base}/accounts/login/?next=/ops/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "pw-for-tests")
    page.locator("main").get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/ops/")


def test_an_operator_sees_an_email_outage_retries_a_dead_letter_and_looks_up_an_order(
    page: Page,
    live_server: Any,
    outage: Any,
    staff: Any,
    customer: Any,
    place: Callable[..., Order],
    tmp_path: Path,
) -> None:
    base = live_server.url
    gateway = FakeGateway()
    orders = [place(customer=customer) for _ in range(PAID + 1)]
    for order in orders[:PAID]:
        payment_services.payment_confirm(
            order_id=order.id, payment_method="pm_card_visa", actor=Actor.system("test"), gateway=gateway
        )
    declined = orders[PAID]
    payment_services.payment_confirm(
        order_id=declined.id,
        payment_method="pm_card_chargeCustomerFail",
        actor=Actor.system("test"),
        gateway=gateway,
    )
    # The commit hook relayed each order's outbox; deliver as the workers would.
    eventually(lambda: Delivery.objects.filter(integration="email").count() == PAID + 1, what="the relay")
    email = services.deliveries_dispatch(integration="email", budget_seconds=DEADLINE_SECONDS)
    assert (email.dead, email.waited_for) == (5, "circuit open")
    assert (
        services.deliveries_dispatch(integration="sns", budget_seconds=DEADLINE_SECONDS).succeeded == PAID + 1
    )
    assert (
        services.deliveries_dispatch(integration="sheets", budget_seconds=DEADLINE_SECONDS).succeeded
        == PAID + 1
    )

    log_in(page, base, staff)
    expect(page.locator("h1")).to_have_text("Operations")
    email_card = page.locator("#integration-email")
    expect(email_card.locator("[data-circuit]")).to_have_text("circuit open")
    expect(email_card.locator(".count-badge")).to_have_text("5")
    expect(email_card.locator(".dead-letter")).to_have_count(5)
    expect(email_card).to_contain_text("ServiceUnavailableError")
    for name in ("sns", "sheets"):
        card = page.locator(f"#integration-{name}")
        expect(card.locator("[data-circuit]")).to_have_text("circuit closed")
        expect(card.locator(".success-ratio")).to_have_text("100.0%")
        expect(card.locator(".count-badge")).to_have_text("0")
    expect(page.locator("#overall-status")).to_have_text("degraded")
    expect(page.locator("#figure-orders-created .tile-value")).to_have_text(str(PAID + 1))
    expect(page.locator("#figure-payment-success .tile-value")).to_have_text(
        f"{PAID / (PAID + 1) * 100:.1f}%"
    )
    errors = page.locator("#errors-table tbody tr")
    expect(errors.filter(has_text="ServiceUnavailableError")).to_have_count(5)
    expect(errors.filter(has_text="card_declined")).to_have_count(1)
    expect(page.locator("#alerts")).to_contain_text("email")
    expect(page.locator("svg.chart")).to_have_count(4)
    expect(page.locator("#chart-orders desc")).to_contain_text(
        f"{PAID + 1} created, {PAID} paid, 1 payment failed"
    )

    # The page refreshes itself: a new order shows up without a reload.
    newest = place(customer=customer)
    expect(page.locator("#figure-orders-created .tile-value")).to_have_text(str(PAID + 2))
    expect(page.locator("#ops-refresh-status")).to_contain_text("Updated at")

    # Retry one dead letter: it is pending again, and the card counts one fewer.
    first = email_card.locator(".dead-letter").first
    delivery_id = first.get_attribute("data-delivery")
    first.get_by_role("button", name="Retry").click()
    expect(page.locator(".messages")).to_contain_text("is queued again")
    expect(page.locator("#integration-email .count-badge")).to_have_text("4")
    assert Delivery.objects.get(id=delivery_id).state == DeliveryState.PENDING

    # The SNS probe, from its button.
    page.get_by_role("button", name="Test sns").click()
    expect(page.locator(".messages")).to_contain_text("The sns probe passed")
    expect(page.locator('tr[data-probe="sns"]')).to_contain_text("passed")
    assert ProbeResult.objects.get(integration="sns", trigger="button").ok

    # A screenshot of the page as an operator sees it, before the lookup below changes it.
    page.goto(f"{base}/ops/")
    expect(page.locator("#integration-email [data-circuit]")).to_have_text("circuit open")
    screenshot = DOCS_SCREENSHOT if os.environ.get("SAVE_SCREENSHOTS") == "1" else tmp_path / "ops.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0

    # The declined order's story; a bad id is a message, not an error page.
    page.fill("#ops-order", "not-an-order")
    page.get_by_role("button", name="Show story").click()
    expect(page.locator("#lookup-error")).to_contain_text("is not an order id")
    page.fill("#ops-order", str(declined.id))
    page.get_by_role("button", name="Show story").click()
    story = page.locator("#story")
    expect(story).to_contain_text(str(declined.id))
    expect(story).to_contain_text("Your card was declined.")
    expect(story.locator(".delivery-row")).to_have_count(3)
    expect(story.locator('.delivery-row[data-integration="sns"]')).to_contain_text("Succeeded")

    # By the short reference the customer reads out, in lower case with a "#": the same story.
    page.fill("#ops-order", f"#{declined.reference.lower()}")
    page.get_by_role("button", name="Show story").click()
    expect(story.locator(".order-ref")).to_have_text(declined.reference)
    expect(story).to_contain_text(str(declined.id))
    expect(page.locator("#lookup-error")).to_have_count(0)
    page.fill("#ops-order", "#00000000" if not declined.reference.startswith("0000") else "FFFFFFFF")
    page.get_by_role("button", name="Show story").click()
    expect(page.locator("#lookup-error")).to_contain_text("No order has the reference")

    # By the customer's email address: all their orders, newest first, each opening its story.
    page.fill("#ops-order", customer.email.upper())
    page.get_by_role("button", name="Show story").click()
    results = page.locator("#lookup-results")
    expect(results.locator("h2")).to_have_text(f"{PAID + 2} orders of {customer.email}, newest first")
    rows = results.locator(".lookup-order")
    expect(rows).to_have_count(PAID + 2)
    expect(rows.first).to_have_attribute("data-order", str(newest.id))
    expect(page.locator("#story")).to_have_count(0)
    rows.filter(has_text=declined.reference).get_by_role("link").click()
    expect(page.locator("#story")).to_contain_text("Your card was declined.")
    page.fill("#ops-order", "nobody@example.com")
    page.get_by_role("button", name="Show story").click()
    expect(page.locator("#lookup-error")).to_have_text(
        "No orders were placed with the email address nobody@example.com."
    )
