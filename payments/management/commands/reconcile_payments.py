"""`manage.py reconcile_payments [--since ISO8601 | --hours N] [--dry-run] [--no-progress]`.

Compares recent payments with their PaymentIntents at Stripe and repairs what a missed webhook
left behind, through `payments.services.payment_reconcile`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.utils import timezone
from tqdm import tqdm

from payments import services
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
        window.add_argument("--since", help="check payments created since this ISO 8601 time")
        window.add_argument(
            "--hours", type=float, default=24, help="check payments created in the last N hours (24)"
        )
        parser.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["since"]:
            since = _aware(options["since"])
        else:
            if options["hours"] <= 0:
                raise CommandError("--hours must be more than 0.")
            since = timezone.now() - timedelta(hours=options["hours"])
        dry_run = options["dry_run"]
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

        errors = [change for change in changes if change.error]
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
            prefix = "[dry run] " if dry_run else ""
            self.stdout.write(f"{prefix}{'; '.join(parts)} (attempt {change.attempt}{intent})")
        for change in errors:
            self.stderr.write(
                f"payment {change.payment_id} (order {change.order_id}) could not be checked: {change.error}"
            )
        refund_changes = services.refund_reconcile_pending(dry_run=dry_run)
        for refund in refund_changes:
            if refund.error:
                self.stderr.write(
                    f"refund {refund.refund_id} (order {refund.order_id}) could not be checked: {refund.error}"
                )
            else:
                prefix = "[dry run] " if dry_run else ""
                self.stdout.write(
                    f"{prefix}refund {refund.refund_id} (order {refund.order_id})"
                    f" {refund.status_before} → {refund.status_after}"
                )
        errors += [refund for refund in refund_changes if refund.error]  # type: ignore[misc]
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
        self.stdout.write(summary)
        if errors:
            raise CommandError(
                f"{len(errors)} payment(s) or refund(s) could not be checked; run again later."
            )
