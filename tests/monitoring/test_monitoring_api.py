"""Traffic through the app, then what the monitoring API, CloudWatch and the alerts topic say.

Orders are placed and paid over the API against localstripe (one card declined), the fan-out
runs against the SendGrid sandbox with an outage injected (503s) and SNS on moto, and every
figure asserted is what that traffic must produce: counts, states, errors, one alert.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.aws import aws_client
from integrations.services import deliveries_dispatch
from monitoring.logs import ContextFilter, JsonFormatter
from monitoring.models import Alert, ErrorRecord
from tests.conftest import ADDRESS_JSON
from tests.orders.factories import UserFactory
from tests.polling import DEADLINE_SECONDS
from tests.sqs import drain

pytestmark = pytest.mark.django_db

VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"  # card 4000000000000341
CARD_NUMBER = "4242 4242 4242 4242"
PAID = 6


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line of the test, as the app writes them (JSON, context, masking), at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def outage(
    settings: Any, stripe_api: str, sendgrid_sandbox: Any, aws_sandbox: dict[str, Any], mug: Any
) -> dict[str, Any]:
    """Stand-ins for Stripe, SendGrid and SNS; email one call per delivery, given up at the
    first failure, so an outage dead-letters quickly and opens the circuit after 5 calls."""
    integrations = copy.deepcopy(settings.INTEGRATIONS)
    integrations.pop("sheets", None)
    integrations["email"]["batch"] = 1
    integrations["email"]["retry"]["max_attempts"] = 1
    settings.INTEGRATIONS = integrations
    settings.BREAKER_FAILURE_THRESHOLD = 5
    settings.CLOUDWATCH_METRICS_ENABLED = True
    mug.stock = 100
    mug.save()
    return aws_sandbox


def place_and_pay(client: APIClient, payment_method: str, key: str) -> tuple[str, int]:
    order = client.post(
        "/api/orders",
        {
            "lines": [{"sku": "MUG-1", "quantity": 1}],
            "shipping_address": ADDRESS_JSON,
            "email": "a@example.com",
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert order.status_code == 201, order.content
    order_id = order.json()["id"]
    paid = client.post(
        "/api/payments/confirm", {"order_id": order_id, "payment_method": payment_method}, format="json"
    )
    return order_id, paid.status_code


@pytest.mark.usefixtures("repository")  # reaches the order store
@pytest.mark.django_db(transaction=True)  # commit hooks run: outbox relay, alert publishing
def test_traffic_and_an_outage_show_in_the_api_cloudwatch_and_one_alert(
    outage: dict[str, Any],
    sendgrid_sandbox: Any,
    customer: Any,
    staff: Any,
    api_as: Callable[[Any], APIClient],
    settings: Any,
    json_log: io.StringIO,
) -> None:
    client = api_as(customer)
    paid = [place_and_pay(client, VISA, f"paid-{i}") for i in range(PAID)]
    assert {status for _, status in paid} == {200}
    declined_id, declined_status = place_and_pay(client, DECLINED, "declined")
    assert declined_status == 402
    bad = client.post("/api/orders", {"lines": []}, format="json")
    assert bad.status_code == 400
    # Something tries to log a card number and the keys: the lines must not carry them.
    logging.getLogger("tests").warning(
        "card %s key %s secret %s", CARD_NUMBER, settings.SENDGRID_API_KEY, settings.STRIPE_WEBHOOK_SECRET
    )

    # The fan-out, as the workers run it: SendGrid is down (503), SNS works. Each integration has
    # PAID + 1 deliveries (order.paid, and order.payment_failed of the declined one).
    sendgrid_sandbox.set_faults(fail_next=100, status=503)
    email = deliveries_dispatch(integration="email", budget_seconds=DEADLINE_SECONDS)
    sns = deliveries_dispatch(integration="sns", budget_seconds=DEADLINE_SECONDS)
    assert (email.calls, email.dead, email.waited_for) == (5, 5, "circuit open")
    assert sns.succeeded == PAID + 1

    reader = api_as(staff)
    metrics = reader.get(
        "/api/monitoring/metrics", {"window": "1h"}
    ).json()  # the last hour: all of this test, however slow
    assert metrics["orders"]["created"] == PAID + 1
    assert metrics["orders"]["paid"] == PAID
    assert metrics["orders"]["payment_failed"] == 1
    assert metrics["payments"] == {
        "succeeded": PAID,
        "failed": 1,
        "success_ratio": round(PAID / (PAID + 1), 4),
        "failure_codes": {"card_declined": 1},
    }
    endpoints = {e["endpoint"]: e for e in metrics["requests"]["endpoints"]}
    placed = endpoints["POST /api/orders"]
    assert placed["count"] == PAID + 2
    assert placed["by_status"] == {"2xx": PAID + 1, "4xx": 1}
    assert 0 < placed["p50_ms"] <= placed["p95_ms"] <= placed["p99_ms"]
    assert endpoints["POST /api/payments/confirm"]["by_status"] == {"2xx": PAID, "4xx": 1}
    assert metrics["integrations"]["email"] | {"latency": None, "lag": None} == {
        "succeeded": 0,
        "dead": 5,
        "retrying": 0,
        "pending": 2,
        "in_flight": 0,
        "dead_now": 5,
        "attempts": 5,
        "latency": None,
        "lag": None,
    }
    assert metrics["integrations"]["email"]["latency"]["p95_ms"] > 0
    assert metrics["integrations"]["sns"]["succeeded"] == PAID + 1
    assert metrics["integrations"]["sns"]["lag"]["p95_ms"] > 0
    assert metrics["queue"]["deliveries_due"] == 2
    assert metrics["queue"]["oldest_due_age_s"] >= 0

    integrations = {i["name"]: i for i in reader.get("/api/monitoring/integrations").json()}
    assert integrations["email"]["circuit"] == "open"
    assert integrations["email"]["counts"]["dead"] == 5
    assert integrations["email"]["last_error"]["last_error_class"] == "ServiceUnavailableError"
    assert integrations["email"]["configuration"]["endpoint"]["api_base"] == sendgrid_sandbox.url
    assert integrations["sns"]["circuit"] == "closed"
    assert integrations["sns"]["counts"]["succeeded"] == PAID + 1

    errors = reader.get("/api/monitoring/errors", {"source": "delivery", "integration": "email"}).json()
    assert len(errors["results"]) == 5
    assert {e["error_class"] for e in errors["results"]} == {"ServiceUnavailableError"}
    assert {e["order_id"] for e in errors["results"]} <= {order_id for order_id, _ in paid} | {declined_id}
    payment_errors = reader.get("/api/monitoring/errors", {"source": "payment"}).json()["results"]
    assert [(e["order_id"], e["error_class"]) for e in payment_errors] == [(declined_id, "card_declined")]

    # One outage, one alert: the circuit opening and five dead letters fold into it.
    alerts = reader.get("/api/monitoring/alerts").json()
    assert [(a["subject"], a["occurrences"]) for a in alerts] == [("email", 6)]
    assert alerts[0]["kinds"] == {"circuit_open": 1, "dead_letter": 5}
    assert alerts[0]["published_at"]
    published = drain(outage["alerts_queue_url"])
    assert [(m["subject"], m["alert_id"]) for m in published] == [("email", alerts[0]["id"])]

    # CloudWatch got the same figures.
    cloudwatch = aws_client("cloudwatch")

    def total(metric: str, dimensions: list[dict[str, str]]) -> float:
        now = timezone.now()
        points = cloudwatch.get_metric_statistics(
            Namespace="CIS",
            MetricName=metric,
            Dimensions=dimensions,
            StartTime=now - timedelta(minutes=10),
            EndTime=now + timedelta(minutes=1),
            Period=60,
            Statistics=["Sum", "SampleCount"],
        )["Datapoints"]
        return sum(p["Sum"] for p in points)

    assert total("OrdersCreated", []) == PAID + 1
    assert total("DeliveriesDead", [{"Name": "Integration", "Value": "email"}]) == 5
    assert total("DeliveriesSucceeded", [{"Name": "Integration", "Value": "sns"}]) == PAID + 1
    assert total("OrderStatusChanges", [{"Name": "Status", "Value": "payment_failed"}]) == 1

    # Nothing secret in any log line or answer.
    answers = json.dumps([metrics, integrations, errors, payment_errors, alerts])
    lines = json_log.getvalue()
    assert "card [card] key [redacted] secret [redacted]" in lines
    for secret in (
        settings.SENDGRID_API_KEY,
        settings.STRIPE_SECRET_KEY,
        settings.STRIPE_WEBHOOK_SECRET,
        settings.SECRET_KEY,
        CARD_NUMBER,
        CARD_NUMBER.replace(" ", ""),
    ):
        assert secret not in lines
        assert secret not in answers


def test_errors_are_paginated_newest_first_and_filtered(
    api_as: Callable[[Any], APIClient], staff: Any
) -> None:
    for i in range(7):
        ErrorRecord.objects.create(source="delivery", integration="sns", error_class=f"E{i}", message="m")
    ErrorRecord.objects.create(source="webhook", error_class="W", message="m")
    client = api_as(staff)
    first = client.get("/api/monitoring/errors", {"source": "delivery", "limit": 5}).json()
    assert [e["error_class"] for e in first["results"]] == ["E6", "E5", "E4", "E3", "E2"]
    second = client.get(first["next"]).json()
    assert [e["error_class"] for e in second["results"]] == ["E1", "E0"]
    assert client.get("/api/monitoring/errors", {"source": "nonsense"}).status_code == 400


@pytest.mark.parametrize("path", ["metrics", "integrations", "errors", "alerts"])
def test_only_staff_or_monitoring_clients_read_monitoring(
    path: str, api: APIClient, api_as: Callable[[Any], APIClient], customer: Any
) -> None:
    from django.contrib.auth.models import Permission

    assert api.get(f"/api/monitoring/{path}").status_code == 401
    assert api_as(customer).get(f"/api/monitoring/{path}").status_code == 403
    scraper = UserFactory(username="dashboard")
    scraper.user_permissions.add(Permission.objects.get(codename="view_monitoring"))
    assert api_as(scraper).get(f"/api/monitoring/{path}").status_code == 200


def test_a_bad_window_is_a_400_naming_the_field(api_as: Callable[[Any], APIClient], staff: Any) -> None:
    response = api_as(staff).get("/api/monitoring/metrics", {"window": "7d"})
    assert response.status_code == 400
    assert "window" in response.json()["fields"]


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_the_request_id_is_taken_returned_and_kept_with_a_5xx(api: APIClient, settings: Any) -> None:
    answer = api.get("/api/monitoring/health", HTTP_X_REQUEST_ID="probe-42")
    assert answer["X-Request-ID"] == "probe-42"
    made = api.get("/api/monitoring/health", HTTP_X_REQUEST_ID="bad id with spaces\n")
    assert made["X-Request-ID"] != "bad id with spaces\n" and len(made["X-Request-ID"]) == 32
    # A dead cache makes the health check answer 503: recorded with its request id.
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    assert api.get("/api/monitoring/health", HTTP_X_REQUEST_ID="outage-1").status_code == 503
    error = ErrorRecord.objects.get(source="request")
    assert (error.request_id, error.error_class) == ("outage-1", "HTTP 503")
    assert "GET /api/monitoring/health" in error.message


def test_a_5xx_spike_is_one_alert(settings: Any) -> None:
    from monitoring.services import http_5xx_seen

    settings.ALERT_5XX_PER_MINUTE = 3
    for _ in range(10):
        http_5xx_seen()
    alerts = list(Alert.objects.all())
    assert [(a.subject, a.kind) for a in alerts] == [("http", "5xx_spike")]


def test_prometheus_text_needs_a_token_and_reports_the_figures(
    client: Any,
    settings: Any,
    place: Callable[..., Any],
    customer: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        place(customer=customer)
    settings.METRICS_TOKEN = "scrape-token-123"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    answer = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-123")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=")
    text = answer.content.decode()
    assert 'cis_orders_total{event="created"} 1.0' in text
    assert 'cis_deliveries{integration="email",state="dead"} 0.0' in text
    assert 'cis_circuit_state{integration="email",state="closed"} 1.0' in text
    assert "# TYPE cis_http_request_duration_seconds histogram" in text
    assert "scrape-token-123" not in text


def test_prometheus_counters_add_settled_minutes_once_and_never_go_down(client: Any, settings: Any) -> None:
    """Settled minutes are summed once and kept in the shared cache: a scrape reads only the
    minutes since, and a row pruned after it was counted stays counted."""
    from monitoring.models import MetricBucket

    settings.METRICS_TOKEN = "scrape-token-123"

    def created_total() -> str:
        text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-123").content.decode()
        return next(
            line for line in text.splitlines() if line.startswith('cis_orders_total{event="created"}')
        )

    def bucket(minutes_ago: int, count: int) -> MetricBucket:
        at = (timezone.now() - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
        return MetricBucket.objects.create(minute=at, name="orders.created", label="", count=count)

    old = bucket(60 * 24 * 3, 5)  # settled days ago
    bucket(30, 7)  # settled
    assert created_total().endswith(" 12.0")

    live = bucket(0, 2)  # this minute: read at every scrape
    assert created_total().endswith(" 14.0")
    MetricBucket.objects.filter(pk=live.pk).update(count=3)
    assert created_total().endswith(" 15.0")

    old.delete()  # pruned: still counted, the counter never goes down
    assert created_total().endswith(" 15.0")
