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
def shared_lock(key: str, *, wait: float = 5.0, hold: float = 10.0, required: bool = True) -> Iterator[bool]:
    """Hold the lock on `key` for the block, yielding True.

    After `wait` seconds of trying: `TimeoutError`, or with `required=False` the block runs
    without the lock and gets False (for callers to whom a slow cache must not mean a refusal).
    Only the holder's own token is ever released, so a lock that expired and was taken by
    another process stays theirs.
    """
    cache = caches["shared"]
    name = f"lock:{key}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    held = True
    while not cache.add(name, token, timeout=hold):
        if time.monotonic() > deadline:
            if required:
                raise TimeoutError(f"could not lock {key}")
            held = False
            break
        _pause.wait(0.002)
    try:
        yield held
    finally:
        if held and cache.get(name) == token:
            cache.delete(name)
