"""Logging filters shared by every app (declared in `config.settings.LOGGING`)."""

from __future__ import annotations

import logging


class ExpectedClientErrors(logging.Filter):
    """A 4xx answer is expected (a customer opening a staff page, a stale link): Django logs it with
    the exception's traceback, which reads like a crash. Keep the one warning line, drop the
    traceback; 5xx records keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
