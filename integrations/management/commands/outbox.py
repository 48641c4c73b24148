"""`manage.py outbox relay`: turn pending outbox entries into deliveries now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from integrations import services


class Command(BaseCommand):
    help = "Relay pending outbox entries into the delivery ledger and queue their dispatch."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("relay", help="relay every pending outbox entry")

    def handle(self, *args: Any, **options: Any) -> None:
        created = services.outbox_relay()
        self.stdout.write(f"{created} delivery(ies) created from the outbox.")
