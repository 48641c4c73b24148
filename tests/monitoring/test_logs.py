"""Log lines: JSON with the request's context, secrets masked, shipped to CloudWatch Logs (moto)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import watchtower
from rest_framework.test import APIClient

from core.aws import aws_client
from monitoring import context
from monitoring.logs import ConsoleFormatter, ContextFilter, JsonFormatter, cloudwatch_handler
from tests.polling import eventually

pytestmark = pytest.mark.django_db


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    context.start_request("")  # nothing left from an earlier test's request on this thread
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, stream, handler


@pytest.fixture
def root_json() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    logging.getLogger().addHandler(handler)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_a_json_line_has_the_fields_of_its_context() -> None:
    logger, stream, _ = capture(JsonFormatter())
    order_id = uuid.uuid4()
    with context.bind(request_id="req-1", order_id=order_id, integration="email", event="delivery.dead"):
        logger.warning("gave up on %s", "an email")
    logger.info("no context")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["timestamp"].endswith("+00:00") and "T" in first["timestamp"]
    assert first | {"timestamp": ""} == {
        "timestamp": "",
        "level": "WARNING",
        "logger": logger.name,
        "message": "gave up on an email",
        "request_id": "req-1",
        "order_id": str(order_id),
        "integration": "email",
        "event": "delivery.dead",
    }
    assert set(second) == {"timestamp", "level", "logger", "message"}


def test_the_console_line_is_readable() -> None:
    logger, stream, _ = capture(ConsoleFormatter())
    with context.bind(request_id="req-2", integration="sns"):
        logger.error("publish failed")
    line = stream.getvalue().strip()
    assert line.endswith(f"ERROR {logger.name} [request_id=req-2 integration=sns] publish failed")


def test_secrets_and_card_numbers_are_masked_in_every_line(settings: Any) -> None:
    settings.SENDGRID_API_KEY = "SG.very-secret-sendgrid-key"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_shh_0123456789"
    settings.AWS_SECRET_ACCESS_KEY = "aws-secret-0123456789"
    for formatter in (JsonFormatter(), ConsoleFormatter()):
        logger, stream, _ = capture(formatter)
        logger.error(
            "keys %s %s %s card 4000-0000-0000-0341 and 4242424242424242, order %s",
            settings.SENDGRID_API_KEY,
            settings.STRIPE_WEBHOOK_SECRET,
            settings.AWS_SECRET_ACCESS_KEY,
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        )
        try:
            raise ValueError(f"bad key {settings.SENDGRID_API_KEY}")
        except ValueError:
            logger.exception("with a traceback")
        text = stream.getvalue()
        for secret in (
            "very-secret-sendgrid-key",
            "whsec_shh",
            "aws-secret-0123456789",
            # The card's tail with its separator: the logger's random name (hex) may hold "0341".
            "-0341",
            "4242424242424242",
        ):
            assert secret not in text
        assert "[card]" in text and "[redacted]" in text
        assert "3f2504e0-4f89-11d3-9a0c-0305e82c3301" in text  # ids are not card numbers


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_a_request_id_is_on_the_lines_of_its_request(
    api_as: Callable[[Any], APIClient], customer: Any, root_json: io.StringIO
) -> None:
    response = api_as(customer).get(f"/api/orders/{uuid.uuid4()}", HTTP_X_REQUEST_ID="trace-77")
    assert response.status_code == 404
    assert response["X-Request-ID"] == "trace-77"
    lines = [json.loads(line) for line in root_json.getvalue().splitlines()]
    not_found = [line for line in lines if line["logger"] == "django.request"]
    assert not_found and all(line["request_id"] == "trace-77" for line in not_found)


def test_lines_reach_cloudwatch_logs(aws_sandbox: dict[str, Any], settings: Any) -> None:
    settings.CLOUDWATCH_LOG_GROUP = "cis-app-test"
    handler = cloudwatch_handler(send_interval=1)
    logger = logging.getLogger("tests.cloudwatch")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with context.bind(request_id="cw-1", integration="sheets", event="delivery.retrying"):
            logger.warning("sheets answered 429, key %s", settings.AWS_SECRET_ACCESS_KEY)
        logger.info("second line")
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    logs = aws_client("logs")

    def events() -> list[dict[str, Any]]:
        return logs.filter_log_events(logGroupName="cis-app-test")["events"]

    found = eventually(lambda: len(events()) == 2 and events(), what="two log events in CloudWatch")
    first = json.loads(found[0]["message"])
    assert first["message"] == "sheets answered 429, key [redacted]"
    assert (first["request_id"], first["integration"], first["event"], first["level"]) == (
        "cw-1",
        "sheets",
        "delivery.retrying",
        "WARNING",
    )
    assert json.loads(found[1]["message"])["message"] == "second line"


@pytest.mark.usefixtures("repository")  # reaches the order store
def test_cloudwatch_down_breaks_nothing(settings: Any, api: APIClient) -> None:
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:1"
    # Nothing is sent before close() (however long the request takes), so close() meets the outage.
    handler = cloudwatch_handler(send_interval=3600)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        assert api.get("/api/monitoring/health").status_code == 200
        logging.getLogger("tests").error("CloudWatch cannot be reached; this line is dropped")
    finally:
        root.removeHandler(handler)
        # The lines are dropped with a warning on watchtower's thread, not an error in the request.
        with pytest.warns(watchtower.WatchtowerWarning, match="Failed to deliver logs"):
            handler.close()


def test_the_console_line_leaves_nothing_on_the_record_for_the_json_line() -> None:
    logger, stream, _ = capture(ConsoleFormatter())
    json_stream = io.StringIO()
    json_handler = logging.StreamHandler(json_stream)
    json_handler.setFormatter(JsonFormatter())
    logger.addHandler(json_handler)
    logger.warning("one line, two handlers")
    assert set(json.loads(json_stream.getvalue())) >= {"timestamp", "level", "logger", "message"}
    assert "context" not in json.loads(json_stream.getvalue())
    assert stream.getvalue().strip().endswith(f"WARNING {logger.name} one line, two handlers")
