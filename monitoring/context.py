"""What the current request or task is about: request id, order id, integration, event.

Held in context variables, so every log line and every recorded error of a request (or of a
task) carries them without passing them around. `bind()` sets some for a block.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FIELDS = ("request_id", "order_id", "integration", "event")
_vars: dict[str, contextvars.ContextVar[str]] = {
    name: contextvars.ContextVar(f"cis_{name}", default="") for name in FIELDS
}
# A request id taken from a client's X-Request-ID: short, and nothing that could forge a log line.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def current() -> dict[str, str]:
    return {name: var.get() for name, var in _vars.items()}


def get(name: str) -> str:
    return _vars[name].get()


@contextmanager
def bind(**values: Any) -> Iterator[None]:
    """Set some of the fields (None leaves one as it is) for the block."""
    tokens = [
        (_vars[name], _vars[name].set(str(value))) for name, value in values.items() if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def start_request(request_id: str) -> None:
    """A new request on this thread or task: its id, nothing else yet.

    Not undone when the view returns, so Django's own "Not Found" / "Internal Server Error"
    lines, written after the middleware, still carry the id; the next request replaces it.
    """
    for name, var in _vars.items():
        var.set(request_id if name == "request_id" else "")


def request_id_from(header: str | None) -> str:
    """The client's request id when it is a sensible one, else a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex
