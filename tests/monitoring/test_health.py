from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_health_reports_every_component(api: APIClient, repository: Any) -> None:
    response = api.get("/api/monitoring/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    components = {c["name"]: c for c in body["components"]}
    assert set(components) == {
        "database",
        "orders_store",
        "broker",
        "cache",
        "integration:email",
        "integration:sheets",
        "integration:sns",
    }
    assert components["orders_store"]["detail"] == {"adapter": type(repository).__name__}
    assert all(c["ok"] and c["latency_ms"] >= 0 for c in components.values())
    assert [c["required"] for c in components.values()] == [True] * 4 + [False] * 3
    assert components["integration:email"]["detail"] | {"window_s": 0} == {
        "circuit": "closed",
        "consecutive_failures": 0,
        "calls_in_window": 0,
        "failure_ratio": 0.0,
        "window_s": 0,
        "retry_in_s": 0.0,
        "last_success": None,
        "last_failure": None,
        "last_failure_class": None,
    }
    assert isinstance(components["broker"]["detail"]["queue_depth"], int)


def test_a_dead_component_makes_it_503_with_the_reason(api: APIClient, settings: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    response = api.get("/api/monitoring/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    cache = next(c for c in body["components"] if c["name"] == "cache")
    assert not cache["ok"] and "Connection" in cache["error"]
    assert next(c for c in body["components"] if c["name"] == "database")["ok"]
    assert "cache: " in body["reason"]


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_an_open_circuit_is_degraded_but_still_ready(api: APIClient) -> None:
    from integrations.resilience import CircuitBreaker

    breaker = CircuitBreaker("email")
    for _ in range(10):
        breaker.record(failed=True, reason="503 from SendGrid")
    response = api.get("/api/monitoring/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    email = next(c for c in body["components"] if c["name"] == "integration:email")
    assert (email["ok"], email["error"], email["detail"]["circuit"]) == (False, "circuit open", "open")
    assert email["detail"]["failure_ratio"] == 1.0
    assert body["reason"] == "integration:email: circuit open"


HEALTH_IN_A_FRESH_PROCESS = """
import json, django
django.setup()
from django.test import Client
answer = Client().get("/api/monitoring/health")
print(json.dumps({"status": answer.status_code, "body": answer.json()}))
"""


def health_with(**env: str) -> tuple[int, dict[str, Any]]:
    """The health endpoint of a process started with `env` (the settings are read at start)."""
    done = subprocess.run(
        [sys.executable, "-c", HEALTH_IN_A_FRESH_PROCESS],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "CRITICAL", **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["status"], answer["body"]


@pytest.mark.slow
def test_an_unreachable_database_is_503_naming_it() -> None:
    status, body = health_with(DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere")
    assert status == 503
    assert body["status"] == "unavailable"
    failing = {c["name"]: c["error"] for c in body["components"] if not c["ok"]}
    assert "database" in failing and "OperationalError" in failing["database"]
    assert body["reason"].startswith("database: OperationalError")


@pytest.mark.slow
def test_an_unreachable_broker_is_503_naming_it() -> None:
    status, body = health_with(REDIS_URL="redis://127.0.0.1:1/0")
    assert status == 503
    components = {c["name"]: c for c in body["components"]}
    assert not components["broker"]["ok"] and "Connection" in components["broker"]["error"]
    assert components["database"]["ok"]
