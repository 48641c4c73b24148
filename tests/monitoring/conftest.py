"""Fixtures of the monitoring tests: the stand-in servers, re-exported from where they live."""

from tests.integrations.conftest import (  # noqa: F401 - fixtures
    aws_sandbox,
    moto_server_url,
    sendgrid_sandbox,
    sendgrid_sandbox_server,
    sheets_sandbox,
    sheets_sandbox_server,
)
from tests.payments.conftest import stripe_api, stripe_sandbox  # noqa: F401 - fixtures
