from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_health_reports_every_component(api: APIClient) -> None:
    response = api.get("/api/monitoring/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    components = {c["name"]: c for c in body["components"]}
    assert set(components) == {"database", "orders_store", "broker", "cache"}
    assert components["orders_store"]["detail"] == {"adapter": "DjangoOrderRepository"}
    assert all(c["ok"] and c["latency_ms"] >= 0 for c in components.values())
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
