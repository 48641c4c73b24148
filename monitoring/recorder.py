"""Recording figures: counts and timings added to per-minute `MetricBucket` rows.

`observe(name, ms, label)` and `count(name, label)` are cheap: they add to a buffer in the
process, and a background thread writes the buffer out every MONITORING_FLUSH_SECONDS as one
increment per (minute, metric, label) row, which several processes can do to the same row at
once. With MONITORING_FLUSH_SECONDS = 0 every call writes through. `flush()` writes what is
buffered now (the monitoring API does it before answering, tasks at their end).

A failure to write figures is logged and never reaches the caller: a request or a delivery does
not fail because its timing could not be stored. What a process had buffered when it was killed
is lost (at most one flush interval of figures; the orders and deliveries themselves are not).
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from monitoring.models import BUCKET_BOUNDS_MS, BUCKET_FIELDS, MetricBucket

logger = logging.getLogger(__name__)


@dataclass
class _Sum:
    count: int = 0
    total: float = 0.0
    maximum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKET_FIELDS))

    def add(self, value: float | None, n: int) -> None:
        self.count += n
        if value is not None:
            self.total += value * n
            self.maximum = max(self.maximum, value)
            self.buckets[bisect.bisect_left(BUCKET_BOUNDS_MS, value)] += n


Key = tuple[datetime, str, str]
_lock = threading.Lock()
_buffer: dict[Key, _Sum] = {}
_flusher: dict[str, object] = {}  # {"pid": int, "thread": Thread}
_wake = threading.Event()
# Called with each flushed batch, after the database write (CloudWatch metrics hook in here).
sinks: list = []


def _minute(at: datetime | None = None) -> datetime:
    return (at or timezone.now()).replace(second=0, microsecond=0)


def observe(
    name: str, value_ms: float | None = None, *, label: str = "", n: int = 1, at: datetime | None = None
) -> None:
    """Count `n` of `name` (with `label`) this minute, and their value in milliseconds if any."""
    if not settings.MONITORING_ENABLED:
        return
    key = (_minute(at), name, label[:200])
    with _lock:
        _buffer.setdefault(key, _Sum()).add(value_ms, n)
    if settings.MONITORING_FLUSH_SECONDS <= 0:
        flush()
    else:
        _ensure_flusher()


def count(name: str, *, label: str = "", n: int = 1) -> None:
    observe(name, None, label=label, n=n)


def flush(*, quiet: bool = False) -> int:
    """Write the buffered figures out; returns how many rows were added to."""
    with _lock:
        items = list(_buffer.items())
        _buffer.clear()
    if not items:
        return 0
    try:
        for key, value in items:
            _add(key, value)
    except Exception:
        if not quiet:
            logger.warning("Could not store %s metric rows; they are dropped", len(items), exc_info=True)
        return 0
    for sink in sinks:
        try:
            sink(items)
        except Exception:
            logger.warning("A metrics sink failed", exc_info=True)
    return len(items)


def _add(key: Key, value: _Sum) -> None:
    minute, name, label = key
    changes = {
        "count": F("count") + value.count,
        "total": F("total") + value.total,
        **{f: F(f) + n for f, n in zip(BUCKET_FIELDS, value.buckets, strict=True) if n},
    }
    rows = MetricBucket.objects.filter(minute=minute, name=name, label=label)
    for _ in range(3):
        if rows.update(**changes):
            if value.maximum:
                rows.filter(maximum__lt=value.maximum).update(maximum=value.maximum)
            return
        try:
            with transaction.atomic():
                MetricBucket.objects.create(
                    minute=minute,
                    name=name,
                    label=label,
                    count=value.count,
                    total=value.total,
                    maximum=value.maximum,
                    **dict(zip(BUCKET_FIELDS, value.buckets, strict=True)),
                )
            return
        except IntegrityError:
            continue  # another process made the row first: add to it


def _ensure_flusher() -> None:
    pid = os.getpid()
    if _flusher.get("pid") == pid:
        return
    with _lock:
        if _flusher.get("pid") == pid:
            return
        thread = threading.Thread(target=_flush_loop, name="metrics-flush", daemon=True)
        _flusher.update(pid=pid, thread=thread)
        thread.start()


def _flush_loop() -> None:
    while True:
        _wake.wait(settings.MONITORING_FLUSH_SECONDS)
        _wake.clear()
        flush()
        close_old_connections()


def _after_fork_in_child() -> None:
    # A forked worker must not write its parent's buffered figures a second time.
    global _lock
    _lock = threading.Lock()
    _buffer.clear()
    _flusher.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(flush, quiet=True)
