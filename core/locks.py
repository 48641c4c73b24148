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
from typing import Any

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
        if held:
            _release(cache, name, token)


# Delete the key only if it still holds this token: one atomic round trip on Redis.
_RELEASE_LUA = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _release(cache: Any, name: str, token: str) -> None:
    """Release `name` if it is still ours: a compare-and-delete script on Redis (one command
    instead of GET then DEL); elsewhere (the database cache) a read, then a delete."""
    from django.core.cache.backends.redis import RedisCache

    if isinstance(cache, RedisCache):
        client = cache._cache.get_client(write=True)
        value = cache._cache._serializer.dumps(token)
        client.register_script(_RELEASE_LUA)(keys=[cache.make_and_validate_key(name)], args=[value])
    elif cache.get(name) == token:
        cache.delete(name)


def writes_serialized(cache: Any) -> bool:
    """Whether `cache` is a table of a SQLite database whose transactions begin IMMEDIATE.

    Such a transaction takes the database's one write lock at its start and holds it to its
    end, so a read-modify-write of the cache inside `transaction.atomic(using=...)` is atomic
    by itself: one write transaction instead of a `shared_lock` around it (three: take, write,
    release), each queueing for that same write lock.
    """
    from django.core.cache.backends.db import DatabaseCache
    from django.db import connections, router

    if not isinstance(cache, DatabaseCache):
        return False
    connection = connections[router.db_for_write(cache.cache_model_class)]
    mode = str(connection.settings_dict.get("OPTIONS", {}).get("transaction_mode") or "").upper()
    return connection.vendor == "sqlite" and mode in {"IMMEDIATE", "EXCLUSIVE"}


def cache_database(cache: Any) -> str:
    """The database alias a database cache writes to (see `writes_serialized`)."""
    from django.db import router

    return router.db_for_write(cache.cache_model_class)
