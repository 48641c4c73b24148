"""The OpenAPI schema describes every endpoint without warnings; the docs need no CDN."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

ENDPOINTS = {
    "/api/products": {"get"},
    "/api/products/{sku}": {"get"},
    "/api/orders": {"get", "post"},
    "/api/orders/{order_id}": {"get", "patch", "delete"},
    "/api/auth/token": {"post"},
    "/api/auth/token/refresh": {"post"},
    "/api/auth/logout": {"post"},
    "/api/payments/confirm": {"post"},
    "/api/payments/refund": {"post"},
    "/api/payments/{payment_id}": {"get"},
    "/api/integrations/deliveries": {"get"},
    "/api/integrations/deliveries/{delivery_id}/retry": {"post"},
    "/api/monitoring/health": {"get"},
    "/api/monitoring/metrics": {"get"},
    "/api/monitoring/integrations": {"get"},
    "/api/monitoring/errors": {"get"},
    "/api/monitoring/alerts": {"get"},
}


def test_schema_validates_with_no_warnings(tmp_path: Path) -> None:
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = yaml.safe_load(target.read_text())
    paths = {path: set(ops) - {"parameters"} for path, ops in schema["paths"].items()}
    assert paths == ENDPOINTS
    create = schema["paths"]["/api/orders"]["post"]
    assert {"201", "200", "400", "422"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    line = schema["components"]["schemas"]["OrderLineInputRequest"]["properties"]
    assert set(line) == {"sku", "quantity"}  # clients never send prices


def test_schema_and_docs_are_served_without_a_cdn() -> None:
    client = Client()
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    assert all(not s.startswith(("http://", "https://", "//")) for s in sources), sources
    assert any("swagger-ui" in s for s in sources)
