"""The base of every error an app raises on purpose, and what it becomes over HTTP.

Each subclass says its HTTP status and machine-readable code as class attributes; the one API
exception handler (`core.exceptions`) turns any `ApplicationError` into the one JSON error shape
`{"code", "message", "fields"?}` without knowing the apps.
"""

from __future__ import annotations

from typing import ClassVar


class ApplicationError(Exception):
    """An error the application raises on purpose, with a message fit for the caller."""

    http_status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid"

    # Field name → messages, for invalid input (a subclass sets it per instance); None otherwise.
    fields: dict[str, list[str]] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
