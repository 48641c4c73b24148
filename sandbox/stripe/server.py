"""localstripe (the Stripe stand-in) on 127.0.0.1 only, speaking today's Stripe API.

localstripe's own command binds every interface and pickles its whole store to /tmp on each
write. This runs its aiohttp app on a loopback socket instead, with persistence off, either in a
thread of the current process (tests) or as a process of its own (`manage.py stripe_sandbox`).

localstripe speaks an old dialect of the API; the modules beside this one make it answer as
Stripe does for the version the installed `stripe` library pins (`stripe.api_version`):
`compat` (object shapes, patched into localstripe's classes), `http` (request ids,
Stripe's error bodies, idempotency keys), `api` (balance, events, search, refunds,
webhook endpoints, Stripe.js), `events` (recorded, signed deliveries, refund webhooks),
`rules` (minimum amounts, refund bounds). Each module's docstring says what it still
leaves out.

It serves `GET /favicon.ico` (sandbox/favicon.py), and adds `POST /_config/reset` (also at localstripe's `DELETE /_config/data`), which empties the
store, the webhook endpoints and the idempotency keys and cancels deliveries still waiting, so
events of one test never arrive during the next (`?webhooks=1` also forgets the hooks of
`POST /_config/webhooks/{id}`). Development and test tooling: never used in production.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.parse
import urllib.request
from typing import Any

from aiohttp import web

from sandbox import favicon
from sandbox.stripe import api, compat, events, http


def build_app(*, webhook_delay: float | None = None, async_delay: float | None = None) -> web.Application:
    """A fresh copy of localstripe's app, current-API answers, persistence off, an empty store.

    `webhook_delay`: seconds before each event is delivered (default 1, like localstripe);
    `async_delay`: seconds before an asynchronous outcome, such as the refund of the refund-fail
    test card failing (default: the webhook delay)."""
    from localstripe import resources, server, webhooks

    compat.install()
    resources.store.dump_to_disk = lambda: None  # the instance attribute hides the method
    resources.store.clear()
    webhooks._webhooks.clear()
    state = events.STATE
    state.clear()
    state.tasks.clear()  # tasks of an earlier app's loop are that loop's business
    state.webhook_delay = 1.0 if webhook_delay is None else webhook_delay
    state.async_delay = state.webhook_delay if async_delay is None else async_delay
    source = server.app
    # localstripe's app is a module global bound to the first loop that runs it: copy it.
    middlewares = [_favicon, http.request_context, http.idempotency, http.stripe_errors]
    app = web.Application(middlewares=[*middlewares, *source.middlewares])
    for callback in source.on_response_prepare:
        app.on_response_prepare.append(callback)
    taken = set()
    for method, path, handler in [
        *api.routes(),
        ("POST", "/_config/reset", _http_reset),
        ("DELETE", "/_config/data", _http_reset),
    ]:
        app.router.add_route(method, path, handler)
        taken.add((method, path))
    for route in source.router.routes():
        if route.method != "HEAD" and (route.method, route.resource.canonical) not in taken:
            app.router.add_route(route.method, route.resource.canonical, route.handler)
    return app


@web.middleware
async def _favicon(request: web.Request, handler: Any) -> web.StreamResponse:
    """The icon, before localstripe's authentication (which wants an API key on every path)."""
    if request.path == "/favicon.ico" and request.method in {"GET", "HEAD"}:
        return web.Response(body=favicon.favicon_ico(favicon.STRIPE), content_type=favicon.CONTENT_TYPE)
    return await handler(request)


async def _reset(*, forget_webhooks: bool) -> int:
    return events.reset(forget_webhooks=forget_webhooks)


async def _http_reset(request: web.Request) -> web.Response:
    cancelled = await _reset(forget_webhooks=request.query.get("webhooks") in {"1", "true"})
    return web.json_response({"cancelled_webhook_deliveries": cancelled})


def bind(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class StripeSandboxThread:
    """localstripe in a daemon thread of this process, on its own event loop."""

    def __init__(
        self, *, port: int = 0, webhook_delay: float | None = 0.05, async_delay: float | None = None
    ) -> None:
        self._port = port
        self._webhook_delay = webhook_delay
        self._async_delay = async_delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self, timeout: float = 60.0) -> str:
        app = build_app(webhook_delay=self._webhook_delay, async_delay=self._async_delay)
        sock = bind(self._port)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="stripe-sandbox", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("localstripe did not start")
        return self.url

    def reset(self, *, forget_webhooks: bool = False) -> int:
        """Empty the store, endpoints and idempotency keys; cancel deliveries still waiting."""
        if self._loop is None:
            raise RuntimeError("the sandbox is not running")
        done = asyncio.run_coroutine_threadsafe(_reset(forget_webhooks=forget_webhooks), self._loop)
        return done.result(60)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None


def register_webhook(api_base: str, *, url: str, secret: str, hook_id: str = "cis") -> None:
    """Ask localstripe to send every event to `url`, signed with `secret` (its `_config` hook:
    configuration, so a reset keeps it unless asked to forget webhooks)."""
    data = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
    request = urllib.request.Request(f"{api_base}/_config/webhooks/{hook_id}", data=data)  # noqa: S310
    with urllib.request.urlopen(request, timeout=60):  # noqa: S310 - a loopback URL of ours
        pass


async def serve_forever(
    *, port: int, webhook_delay: float | None, on_ready: Any, async_delay: float | None = None
) -> None:
    """Serve on 127.0.0.1:`port` until cancelled; `on_ready(url)` runs once it is listening."""
    app = build_app(webhook_delay=webhook_delay, async_delay=async_delay)
    sock = bind(port)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await asyncio.get_running_loop().run_in_executor(None, on_ready, url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
