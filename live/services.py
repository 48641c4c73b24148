"""Publishing a change: one cache write, after the caller's transaction commits.

A channel's state is a version token in the shared cache (Redis, or the database table on the
embedded default), which every web process on every host reads. The token is random, not a
counter: a write needs no read first, and an expired key coming back cannot repeat an old value.
Publishing never breaks the caller: a failure is logged and the page falls back to its slower
poll.
"""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlencode

from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.db import transaction
from django.urls import reverse

from core.locks import cache_database

logger = logging.getLogger(__name__)

OPS = "ops"
KEY_PREFIX = "live:"
# A channel nobody changed for a day needs no token: its stream starts from "no version".
VERSION_TTL_SECONDS = 24 * 3600


def order_channel(order_id: uuid.UUID | str) -> str:
    return f"order:{order_id}"


def channel_key(channel: str) -> str:
    return f"{KEY_PREFIX}{channel}"


def publish(*channels: str) -> None:
    """Tell every open stream of these channels that something changed, once the caller's
    transaction (if any) commits: a page fetched on the news must see the change."""
    if not channels:
        return
    try:
        transaction.on_commit(lambda: _write(channels))
    except Exception:
        logger.warning("Could not publish a live change of %s", ", ".join(channels), exc_info=True)


def publish_order(order_id: uuid.UUID | str, *, ops: bool = True) -> None:
    """An order changed: its page, and (by default) the operators' page."""
    publish(order_channel(order_id), *([OPS] if ops else []))


def _write(channels: tuple[str, ...]) -> None:
    token = uuid.uuid4().hex
    cache = caches["shared"]
    try:
        # One round trip on Redis (Django pipelines a set_many). On the database cache each key is
        # its own write transaction unless they share one: an order's two notices (its page and
        # /ops/) then cost one transaction, not two, each queueing for SQLite's one writer.
        if isinstance(cache, DatabaseCache) and len(channels) > 1:
            with transaction.atomic(using=cache_database(cache)):
                cache.set_many({channel_key(c): token for c in channels}, timeout=VERSION_TTL_SECONDS)
        else:
            cache.set_many({channel_key(c): token for c in channels}, timeout=VERSION_TTL_SECONDS)
    except Exception:
        logger.warning("Could not publish a live change of %s", ", ".join(channels), exc_info=True)


def versions(channels: list[str]) -> dict[str, str | None]:
    """The current token of each channel (None: never published, or expired)."""
    found = caches["shared"].get_many([channel_key(c) for c in channels])
    return {c: found.get(channel_key(c)) for c in channels}


def stream_url(channel: str) -> str:
    """The stream's URL for a page being rendered now: with the channel's current token, so a
    change between this render and the stream's start still reaches the page. Read it before
    the page's data."""
    if channel == OPS:
        url = reverse("live:ops")
    else:
        url = reverse("live:order", kwargs={"order_id": channel.removeprefix("order:")})
    try:
        token = versions([channel])[channel] or ""
    except Exception:
        logger.warning("Could not read the live version of %s", channel, exc_info=True)
        token = ""
    return f"{url}?{urlencode({'since': token or '-'})}"
