"""Fixtures for the integration tests: the stand-in servers, one block per destination."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

# --- AWS (moto) -------------------------------------------------------------------------------
# One moto server per test session on a free port; each test starts from empty state with the
# topic and the demo queue created by `aws_setup` (integrations/aws.py).


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    from sandbox.moto import SerialMotoServer

    server = SerialMotoServer()
    yield server.start()
    server.stop()


@pytest.fixture
def aws_sandbox(moto_server_url: str, settings: Any, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings pointed at the moto server, wiped, with the standard topic and its demo queue."""
    from integrations.aws import aws_setup
    from tests.stores import reset_moto

    reset_moto(moto_server_url, request)
    settings.AWS_ENDPOINT_URL = moto_server_url
    settings.AWS_REGION = "us-east-1"
    settings.AWS_ACCESS_KEY_ID = "testing"
    settings.AWS_SECRET_ACCESS_KEY = "testing"
    settings.SNS_TOPIC_NAME = "cis-order-events"
    settings.SNS_TOPIC_ARN = ""
    settings.SNS_FIFO = False
    settings.SNS_DEMO_QUEUE_NAME = "cis-order-events-demo"
    return aws_setup(demo_queue=True)


# --- end AWS ----------------------------------------------------------------------------------


# --- SendGrid (sandbox/sendgrid.py) -----------------------------------------------------------
# One sandbox per test session on a free port; each test gets it emptied (messages, counters,
# faults) with the SENDGRID_* settings pointed at it.

SENDGRID_TEST_KEY = "SG.test-suite-key"


@pytest.fixture(scope="session")
def sendgrid_sandbox_server() -> Iterator[Any]:
    from sandbox.sendgrid import SendGridSandbox

    sandbox = SendGridSandbox(api_key=SENDGRID_TEST_KEY)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sendgrid_sandbox(sendgrid_sandbox_server: Any, settings: Any) -> Any:
    """The SendGrid stand-in (a `SendGridSandbox`), emptied, with the app's settings pointed at it."""
    sendgrid_sandbox_server.reset()
    settings.SENDGRID_API_BASE = sendgrid_sandbox_server.url
    settings.SENDGRID_API_KEY = SENDGRID_TEST_KEY
    settings.SENDGRID_FROM_EMAIL = "shop@example.com"
    settings.SENDGRID_SANDBOX_MODE = False
    return sendgrid_sandbox_server


# --- end SendGrid -----------------------------------------------------------------------------


# --- Sheets (sandbox/sheets.py) ---------------------------------------------------------------
# One Google Sheets sandbox per test session on a free port; each test gets it emptied
# (spreadsheets, counters, faults), the adapter's cached clients dropped, and the SHEETS_*
# settings pointed at it (with the throwaway service account key made at run time).

SHEETS_TEST_SPREADSHEET = "test-orders"


@pytest.fixture(scope="session")
def sheets_sandbox_server() -> Iterator[Any]:
    from integrations.adapters.sheets import HEADER
    from sandbox.sheets import SheetsSandbox

    sandbox = SheetsSandbox(port=0, worksheet="Orders", header=HEADER)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sheets_sandbox(sheets_sandbox_server: Any, settings: Any) -> Iterator[Any]:
    """The Sheets stand-in (a `SheetsSandbox`), emptied, with the app's settings pointed at it."""
    from integrations.adapters.sheets import forget_connections
    from sandbox.sheets import throwaway_service_account

    sheets_sandbox_server.reset()
    forget_connections()
    settings.SHEETS_API_BASE = sheets_sandbox_server.url
    settings.SHEETS_SPREADSHEET_ID = SHEETS_TEST_SPREADSHEET
    settings.SHEETS_WORKSHEET = "Orders"
    settings.GOOGLE_SERVICE_ACCOUNT_JSON = json.dumps(throwaway_service_account(sheets_sandbox_server.url))
    yield sheets_sandbox_server
    forget_connections()


# --- end Sheets -------------------------------------------------------------------------------


@pytest.fixture
def still_clock() -> Iterator[None]:
    """The clock stands still (time-machine): writes counted "within a minute" by the Sheets
    sandbox are within one however long the test takes."""
    import time

    import time_machine

    with time_machine.travel(time.time(), tick=False):
        yield
