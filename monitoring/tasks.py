"""django-q2 tasks of monitoring (scheduled by migration 0002): each calls services and reports.

- `probe_all`, every 5 minutes: the synthetic probes (`monitoring.probes`), unless
  PROBE_INTERVAL_MINUTES is 0 (by hand only) or the last scheduled run is more recent than the
  interval allows (an interval of 10 runs every other time; below 5 it is 5).
- `housekeeping`, every 5 minutes: publish alerts whose publication failed.
- `retention`, every 15 minutes (migration 0003): prune, in batches, figures, errors and probe
  results older than MONITORING_RETENTION_DAYS, delivered ledger rows older than
  DELIVERY_RETENTION_DAYS and stored webhook events older than WEBHOOK_EVENT_RETENTION_DAYS.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from monitoring import probes, recorder, services
from monitoring.models import ProbeResult

# A scheduled run may start a little late or early; a run this much sooner than the interval
# still counts as due.
SCHEDULE_SLACK = timedelta(minutes=1)


def probe_all() -> str:
    interval = settings.PROBE_INTERVAL_MINUTES
    if interval <= 0:
        return "probes are off (PROBE_INTERVAL_MINUTES = 0): run `manage.py probe` by hand"
    last = ProbeResult.objects.filter(trigger="schedule").values_list("at", flat=True).first()
    if last is not None and timezone.now() - last < timedelta(minutes=interval) - SCHEDULE_SLACK:
        return f"skipped: the probes ran at {last:%H:%M:%S}, and run every {interval} minute(s)"
    results = probes.probe_all(trigger="schedule")
    recorder.flush()
    return (
        "; ".join(f"{r.integration} {'ok' if r.ok else 'FAILED'} in {r.latency_ms:.0f} ms" for r in results)
        or "no probes in force"
    )


def housekeeping() -> str:
    published = services.alerts_publish_pending()
    recorder.flush()
    return f"published {published} pending alert(s)"


def retention() -> str:
    pruned = services.monitoring_prune()
    return (
        f"pruned {pruned['metric_rows']} metric row(s), {pruned['errors']} error(s),"
        f" {pruned['probe_results']} probe result(s), {pruned['deliveries']} delivered ledger row(s),"
        f" {pruned['webhook_events']} webhook event(s)"
    )
