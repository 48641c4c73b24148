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
from django.db import close_old_connections, connection
from django.utils import timezone

from live import services as live
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
_pace = threading.Event()  # never set: the flusher's one-second gathering wait
# Figures /ops/ shows as live tiles (orders created, paid, failed): flushed within PROMPT_SECONDS
# rather than MONITORING_FLUSH_SECONDS, then published to /ops/'s stream.
PROMPT_PREFIX = "orders."
PROMPT_SECONDS = 0.5
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
        if name.startswith(PROMPT_PREFIX):
            _wake.set()  # /ops/'s order tiles are live: write these out within a second


def count(name: str, *, label: str = "", n: int = 1) -> None:
    observe(name, None, label=label, n=n)


def observe_many(name: str, values_ms: list[float], *, label: str = "") -> None:
    """`observe` for many values of one figure at once (a batch's lags): one lock, one buffer row."""
    if not settings.MONITORING_ENABLED or not values_ms:
        return
    key = (_minute(), name, label[:200])
    with _lock:
        row = _buffer.setdefault(key, _Sum())
        for value in values_ms:
            row.add(value, 1)
    if settings.MONITORING_FLUSH_SECONDS <= 0:
        flush()
    else:
        _ensure_flusher()


def flush(*, quiet: bool = False) -> int:
    """Write the buffered figures out; returns how many rows were added to."""
    with _lock:
        items = list(_buffer.items())
        _buffer.clear()
    if not items:
        return 0
    try:
        _add_all(items)
    except Exception:
        if not quiet:
            logger.warning("Could not store %s metric rows; they are dropped", len(items), exc_info=True)
        return 0
    for sink in sinks:
        try:
            sink(items)
        except Exception:
            logger.warning("A metrics sink failed", exc_info=True)
    # /ops/'s tiles count orders, payments and deliveries: show the new figures. Request timings
    # alone do not: /ops/'s own refresh is a request, and would refresh it again without end.
    if any(name != "http.request" for (_, name, _) in (key for key, _ in items)):
        live.publish(live.OPS)
    return len(items)


# Rows per INSERT statement (18 parameters each: under SQLite's oldest limit of 999).
UPSERT_ROWS = 50


def _add_all(items: list[tuple[Key, _Sum]]) -> None:
    """Add the figures to their rows: one INSERT ... ON CONFLICT DO UPDATE per 50 rows, adding
    to rows other processes made (SQLite and PostgreSQL alike). One short statement holds
    SQLite's write lock for a moment, where a read-then-write per row made workers wait."""
    quote = connection.ops.quote_name
    table = quote(MetricBucket._meta.db_table)
    columns = ["minute", "name", "label", "count", "total", "maximum", *BUCKET_FIELDS]
    added = ["count", "total", *BUCKET_FIELDS]
    updates = [f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in added]
    updates.append(
        f"{quote('maximum')} = CASE WHEN excluded.{quote('maximum')} > {table}.{quote('maximum')}"
        f" THEN excluded.{quote('maximum')} ELSE {table}.{quote('maximum')} END"
    )
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(items), UPSERT_ROWS):
            chunk = items[start : start + UPSERT_ROWS]
            params: list[object] = []
            for (minute, name, label), value in chunk:
                params += [
                    connection.ops.adapt_datetimefield_value(minute),
                    name,
                    label,
                    value.count,
                    value.total,
                    value.maximum,
                    *value.buckets,
                ]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)})"  # noqa: S608 - names, not input
                f" VALUES {', '.join([row] * len(chunk))}"
                f" ON CONFLICT ({', '.join(quote(c) for c in ('minute', 'name', 'label'))})"
                f" DO UPDATE SET {', '.join(updates)}",
                params,
            )


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
        if _wake.wait(settings.MONITORING_FLUSH_SECONDS):
            # Woken by an order figure: gather what else comes within PROMPT_SECONDS into the same
            # write (at most two flushes a second however many orders, the write lock spared).
            _pace.wait(min(PROMPT_SECONDS, settings.MONITORING_FLUSH_SECONDS))
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
