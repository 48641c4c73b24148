"""The server-sent event streams: one cache poller per web process, however many streams are open.

(Served over WSGI instead, by `runserver` or the tests' live server, a stream is a plain
generator that looks at its channel itself and holds its thread while open: fine for one
developer, not for production, which serves config/asgi.py.)

Each worker process runs one event loop (gunicorn's uvicorn worker). Its hub reads, about every
POLL_SECONDS, the version tokens of the channels that have an open stream in this process, in one
`get_many` on the shared cache, and wakes the streams; a stream whose channel's token changed
sends `event: change`. An idle stream costs no thread and no query of its own, so a worker holds
many open pages while its other requests go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connections

from live import services

logger = logging.getLogger(__name__)

RETRY_MS = 3000  # how soon the browser reconnects after a stream ends


def _read(channels: list[str]) -> dict[str, str | None]:
    try:
        return services.versions(channels)
    except DatabaseError:
        # The embedded cache is a database table: a broken connection of this executor thread
        # would fail every later look; the next look opens a new one.
        connections.close_all()
        raise


read_versions = sync_to_async(_read, thread_sensitive=False)


class Hub:
    """The channels open in this event loop, their latest tokens, and a wake-up for each look."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()
        self.current: dict[str, str] = {}
        self.looked = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def join(self, channel: str) -> None:
        self.open[channel] += 1
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._poll())

    def leave(self, channel: str) -> None:
        self.open[channel] -= 1
        if self.open[channel] <= 0:
            del self.open[channel]
            self.current.pop(channel, None)

    async def _poll(self) -> None:
        while self.open:
            try:
                found = await read_versions(list(self.open))
            except Exception:
                logger.warning("Could not read the live versions", exc_info=True)
            else:
                self.current.update({c: token or "" for c, token in found.items()})
                looked, self.looked = self.looked, asyncio.Event()
                looked.set()
            await asyncio.sleep(settings.LIVE_POLL_SECONDS)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]


def _event(name: str, token: str) -> str:
    # "-" stands for "no token" (an id may not be empty: that would reset the browser's).
    return f"id: {token or '-'}\nevent: {name}\ndata: {token}\n\n"


async def event_stream(channel: str, *, since: str | None) -> AsyncIterator[str]:
    """`retry:`, then `event: change` each time the channel's token differs from the last one
    sent (or from `since`, the token the page was rendered with: a change between the page and
    its stream is not missed), a comment every LIVE_HEARTBEAT_SECONDS so proxies keep the
    connection, and the end after LIVE_STREAM_SECONDS (the browser reconnects)."""
    loop = asyncio.get_running_loop()
    here = hub()
    here.join(channel)
    try:
        yield f"retry: {RETRY_MS}\n: live {channel}\n\n"
        if since is None:
            since = (await read_versions([channel]))[channel] or ""
        last = since
        now = loop.time()
        ends, beat = now + settings.LIVE_STREAM_SECONDS, now + settings.LIVE_HEARTBEAT_SECONDS
        while (now := loop.time()) < ends:
            looked = here.looked
            if channel in here.current and here.current[channel] != last:
                last = here.current[channel]
                yield _event("change", last)
            elif now >= beat:
                beat = now + settings.LIVE_HEARTBEAT_SECONDS
                yield ": keep-alive\n\n"
            with contextlib.suppress(TimeoutError):  # a heartbeat or the end is due
                await asyncio.wait_for(looked.wait(), timeout=max(0.05, min(beat, ends) - now))
    finally:
        here.leave(channel)


def sync_event_stream(channel: str, *, since: str | None) -> Iterator[str]:
    """`event_stream` for a WSGI server: the same events, one thread per open stream."""
    yield f"retry: {RETRY_MS}\n: live {channel}\n\n"
    last = since
    now = time.monotonic()
    ends, beat = now + settings.LIVE_STREAM_SECONDS, now + settings.LIVE_HEARTBEAT_SECONDS
    while (now := time.monotonic()) < ends:
        try:
            current = services.versions([channel])[channel] or ""
        except Exception:
            # End the stream (the browser reconnects after RETRY_MS) rather than hold a thread
            # that keeps failing: a server shutting down, a test's database gone.
            logger.warning("Could not read the live version of %s: stream ended", channel, exc_info=True)
            return
        if last is None:
            last = current
        elif current != last:
            last = current
            yield _event("change", last)
        elif now >= beat:
            beat = now + settings.LIVE_HEARTBEAT_SECONDS
            yield ": keep-alive\n\n"
        time.sleep(settings.LIVE_POLL_SECONDS)  # the server's own pace, not a wait in a test
