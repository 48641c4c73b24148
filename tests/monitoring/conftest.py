"""Fixtures of the monitoring tests: the stand-in servers, re-exported from where they live."""

from typing import Any

import pytest
from django.test import Client

from tests.integrations.conftest import (  # noqa: F401 - fixtures
    aws_sandbox,
    moto_server_url,
    sendgrid_sandbox,
    sendgrid_sandbox_server,
    sheets_sandbox,
    sheets_sandbox_server,
)
from tests.payments.conftest import stripe_api, stripe_sandbox  # noqa: F401 - fixtures


@pytest.fixture(autouse=True)
def _fresh_shared_state(db: None) -> None:
    """Circuits and the 5xx counter live in the shared cache, which is Redis (kept between tests)
    on the CI's PostgreSQL + Redis pass: each test starts with every circuit closed."""
    from django.conf import settings
    from django.utils import timezone

    from integrations.resilience import CircuitBreaker, shared_cache

    for name in (*settings.INTEGRATIONS, "email", "sheets", "sns"):
        CircuitBreaker(name).reset()
    shared_cache().delete(f"http5xx:{timezone.now():%Y%m%d%H%M}")


@pytest.fixture
def ops_client(staff: Any) -> Client:
    """A client logged in as staff, who may open /ops/."""
    client = Client()
    client.force_login(staff)
    return client
