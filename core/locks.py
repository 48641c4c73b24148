"""A short lock every web and worker process sees, on the shared cache (`CACHES["shared"]`).

`cache.add` is atomic on Redis and on the database cache, so one holder wins; the key expires
by itself after `hold` seconds if its holder dies.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.cache import caches

_pause = threading.Event()  # never set: a sleep that is not `time.sleep`


@contextmanager
def shared_lock(key: str, *, wait: float = 5.0, hold: float = 10.0) -> Iterator[None]:
    """Hold the lock on `key` for the block; `TimeoutError` after `wait` seconds of trying."""
    cache = caches["shared"]
    name = f"lock:{key}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while not cache.add(name, token, timeout=hold):
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not lock {key}")
        _pause.wait(0.005)
    try:
        yield
    finally:
        if cache.get(name) == token:
            cache.delete(name)
