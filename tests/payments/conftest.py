"""The Stripe stand-in for tests: localstripe on 127.0.0.1 speaking the pinned API version
(sandbox/stripe/), started once, emptied between tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from django.test import Client

from orders.domain import Order
from payments.gateways.base import PaymentGateway, get_payment_gateway
from sandbox.stripe import events as stripe_events
from sandbox.stripe.server import StripeSandboxThread, register_webhook
from tests.polling import eventually

WEBHOOK_SECRET = "whsec_test_suite_secret"
# Nothing listens on port 9: pages name this Stripe.js, and no test's browser fetches it.
JS_URL = "http://127.0.0.1:9/js.stripe.com/v3/"


@pytest.fixture(scope="session")
def stripe_sandbox() -> Iterator[StripeSandboxThread]:
    sandbox = StripeSandboxThread(webhook_delay=0.05)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def stripe_api(stripe_sandbox: StripeSandboxThread, settings: Any) -> str:
    """Point the app at an empty stand-in (store, webhook endpoints, idempotency keys and
    registered hooks all emptied); returns its base URL."""
    stripe_sandbox.reset(forget_webhooks=True)
    settings.STRIPE_API_BASE = stripe_sandbox.url
    settings.STRIPE_SECRET_KEY = "sk_test_suite"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.PAYMENT_GATEWAY = "payments.gateways.stripe.StripeGateway"
    return stripe_sandbox.url


@pytest.fixture
def gateway(stripe_api: str) -> PaymentGateway:
    return get_payment_gateway()


@pytest.fixture
def stripe_webhooks(stripe_api: str, live_server: Any) -> Iterator[str]:
    """localstripe sends its signed events to this test's live server. At the end, waits until
    the stand-in has delivered what it still had in hand (each delivery ends with our answer): a
    late event must not write while the test database is being emptied (a deadlock on
    PostgreSQL, and the next test sees the leftovers)."""
    register_webhook(stripe_api, url=f"{live_server.url}/webhooks/stripe", secret=WEBHOOK_SECRET)
    yield live_server.url
    eventually(lambda: len(stripe_events.STATE.tasks) == 0, what="the stand-in's webhooks to be delivered")


def sign(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header, made the way Stripe makes it."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


# --- paying an order (test_pay_page, test_paid_with, test_card_from_webhooks) -----------------
@pytest.fixture
def stripe_js(settings: Any) -> None:
    """The pay page's Stripe.js address and publishable key, as the pages render them."""
    settings.STRIPE_JS_URL = JS_URL
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_suite"


@pytest.fixture
def order(place: Callable[..., Order], customer: Any) -> Order:
    """The customer's order of two mugs, not yet paid."""
    return place(customer=customer, lines={"MUG-1": 2})


@pytest.fixture
def owner(client: Client, customer: Any) -> Client:
    """The test client, logged in as the customer who placed `order`."""
    client.force_login(customer)
    return client
