"""`manage.py deliveries retry --dead [--integration NAME] [--error TEXT]` and
`manage.py deliveries sweep [--loop] [--interval SECONDS]`."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from integrations import services
from orders.domain import Actor

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Retry dead deliveries, or sweep the fan-out (relay, take back stuck deliveries, dispatch)."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        retry = sub.add_parser("retry", help="send dead deliveries again")
        retry.add_argument(
            "--dead", action="store_true", required=True, help="every dead delivery that matches"
        )
        retry.add_argument("--integration", choices=services.integration_names())
        retry.add_argument("--error", default="", help="only those whose last error contains this text")
        sweep = sub.add_parser("sweep", help="relay the outbox and dispatch what is due")
        sweep.add_argument("--loop", action="store_true", help="keep sweeping until stopped")
        sweep.add_argument("--interval", type=float, default=1.0, help="seconds between sweeps with --loop")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "retry":
            count = services.deliveries_retry_matching(
                actor=Actor.system("deliveries-command"),
                integration=options["integration"],
                error_contains=options["error"],
            )
            self.stdout.write(f"{count} dead delivery(ies) queued again.")
            return
        if options["interval"] <= 0:
            raise CommandError("--interval must be more than 0.")
        stop = threading.Event()
        if options["loop"]:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        while True:
            try:
                report = services.deliveries_sweep()
            except Exception as exc:
                if not options["loop"]:
                    raise
                # The database, the order store or the broker is away for now: sweep again later.
                logger.warning("Sweep failed (%s: %s); trying again", type(exc).__name__, exc)
            else:
                if report.relayed or report.leases_taken_back or not options["loop"]:
                    self.stdout.write(
                        f"relayed {report.relayed}, took back {report.leases_taken_back},"
                        f" dispatch asked for {', '.join(report.dispatch_requested) or 'nothing'}"
                    )
            if not options["loop"] or stop.wait(options["interval"]):
                return
