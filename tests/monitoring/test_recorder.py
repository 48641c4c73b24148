"""The recorder: buffered figures added to shared per-minute rows, by many writers at once."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from monitoring import recorder
from monitoring.models import MetricBucket
from monitoring.selectors import percentiles
from tests.concurrency import race


@pytest.mark.django_db
def test_figures_wait_in_the_buffer_until_a_flush(settings: Any) -> None:
    settings.MONITORING_FLUSH_SECONDS = 3600
    at = timezone.now()  # one minute for the three, however long they take
    for value in (3.0, 40.0, 700.0):
        recorder.observe("test.buffered", value, label="x", at=at)
    assert not MetricBucket.objects.filter(name="test.buffered").exists()
    assert recorder.flush() == 1
    row = MetricBucket.objects.get(name="test.buffered", label="x")
    assert (row.count, row.total, row.maximum) == (3, 743.0, 700.0)
    assert (row.b0, row.b3, row.b7) == (1, 1, 1)


@pytest.mark.django_db
def test_monitoring_off_records_nothing(settings: Any) -> None:
    settings.MONITORING_ENABLED = False
    recorder.observe("test.off", 5.0)
    assert recorder.flush() == 0
    assert not MetricBucket.objects.filter(name="test.off").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_flushes_add_to_the_same_rows() -> None:
    """Six writers (each its own connection, as six processes would be) add to one row at once."""
    minute = recorder._minute()

    def flush_one(i: int) -> None:
        value = recorder._Sum()
        for ms in (3.0, 40.0, 700.0 + i):
            value.add(ms, 1)
        recorder._add_all(
            [((minute, "test.race", "shared"), value), ((minute, "test.race", f"own-{i}"), value)]
        )

    assert race(6, flush_one) == [None] * 6
    row = MetricBucket.objects.get(name="test.race", label="shared")
    assert (row.count, row.total, row.maximum) == (18, sum(743.0 + i for i in range(6)), 705.0)
    assert (row.b0, row.b3, row.b7) == (6, 6, 6)
    assert MetricBucket.objects.filter(name="test.race").count() == 7
    # The 9th of 18 values is the 3rd of the 6 in (25, 50] ms: 25 + 25 * 3/6.
    assert percentiles({f: getattr(row, f) for f in (*recorder.BUCKET_FIELDS, "maximum")})["p50_ms"] == 37.5
