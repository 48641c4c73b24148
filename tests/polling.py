"""Waiting for another process or thread: poll for the condition until a deadline, never a fixed sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

_pause = threading.Event()

# The one deadline for waiting on another process or thread (a worker's result, a server coming
# up, a webhook arriving). It is generous on purpose: a passing run polls only until the
# condition holds, so a long deadline costs nothing, while a short one fails the suite on a
# loaded or slow machine. Verdicts never depend on how long something took; figures of speed
# are benchmarks (bench/). Only a wait known to take longer passes `seconds`, as a multiple.
DEADLINE_SECONDS = 120.0


def eventually(
    check: Callable[[], Any],
    *,
    seconds: float = DEADLINE_SECONDS,
    what: str = "the condition",
    interval: float = 0.05,
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
