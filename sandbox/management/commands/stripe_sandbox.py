"""`manage.py stripe_sandbox`: the Stripe stand-in for `make run`, with our webhook registered.

localstripe wrapped by sandbox/stripe/ so it answers as Stripe does for the API version the
installed `stripe` pins: idempotency keys, current object shapes and events, Stripe's refusals,
refund webhooks, search, events listing, webhook endpoints (see sandbox/stripe/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandbox.stripe.server import register_webhook, serve_forever


class Command(BaseCommand):
    help = "Run the Stripe stand-in on 127.0.0.1 (STRIPE_API_BASE's port), sending its webhooks to this app."

    def add_arguments(self, parser: Any) -> None:
        bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
        parser.add_argument("--port", type=int, default=None, help="default: the port of STRIPE_API_BASE")
        parser.add_argument("--webhook-url", default=f"http://{bind}/webhooks/stripe")
        parser.add_argument("--webhook-delay", type=float, default=None, help="seconds before each webhook")
        parser.add_argument(
            "--async-delay",
            type=float,
            default=None,
            help="seconds before an asynchronous outcome (the refund-fail card's refunds failing)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        base = urlparse(settings.STRIPE_API_BASE)
        if base.hostname not in {"127.0.0.1", "localhost"}:
            raise CommandError(f"STRIPE_API_BASE is {settings.STRIPE_API_BASE}, not a local stand-in.")
        port = options["port"] or base.port or 8420

        def ready(url: str) -> None:
            register_webhook(url, url=options["webhook_url"], secret=settings.STRIPE_WEBHOOK_SECRET)
            self.stdout.write(f"localstripe on {url}; webhooks go to {options['webhook_url']}", ending="\n")
            self.stdout.flush()

        async def main() -> None:
            task = asyncio.ensure_future(
                serve_forever(
                    port=port,
                    webhook_delay=options["webhook_delay"],
                    async_delay=options["async_delay"],
                    on_ready=ready,
                )
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(main())
