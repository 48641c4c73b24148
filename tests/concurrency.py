"""Racing real threads, each with its own database connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection

from tests.polling import DEADLINE_SECONDS


def race(workers: int, job: Callable[[int], Any], *, timeout: float = DEADLINE_SECONDS) -> list[Any]:
    """Run `job(i)` in `workers` threads released at the same moment; return results or errors.

    Every thread must have finished within `timeout` (a hung one fails the test by name rather
    than leaving a silent None among the results)."""
    barrier = threading.Barrier(workers)
    results: list[Any] = [None] * workers

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[i] = job(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects what each thread got
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    hung = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not hung, f"racing threads {hung} did not finish within {timeout} s"
    return results
