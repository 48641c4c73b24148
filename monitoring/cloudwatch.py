"""Figures to CloudWatch metrics: each flush of the recorder becomes PutMetricData calls
(integrations.cloudwatch).

Called from the recorder's flush (a background thread outside the test suite), never from a
request's own path, with per-minute statistic sets (count, sum, min/max) rather than single
values, in batches. Dimensions stay few (integration, status class, order status) so the
metrics cost little; the per-endpoint detail stays in the database and /metrics.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

# recorder metric name -> (CloudWatch metric name, dimension name of the label, unit, timed)
METRICS: dict[str, tuple[str, str, str, bool]] = {
    "http.request": ("RequestLatency", "StatusClass", "Milliseconds", True),
    "orders.created": ("OrdersCreated", "", "Count", False),
    "orders.status": ("OrderStatusChanges", "Status", "Count", False),
    "delivery.call": ("DeliveryLatency", "Integration", "Milliseconds", True),
    "delivery.lag": ("DeliveryLag", "Integration", "Milliseconds", True),
    "delivery.attempts": ("DeliveryAttempts", "Integration", "Count", False),
    "delivery.succeeded": ("DeliveriesSucceeded", "Integration", "Count", False),
    "delivery.retrying": ("DeliveriesRetrying", "Integration", "Count", False),
    "delivery.dead": ("DeliveriesDead", "Integration", "Count", False),
    "probe": ("ProbeLatency", "Integration", "Milliseconds", True),
}


def metric_data(items: Iterable[tuple[tuple[Any, str, str], Any]]) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = []
    for (minute, name, label), value in items:
        known = METRICS.get(name)
        if known is None:
            continue
        metric, dimension, unit, timed = known
        if name == "http.request":
            label = label.rpartition("|")[2]
        dimensions = [{"Name": dimension, "Value": label}] if dimension and label else []
        datum: dict[str, Any] = {
            "MetricName": metric,
            "Dimensions": dimensions,
            "Timestamp": minute,
            "Unit": unit,
        }
        if timed and value.total:
            datum["StatisticValues"] = {
                "SampleCount": float(value.count),
                "Sum": value.total,
                "Minimum": 0.0,
                "Maximum": value.maximum,
            }
        else:
            datum["Value"] = float(value.count)
            datum["Unit"] = "Count"
        data.append(datum)
    return data


_lock = threading.Lock()
_pending: dict[tuple[Any, str, str], Any] = {}
_last_sent = {"at": 0.0}


def put_metrics(items: list[tuple[tuple[Any, str, str], Any]]) -> int:
    """Send the flushed figures (when CLOUDWATCH_METRICS_ENABLED); returns the calls made.

    Flushes are gathered and sent once every CLOUDWATCH_METRICS_SECONDS (a minute: CloudWatch
    stores them per minute anyway), so the background thread calls CloudWatch rarely; with
    figures written through (MONITORING_FLUSH_SECONDS = 0) each flush is sent at once.
    """
    if not settings.CLOUDWATCH_METRICS_ENABLED:
        return 0
    with _lock:
        for key, value in items:
            _merge(_pending, key, value)
        due = (
            settings.MONITORING_FLUSH_SECONDS <= 0
            or time.monotonic() - _last_sent["at"] >= settings.CLOUDWATCH_METRICS_SECONDS
        )
        if not due:
            return 0
        batch = list(_pending.items())
        _pending.clear()
        _last_sent["at"] = time.monotonic()
    from integrations.cloudwatch import put_metric_data

    return put_metric_data(settings.CLOUDWATCH_NAMESPACE, metric_data(batch))


def _merge(into: dict[tuple[Any, str, str], Any], key: tuple[Any, str, str], value: Any) -> None:
    known = into.get(key)
    if known is None:
        into[key] = copy.deepcopy(value)
        return
    known.count += value.count
    known.total += value.total
    known.maximum = max(known.maximum, value.maximum)
    known.buckets = [a + b for a, b in zip(known.buckets, value.buckets, strict=True)]


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _pending.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
