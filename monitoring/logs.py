"""Log lines: JSON in production, readable in development, secrets masked in both.

- `ContextFilter` puts the request id, order id, integration and event of the current request or
  task (monitoring.context) on every record, unless the call passed its own in `extra`.
- `JsonFormatter` (python-json-logger) writes one JSON object per line with timestamp, level,
  logger, message and those fields.
- `ConsoleFormatter` writes ``time LEVEL logger [request order integration event] message``.
- `cloudwatch_handler()` ships the JSON lines to CloudWatch Logs (integrations.cloudwatch,
  watchtower: batched on a background thread; a request never waits on CloudWatch, and when it
  cannot be reached the lines are dropped with a warning, not the request).
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from monitoring import context
from monitoring.scrub import scrub


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context.current().items():
            if not getattr(record, name, None):
                setattr(record, name, value)
        return True


class JsonFormatter(_JsonFormatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "fmt",
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(order_id)s %(integration)s %(event)s",
        )
        kwargs.setdefault("rename_fields", {"asctime": "timestamp", "levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", False)
        super().__init__(*args, **kwargs)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for name in context.FIELDS:
            if not log_data.get(name):
                log_data.pop(name, None)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class ConsoleFormatter(logging.Formatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(context)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{name}={getattr(record, name)}" for name in context.FIELDS if getattr(record, name, "")]
        # Set only while formatting: the same record goes on to other handlers (JSON, CloudWatch).
        record.context = f"[{' '.join(parts)}] " if parts else ""
        try:
            return scrub(super().format(record))
        finally:
            del record.context


def cloudwatch_handler(**kwargs: Any) -> logging.Handler:
    """The CloudWatch Logs handler (integrations.cloudwatch) writing these JSON lines."""
    from django.conf import settings

    from integrations.cloudwatch import log_handler

    handler = log_handler(
        group=settings.CLOUDWATCH_LOG_GROUP,
        send_interval=kwargs.get("send_interval", settings.CLOUDWATCH_LOGS_SEND_SECONDS),
    )
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler
