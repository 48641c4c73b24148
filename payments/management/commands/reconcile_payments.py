"""`manage.py reconcile_payments [--since ISO8601 | --hours N] [--dry-run] [--no-progress]`.

Repairs what a missed webhook or a lost answer left behind, from where the last run stopped
(or since the given time):
1. Stripe's events since the events cursor (`GET /v1/events`), each one we never received
   applied as if its webhook had come (`payment_reconcile_events`);
2. the payments created since then that may be out of step, looked up by intent id or by
   Stripe's search on our metadata (`payment_reconcile`);
3. refunds left pending, and unwanted charges whose automatic refund did not get to Stripe.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.utils import timezone
from tqdm import tqdm

from payments import services
from payments.gateways.base import GatewayError, GatewayRequestRefused
from payments.models import Payment


def _aware(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--since {value!r} is not an ISO 8601 date or time.") from exc
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class _ProgressFile:
    """The command's stderr as tqdm writes to it: no newline after each redraw."""

    def __init__(self, out: OutputWrapper) -> None:
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(text, ending="")

    def flush(self) -> None:
        self._out.flush()


class Command(BaseCommand):
    help = (
        "Compare recent payments with their PaymentIntents at Stripe and repair those a missed"
        " webhook left out of step (payment and order status)."
    )

    def add_arguments(self, parser: Any) -> None:
        window = parser.add_mutually_exclusive_group()
        window.add_argument(
            "--since",
            help="check events and payments since this ISO 8601 time (default: where the last run stopped,"
            " or 24 hours before the first run)",
        )
        window.add_argument("--hours", type=float, default=None, help="check the last N hours instead")
        parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        started = timezone.now()
        explicit: datetime | None = None
        if options["since"]:
            explicit = _aware(options["since"])
        elif options["hours"] is not None:
            if options["hours"] <= 0:
                raise CommandError("--hours must be more than 0.")
            explicit = started - timedelta(hours=options["hours"])
        since = explicit or services.reconcile_since_default()
        dry_run = options["dry_run"]
        prefix = "[dry run] " if dry_run else ""
        errors: list[Any] = []
        show_progress = not options["no_progress"] and self.stderr.isatty()
        checked = 0

        def progress(payments: Sequence[Payment]) -> Iterable[Payment]:
            nonlocal checked
            bar = tqdm(
                payments,
                desc="Reconciling payments",
                unit="payment",
                file=_ProgressFile(self.stderr),
                disable=not show_progress,
                leave=False,
            )
            for payment in bar:
                checked += 1
                yield payment

        changes = services.payment_reconcile(since=since, dry_run=dry_run, progress=progress)

        errors += [change for change in changes if change.error]
        changed = [change for change in changes if not change.error]
        verb = "would change" if dry_run else "changed"
        for change in changed:
            if change.payment_changed:
                parts = [f"payment {change.payment_id} {change.payment_before} → {change.payment_after}"]
            else:
                parts = [f"payment {change.payment_id} stays {change.payment_after}"]
            if change.order_changed:
                parts.append(f"order {change.order_id} {change.order_before} → {change.order_after}")
            else:
                parts.append(f"order {change.order_id} stays {change.order_after}")
            intent = f", {change.intent_id}" if change.intent_id else ""
            self.stdout.write(f"{prefix}{'; '.join(parts)} (attempt {change.attempt}{intent})")
        for change in (c for c in changes if c.error):
            self.stderr.write(
                f"payment {change.payment_id} (order {change.order_id}) could not be checked: {change.error}"
            )
        try:
            sweep = services.payment_reconcile_events(since=explicit, dry_run=dry_run)
        except (GatewayError, GatewayRequestRefused) as exc:
            self.stderr.write(f"Stripe's events could not be listed: {exc}")
            errors.append(exc)
        else:
            self.stdout.write(
                f"{prefix}Events since {datetime.fromtimestamp(sweep.since, tz=UTC).isoformat(timespec='seconds')}:"
                f" {sweep.listed} listed, {sweep.missed} never received by webhook"
                f" ({'would be applied' if dry_run else 'applied now'})."
            )
            for line in sweep.errors:
                self.stderr.write(line)
            errors += sweep.errors
        refund_changes = services.refund_reconcile_pending(dry_run=dry_run)
        for refund in refund_changes:
            if refund.error:
                self.stderr.write(
                    f"refund {refund.refund_id} (order {refund.order_id}) could not be checked: {refund.error}"
                )
            else:
                self.stdout.write(
                    f"{prefix}refund {refund.refund_id} (order {refund.order_id})"
                    f" {refund.status_before} → {refund.status_after}"
                )
        # Whether the window was fully checked: refunds and reversals do not depend on it, so
        # their errors do not hold the next run back.
        window_checked = not errors
        errors += [refund for refund in refund_changes if refund.error]
        for line in services.payment_reverse_pending(dry_run=dry_run):
            (self.stderr if "could not" in line else self.stdout).write(line)
            if "could not" in line:
                errors.append(line)
        orders_moved = sum(1 for change in changed if change.order_changed)
        summary = (
            f"Checked {checked} payment(s) that may be out of step, of those created since"
            f" {since.isoformat(timespec='seconds')}: {len(changed)} {verb},"
            f" {orders_moved} order(s) {'would move' if dry_run else 'moved'},"
            f" {sum(1 for r in refund_changes if not r.error)} pending refund(s) settled,"
            f" {len(errors)} could not be checked."
        )
        if dry_run:
            summary += " Dry run: nothing was changed."
        elif window_checked:
            services.reconcile_mark(started)  # the next run goes on from here
        self.stdout.write(summary)
        if errors:
            raise CommandError(
                f"{len(errors)} payment(s) or refund(s) could not be checked; run again later."
            )
