"""Stored Stripe events and refused webhook requests.

manage.py stripe_events replay --id evt_...     apply stored events again (or --failed)
manage.py stripe_events refusals [--limit N]    the newest refused webhook requests
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from payments import services
from payments.models import WebhookEvent, WebhookRefusal, WebhookResult


class Command(BaseCommand):
    help = "Replay stored Stripe webhook events through the same code as live deliveries."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        replay = sub.add_parser("replay", help="apply stored events again")
        which = replay.add_mutually_exclusive_group(required=True)
        which.add_argument("--failed", action="store_true", help="every event whose processing failed")
        which.add_argument("--id", nargs="+", dest="ids", metavar="EVENT_ID", help="these events")
        refusals = sub.add_parser("refusals", help="the newest refused webhook requests")
        refusals.add_argument("--limit", type=int, default=20)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "refusals":
            for refusal in WebhookRefusal.objects.all()[: max(1, options["limit"])]:
                self.stdout.write(
                    f"{refusal.received_at.isoformat(timespec='seconds')} {refusal.source or '-'}"
                    f" {refusal.size} B {'signed' if refusal.signed else 'unsigned'}: {refusal.reason}"
                )
            return
        if options["failed"]:
            events = WebhookEvent.objects.filter(result=WebhookResult.FAILED).order_by(
                "created", "received_at"
            )
        else:
            events = WebhookEvent.objects.filter(event_id__in=options["ids"]).order_by("created")
            missing = set(options["ids"]) - set(events.values_list("event_id", flat=True))
            if missing:
                raise CommandError(f"No stored event with id {', '.join(sorted(missing))}.")
        failures = 0
        for event in events:
            try:
                done = services.webhook_process(event_pk=event.pk, again=True)
            except Exception as exc:  # noqa: BLE001 - recorded on the event; report and go on
                failures += 1
                self.stdout.write(f"{event.event_id} {event.type}: failed again: {exc}")
            else:
                self.stdout.write(f"{done.event_id} {done.type}: {done.result}")
        if failures:
            raise CommandError(f"{failures} event(s) failed again; see their stored errors.")
