"""Backoff, circuit breakers, rate limits and pauses, with their state in the shared cache.

Every web and worker process must agree on whether an integration's circuit is open or how many
calls it made this minute, so nothing here lives in process memory: the state is in the cache
alias "shared" (Redis in production, the database on the embedded default), changed under a
short lock taken with `cache.add` (atomic on both).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches

from core.locks import shared_lock
from integrations.models import CircuitEvent, CircuitState

logger = logging.getLogger(__name__)


def shared_cache() -> Any:
    return caches["shared"]


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: anywhere from 0 to min(cap, base * 2^(attempt-1))."""
    return random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))  # noqa: S311 - jitter, not secrets


@dataclass
class BreakerState:
    state: str = CircuitState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_until: float = 0.0
    # Outcomes of recent calls: (time, failed), trimmed to the window.
    recent: list[tuple[float, bool]] | None = None


class CircuitBreaker:
    """Closed → open after N failures in a row or a failure ratio over a window; after the
    cooldown one probe call is let through (half-open); its success closes the circuit."""

    def __init__(self, integration: str) -> None:
        self.integration = integration
        self.key = f"breaker:{integration}"

    def _load(self) -> BreakerState:
        raw = shared_cache().get(self.key)
        return BreakerState(**raw) if raw else BreakerState(recent=[])

    def _store(self, state: BreakerState) -> None:
        shared_cache().set(self.key, state.__dict__, timeout=None)

    def snapshot(self) -> BreakerState:
        return self._load()

    def allow(self, seen: BreakerState | None = None) -> str:
        """May a call be made now: "closed" (yes), "probe" (one small call, half-open) or "open".

        `seen`: the state just read (`Pause.read_with`); a closed circuit then answers without
        the lock or another read (only a change of state needs the lock)."""
        if seen is not None and seen.state == CircuitState.CLOSED:
            return "closed"
        now = time.time()
        with shared_lock(self.key):
            current = self._load()
            if current.state == CircuitState.CLOSED:
                return "closed"
            if (
                current.state == CircuitState.OPEN
                and now - current.opened_at >= settings.BREAKER_COOLDOWN_SECONDS
            ):
                self._change(current, CircuitState.HALF_OPEN, "cooldown over: one probe call")
            elif not (current.state == CircuitState.HALF_OPEN and now > current.probe_until):
                return "open"  # still cooling down, or a probe is under way
            current.probe_until = now + settings.DELIVERY_LEASE_SECONDS
            self._store(current)
            return "probe"

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through."""
        current = self._load()
        if current.state != CircuitState.OPEN:
            return 0.0
        return max(0.0, current.opened_at + settings.BREAKER_COOLDOWN_SECONDS - time.time())

    def record(self, *, failed: bool, reason: str = "") -> None:
        now = time.time()
        opened = ""
        with shared_lock(self.key):
            current = self._load()
            recent = [(t, f) for t, f in (current.recent or []) if now - t <= settings.BREAKER_WINDOW_SECONDS]
            recent.append((now, failed))
            current.recent = recent[-500:]
            if not failed:
                current.consecutive_failures = 0
                if current.state != CircuitState.CLOSED:
                    self._change(current, CircuitState.CLOSED, "a call succeeded")
            else:
                current.consecutive_failures += 1
                failures = sum(1 for _, f in recent if f)
                ratio_tripped = (
                    len(recent) >= settings.BREAKER_MIN_CALLS
                    and failures / len(recent) >= settings.BREAKER_FAILURE_RATIO
                )
                if current.state == CircuitState.HALF_OPEN:
                    opened = f"the probe failed: {reason}"[:300]
                    self._change(current, CircuitState.OPEN, opened)
                    current.opened_at = now
                elif current.state == CircuitState.CLOSED and (
                    current.consecutive_failures >= settings.BREAKER_FAILURE_THRESHOLD or ratio_tripped
                ):
                    why = (
                        f"{current.consecutive_failures} failures in a row"
                        if current.consecutive_failures >= settings.BREAKER_FAILURE_THRESHOLD
                        else f"{failures} of {len(recent)} calls failed"
                    )
                    opened = f"{why}; last: {reason}"[:300]
                    self._change(current, CircuitState.OPEN, opened)
                    current.opened_at = now
            self._store(current)
        if opened:
            # A structured event: monitoring alerts on it (after the lock, never under it).
            logger.warning(
                "Circuit of %s opened: %s",
                self.integration,
                opened,
                extra={"event": "circuit.opened", "integration": self.integration},
            )

    def reset(self) -> None:
        shared_cache().delete(self.key)

    def _change(self, current: BreakerState, to_state: str, reason: str) -> None:
        logger.info("Circuit of %s: %s → %s (%s)", self.integration, current.state, to_state, reason)
        CircuitEvent.objects.create(
            integration=self.integration, from_state=current.state, to_state=to_state, reason=reason
        )
        current.state = to_state


class RateLimiter:
    """At most `per_minute` calls in any 60 s: calls are spaced at least 60/per_minute apart."""

    def __init__(self, integration: str, per_minute: int) -> None:
        self.key = f"ratelimit:{integration}"
        self.interval = 60.0 / per_minute

    def reserve(self, cost: int = 1) -> float:
        """Take `cost` slots if they are free now (returns 0), else say how many seconds to wait."""
        now = time.time()
        with shared_lock(self.key):
            next_free = shared_cache().get(self.key) or 0.0
            if next_free > now:
                return next_free - now
            shared_cache().set(self.key, now + self.interval * cost, timeout=3600)
            return 0.0


@contextmanager
def exclusive(name: str, *, seconds: float) -> Iterator[bool]:
    """Yields True to the one process holding `name` (for up to `seconds`), False to others."""
    cache = shared_cache()
    token = uuid.uuid4().hex
    held = cache.add(f"exclusive:{name}", token, timeout=int(seconds) + 1)
    try:
        yield held
    finally:
        if held and cache.get(f"exclusive:{name}") == token:
            cache.delete(f"exclusive:{name}")


class Pause:
    """A provider asked us to slow down (429): the whole integration waits until then."""

    def __init__(self, integration: str) -> None:
        self.key = f"pause:{integration}"

    def remaining(self) -> float:
        until = shared_cache().get(self.key) or 0.0
        return max(0.0, until - time.time())

    def read_with(self, breaker: CircuitBreaker) -> tuple[float, BreakerState]:
        """The pause's end (a time.time(), 0 if none) and the breaker's state, in one read."""
        found = shared_cache().get_many([self.key, breaker.key])
        raw = found.get(breaker.key)
        return found.get(self.key) or 0.0, BreakerState(**raw) if raw else BreakerState(recent=[])

    def extend(self, seconds: float) -> None:
        until = time.time() + seconds
        with shared_lock(self.key):
            if until > (shared_cache().get(self.key) or 0.0):
                shared_cache().set(self.key, until, timeout=int(seconds) + 60)
