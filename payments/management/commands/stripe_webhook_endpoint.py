"""`manage.py stripe_webhook_endpoint --url https://shop.example.com/webhooks/stripe`.

Creates the webhook endpoint at Stripe (or the local stand-in, with STRIPE_API_BASE) with exactly
the event types the app handles (`payments.services.HANDLED_EVENTS`), or updates the endpoint
already at that URL. On creation it prints the signing secret to set as STRIPE_WEBHOOK_SECRET:
Stripe shows it only then.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.core.management.base import BaseCommand, CommandError

from payments import services
from payments.gateways.base import GatewayError, GatewayRequestRefused, get_payment_gateway


class Command(BaseCommand):
    help = "Create or update the Stripe webhook endpoint with the event types this app handles."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", required=True, help="the public URL of POST /webhooks/stripe")
        parser.add_argument("--list-events", action="store_true", help="only print the event types")

    def handle(self, *args: Any, **options: Any) -> None:
        events = list(services.HANDLED_EVENTS)
        if options["list_events"]:
            self.stdout.write("\n".join(events))
            return
        url = options["url"]
        parsed = urlparse(url)
        if parsed.scheme not in {"https", "http"} or not parsed.netloc:
            raise CommandError(f"--url {url!r} is not an http(s) URL.")
        gateway = get_payment_gateway()
        ensure = getattr(gateway, "ensure_webhook_endpoint", None)
        if ensure is None:
            raise CommandError(f"The payment gateway {type(gateway).__name__} has no webhook endpoints.")
        try:
            endpoint_id, secret, created = ensure(url=url, events=events)
        except (GatewayError, GatewayRequestRefused) as exc:
            raise CommandError(f"Stripe refused or could not be reached: {exc}") from exc
        self.stdout.write(
            f"{'Created' if created else 'Updated'} {endpoint_id} → {url} with {len(events)} event types:"
        )
        for event in events:
            self.stdout.write(f"  {event}")
        if created:
            self.stdout.write(f"Set this in the app's environment: STRIPE_WEBHOOK_SECRET={secret}")
        else:
            self.stdout.write("The signing secret is unchanged (Stripe shows it only on creation).")
