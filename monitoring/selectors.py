"""Health of the parts the system needs: database, task broker, cache.

Each check reports its status, how long it took and, when down, why. The monitoring issue adds
the integrations to this list.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches
from django.db import connection
from django_q.brokers import get_broker

from orders.domain import OrderQuery
from orders.repositories import get_order_repository


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    ok: bool
    latency_ms: float
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    components: list[ComponentHealth]


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def _broker() -> dict[str, Any]:
    broker = get_broker()
    if not broker.ping():
        raise ConnectionError("the broker did not answer a ping")
    return {"kind": broker.info(), "queue_depth": broker.queue_size()}


def _cache() -> dict[str, Any]:
    cache = caches["default"]
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "ok", timeout=10)
    if cache.get(key) != "ok":
        raise ConnectionError("a value written to the cache could not be read back")
    cache.delete(key)
    return {"backend": type(cache).__name__}


def _orders_store() -> dict[str, Any]:
    """The order repository answers a read (the database, or DynamoDB with that backend)."""
    repository = get_order_repository()
    repository.list(OrderQuery(limit=1))
    return {"adapter": type(repository).__name__}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": _database,
    "orders_store": _orders_store,
    "broker": _broker,
    "cache": _cache,
}


def _run(name: str, check: Callable[[], dict[str, Any]]) -> ComponentHealth:
    started = time.perf_counter()
    try:
        detail = check()
    except Exception as exc:  # noqa: BLE001 - any failure makes the component unhealthy
        return ComponentHealth(
            name=name,
            ok=False,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            error=f"{type(exc).__name__}: {exc}"[:300],
        )
    return ComponentHealth(
        name=name, ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2), detail=detail
    )


def health_check() -> Health:
    components = [_run(name, check) for name, check in CHECKS.items()]
    return Health(ok=all(c.ok for c in components), components=components)
