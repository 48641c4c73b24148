"""`manage.py sandbox_sendgrid`: the SendGrid stand-in for `make run`, inbox at its root URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandbox.sendgrid import SendGridSandbox

DEFAULT_API_KEY = "SG.local-sandbox-key"


class Command(BaseCommand):
    help = "Run the SendGrid v3 Mail Send stand-in on 127.0.0.1 (SENDGRID_API_BASE's port), keyed by SENDGRID_API_KEY."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=None, help="default: the port of SENDGRID_API_BASE")
        parser.add_argument("--verbose-requests", action="store_true", help="log every request to stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        api_base = settings.SENDGRID_API_BASE
        base = urlparse(api_base)
        if options["port"] is None and base.hostname not in {"127.0.0.1", "localhost"}:
            raise CommandError(f"SENDGRID_API_BASE is {api_base}, not a local stand-in; pass --port.")
        port = options["port"] if options["port"] is not None else (base.port or 8425)
        api_key = settings.SENDGRID_API_KEY or DEFAULT_API_KEY

        sandbox = SendGridSandbox(api_key=api_key, port=port, quiet=not options["verbose_requests"])
        try:
            url = sandbox.start()
        except OSError as exc:
            raise CommandError(f"cannot listen on 127.0.0.1:{port}: {exc}") from exc
        self.stdout.write(f"SendGrid sandbox on {url}: inbox at {url}/, API at {url}/v3/mail/send")
        self.stdout.flush()
        sandbox.serve_until_signalled()
