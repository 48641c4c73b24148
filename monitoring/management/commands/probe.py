"""`manage.py probe [integration ...]`: run the synthetic probes now and print each outcome.

One line per probe: name, ok or FAILED, latency, and what it did or why it failed. The results
are stored like the scheduled ones (trigger "command"); the exit status is 1 if any failed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring import recorder
from monitoring.probes import probe_names, probe_run


class Command(BaseCommand):
    help = "Run the synthetic probes (all of them, or those named) and print each outcome."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "integrations",
            nargs="*",
            metavar="integration",
            help="email, sheets, sns or stripe (default: all)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        known = probe_names()
        names = options["integrations"] or known
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CommandError(f"no probe named {', '.join(unknown)}; the probes are {', '.join(known)}")
        failed = []
        for name in names:
            result = probe_run(name, trigger="command")
            said = " ".join((result.detail if result.ok else result.error).split())  # one line
            line = f"{name:<7} {'ok' if result.ok else 'FAILED':<6} {result.latency_ms:9.1f} ms  {said}"
            self.stdout.write(self.style.SUCCESS(line) if result.ok else self.style.ERROR(line))
            if not result.ok:
                failed.append(name)
        recorder.flush()
        if failed:
            raise CommandError(f"{len(failed)} probe(s) failed: {', '.join(failed)}", returncode=1)
