"""schemathesis against the running server: every operation of /api/schema/, every default check
(no 5xx, status codes and content types the schema declares, responses that match their schema,
auth that is not ignored, ...), as an anonymous caller, a customer (JWT), staff (JWT) and an API
key with every scope. Expected: 0 failures.

Bounded so the file stays within a few minutes on two cores: few examples per operation, no
deadline (a loaded machine is slow, not wrong), derandomized so every run tries the same cases.
The catalog, an order, a payment and a delivery exist, so reads return real data to validate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from django.conf import settings as django_settings
from django.core.cache import caches
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from access import services as access_services
from integrations.services import outbox_relay
from orders.domain import Actor
from payments import services as payment_services
from tests.payments.conftest import stripe_api, stripe_sandbox  # noqa: F401 - fixtures, reused

pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = 8


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Any) -> Iterator[None]:
    """Rate limits and the login lockout have their own tests; here a 429 would only stop the
    cases from reaching the operations."""
    rates = dict.fromkeys(settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}), "off")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    caches["shared"].clear()
    yield
    caches["shared"].clear()


@pytest.fixture
def seeded(stripe_api: str, place: Any, customer: Any, staff: Any, tee: Any, settings: Any) -> None:  # noqa: F811
    """Real rows behind the operations: the catalog (mug, tee), an unpaid and a paid order with
    its deliveries."""
    place(customer=customer)
    paid = place(customer=customer, lines={"MUG-1": 1, "TEE-1": 1})
    payment_services.payment_confirm(order_id=paid.id, payment_method="pm_card_visa", actor=Actor.system("t"))
    outbox_relay(dispatch=False)


def _bearer(user: Any) -> dict[str, str]:
    response = APIClient().post(
        "/api/auth/token", {"username": user.username, "password": "pw-for-tests"}, format="json"
    )
    assert response.status_code == 200, response.content
    return {"Authorization": f"Bearer {response.json()['access']}"}


@pytest.fixture
def customer_headers(seeded: None, customer: Any) -> dict[str, str]:
    return _bearer(customer)


@pytest.fixture
def staff_headers(seeded: None, staff: Any) -> dict[str, str]:
    return _bearer(staff)


@pytest.fixture
def api_key_headers(seeded: None, staff: Any) -> dict[str, str]:
    """A staff member's key with every scope: each operation is reachable with it."""
    _, raw = access_services.api_key_create(
        name="schemathesis", user=staff, scopes=list(django_settings.API_SCOPES)
    )
    return {"Authorization": f"Api-Key {raw}"}


def _schema_document() -> dict[str, Any]:
    """The document /api/schema/ serves, made by the same generator in this process: the
    operations must be known when pytest collects, before the live server starts (and
    schemathesis's fixture-based loader does not run under pytest 9). The first test checks the
    running server serves exactly this."""
    generator = SchemaGenerator()
    return json.loads(OpenApiJsonRenderer().render(generator.get_schema(request=None, public=True)))


# Operations where a request the schema admits can still break a rule no schema can state, and
# is answered 400 with the reason: a SKU that is not in the catalog or not in stock, a cursor
# that this listing did not hand out. For these, a 400 is an accepted answer to schema-valid
# data (schemathesis's positive_data_acceptance); every other check applies as it is.
BUSINESS_RULES_400 = [
    ("POST", "/api/orders"),  # SKUs in the catalog, quantities in stock
    ("PATCH", "/api/orders/{order_id}"),  # only some changes are allowed in each status
    ("GET", "/api/orders"),  # `cursor` is opaque: only the ones the listing made are valid
    ("GET", "/api/monitoring/errors"),  # idem
    ("POST", "/api/payments/confirm"),  # the payment method must exist at Stripe
    ("POST", "/api/payments/refund"),  # at most what is left to refund
    ("POST", "/api/auth/logout"),  # the refresh token must be one we issued
]
ACCEPTED = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-method": method,
                "include-path": path,
                "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
            }
            for method, path in BUSINESS_RULES_400
        ]
    }
)
DOCUMENT = _schema_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


def test_the_running_server_serves_the_schema_under_test(live_server: Any) -> None:
    served = requests.get(f"{live_server.url}/api/schema/", params={"format": "json"}, timeout=60)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


BOUNDS = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@BOUNDS
def test_anonymous(case: Any, live_server: Any, seeded: None) -> None:
    case.call_and_validate(base_url=live_server.url)


@schema.parametrize()
@BOUNDS
def test_customer(case: Any, live_server: Any, customer_headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=live_server.url, headers=customer_headers)


@schema.parametrize()
@BOUNDS
def test_staff(case: Any, live_server: Any, staff_headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=live_server.url, headers=staff_headers)


@schema.parametrize()
@BOUNDS
def test_api_key(case: Any, live_server: Any, api_key_headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=live_server.url, headers=api_key_headers)
