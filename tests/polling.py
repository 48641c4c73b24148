"""Waiting for another process or thread: poll for the condition until a deadline, never a fixed sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

_pause = threading.Event()


def eventually(
    check: Callable[[], Any], *, seconds: float = 10, what: str = "the condition", interval: float = 0.05
) -> Any:
    """Call `check` until it returns something truthy, and return that; fail after `seconds`.

    Errors of the kinds a not-yet-ready peer raises (connection refused, bad answer) are retried.
    """
    deadline = time.monotonic() + seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError) as exc:
            last_error = exc
        else:
            if value:
                return value
        _pause.wait(interval)
    raise AssertionError(f"timed out after {seconds} s waiting for {what} (last error: {last_error})")
