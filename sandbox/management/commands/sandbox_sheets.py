"""`manage.py sandbox_sheets`: the Google Sheets stand-in for `make run`, on 127.0.0.1."""

from __future__ import annotations

import signal
import threading
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from integrations.adapters.sheets import HEADER
from sandbox.sheets import SheetsSandbox


class Command(BaseCommand):
    help = "Run the Google Sheets v4 sandbox on 127.0.0.1 (SHEETS_API_BASE's port, 8426 by default)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--port", type=int, default=None, help="default: the port of SHEETS_API_BASE; 0 picks a free one"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        api_base = settings.SHEETS_API_BASE
        base = urlparse(api_base)
        if options["port"] is None and base.hostname not in {"127.0.0.1", "localhost"}:
            raise CommandError(
                f"SHEETS_API_BASE is {api_base}, not a local stand-in; pass --port to run anyway."
            )
        port = options["port"] if options["port"] is not None else (base.port or 8426)
        worksheet = settings.SHEETS_WORKSHEET
        sandbox = SheetsSandbox(port=port, worksheet=worksheet, header=HEADER)

        def stop(_signum: int, _frame: Any) -> None:
            # shutdown() waits for serve_forever to return, so it must run on another thread.
            threading.Thread(target=sandbox.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        sandbox.bind()
        self.stdout.write(f"Sheets sandbox on {sandbox.url} (inbox: {sandbox.url}/, tab {worksheet!r})")
        self.stdout.flush()
        sandbox.serve_forever()
