"""`/metrics` in the Prometheus text format, built from the shared stores at scrape time.

The figures are read from the database (per-minute `MetricBucket` rows, the delivery ledger,
payments) and the shared circuit state when scraped, so any web process answers with the same
whole-system figures however many gunicorn workers or hosts there are: nothing is per process.
Scrape one target (or several behind a load balancer: the answers agree).

Access: with METRICS_TOKEN set, `Authorization: Bearer <token>`; otherwise a staff or monitoring
user (session or JWT).

Counters and histograms are cumulative: the minutes that no longer change (older than
SETTLED) are summed once and the sums kept in the shared cache with the minute they reach, so a
scrape adds only the minutes settled since and reads the last few live: its cost does not grow
with the days of figures kept. Rows pruned later stay counted (a counter never goes down); if
the cache is emptied, the sums start again from the rows kept (Prometheus sees a reset).
"""

from __future__ import annotations

import copy
import hmac
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from access.jwt import RevocableJWTAuthentication
from integrations.models import COUNTED_STATES
from integrations.resilience import shared_cache
from integrations.services import integration_names
from monitoring import recorder
from monitoring.models import BUCKET_BOUNDS_MS, BUCKET_FIELDS, MetricBucket, ProbeResult
from monitoring.permissions import can_read_monitoring
from monitoring.selectors import circuit_summary, ledger_counts, queue_summary
from payments.models import UNSETTLED_PAYMENT_STATUSES, Payment

CIRCUIT_STATES = ("closed", "half_open", "open")


def _histogram(name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, labels=labels)


def _buckets(row: dict[str, Any]) -> list[tuple[str, float]]:
    cumulative, out = 0, []
    for bound, field in zip((*BUCKET_BOUNDS_MS, None), BUCKET_FIELDS, strict=True):
        cumulative += row[field] or 0
        out.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
    return out


# Figures of a minute this old are final: every process flushes its buffer within seconds.
SETTLED = timedelta(minutes=5)
CUMULATIVE_KEY = "prometheus:cumulative:v1"
CUMULATIVE_NAMES = (
    "http.request",
    "delivery.call",
    "delivery.lag",
    "probe",
    "orders.created",
    "orders.status",
    "delivery.attempts",
    "delivery.succeeded",
    "delivery.retrying",
    "delivery.dead",
)
SUMMED = ("count", "total", *BUCKET_FIELDS)
Sums = dict[tuple[str, str], dict[str, float]]


def _sum_rows(**filters: Any) -> Sums:
    rows = (
        MetricBucket.objects.filter(name__in=CUMULATIVE_NAMES, **filters)
        .values("name", "label")
        .annotate(**{f"sum_{f}": Sum(f) for f in SUMMED})
        .order_by()
    )
    return {(row["name"], row["label"]): {f: row[f"sum_{f}"] or 0 for f in SUMMED} for row in rows}


def _add(into: Sums, more: Sums) -> Sums:
    for key, sums in more.items():
        target = into.setdefault(key, dict.fromkeys(SUMMED, 0))
        for f in SUMMED:
            target[f] += sums[f]
    return into


def cumulative_sums() -> Sums:
    """Per (metric name, label): count, total and histogram buckets summed over every minute
    recorded. Settled minutes come from the shared cache (plus those settled since it was
    written), the live ones from their rows: at most SETTLED worth of minutes read per metric."""
    cache = shared_cache()
    settled = (timezone.now() - SETTLED).replace(second=0, microsecond=0)
    state = cache.get(CUMULATIVE_KEY)
    if state is None:
        base = _sum_rows(minute__lt=settled)
    elif state["until"] < settled:
        base = _add(state["sums"], _sum_rows(minute__gte=state["until"], minute__lt=settled))
    else:
        base, settled = state["sums"], state["until"]
    # Each writer stores sums that match its `until`, so racing scrapes only ever store a
    # consistent pair (at worst an older one, extended again by the next scrape).
    cache.set(CUMULATIVE_KEY, {"until": settled, "sums": base}, timeout=None)
    return _add(copy.deepcopy(base), _sum_rows(minute__gte=settled))


class SharedStoreCollector:
    """Yields every family from the database at collect time."""

    def collect(self) -> Iterator[Any]:
        recorder.flush()
        sums = cumulative_sums()
        yield from self._histograms(
            "http.request",
            "cis_http_request_duration_seconds",
            "Time to answer a request, by endpoint (method and URL pattern) and status class.",
            ["endpoint", "status"],
            lambda label: list(label.rpartition("|")[::2]),
            sums,
        )
        yield from self._histograms(
            "delivery.call",
            "cis_delivery_call_duration_seconds",
            "Time of one call to an integration's provider.",
            ["integration"],
            lambda label: [label],
            sums,
        )
        yield from self._histograms(
            "delivery.lag",
            "cis_delivery_lag_seconds",
            "Time from the order event (e.g. payment) to its effect at the integration.",
            ["integration"],
            lambda label: [label],
            sums,
        )
        yield from self._histograms(
            "probe",
            "cis_probe_duration_seconds",
            "Time of a synthetic probe call.",
            ["integration"],
            lambda label: [label],
            sums,
        )
        orders = CounterMetricFamily("cis_orders", "Orders created and status changes.", labels=["event"])
        for (name, label), row in sorted(sums.items()):
            if name in ("orders.created", "orders.status"):
                orders.add_metric(["created" if name == "orders.created" else label], row["count"])
        yield orders
        for name, doc in (
            ("delivery.attempts", "Delivery attempts made."),
            ("delivery.succeeded", "Delivery attempts that succeeded."),
            ("delivery.retrying", "Delivery attempts that failed and will be retried."),
            ("delivery.dead", "Deliveries given up (dead letters)."),
        ):
            family = CounterMetricFamily(f"cis_{name.replace('.', '_')}", doc, labels=["integration"])
            for (metric, label), row in sorted(sums.items()):
                if metric == name:
                    family.add_metric([label], row["count"])
            yield family

        # Every state but succeeded (successes are the counter cis_delivery_succeeded): counting
        # the whole ledger would read every row ever delivered at each scrape.
        ledger = GaugeMetricFamily(
            "cis_deliveries",
            "Deliveries in the ledger by state (every state but succeeded).",
            labels=["integration", "state"],
        )
        for integration in integration_names():
            counts = ledger_counts(integration)
            for state in COUNTED_STATES:
                ledger.add_metric([integration, state], counts.get(state, 0))
        yield ledger

        circuit = GaugeMetricFamily(
            "cis_circuit_state",
            "1 for the state each integration's circuit is in.",
            labels=["integration", "state"],
        )
        ratio = GaugeMetricFamily(
            "cis_circuit_failure_ratio",
            "Failed share of calls in the breaker's window.",
            labels=["integration"],
        )
        for integration in integration_names():
            summary = circuit_summary(integration)
            for state in CIRCUIT_STATES:
                circuit.add_metric([integration, state], 1.0 if summary["circuit"] == state else 0.0)
            ratio.add_metric([integration], summary["failure_ratio"])
        yield circuit
        yield ratio

        # Open payments only (settled ones are counted by cis_orders{event="paid"|"payment_failed"}).
        payments = GaugeMetricFamily(
            "cis_payments", "Payment attempts still open, by status.", labels=["status"]
        )
        open_counts = dict(
            Payment.objects.filter(status__in=UNSETTLED_PAYMENT_STATUSES)
            .values_list("status")
            .annotate(n=Count("id"))
            .order_by()
        )
        for status in UNSETTLED_PAYMENT_STATUSES:
            payments.add_metric([status], open_counts.get(status, 0))
        yield payments

        queue = queue_summary()
        yield GaugeMetricFamily(
            "cis_queue_depth", "Tasks waiting in the broker.", value=queue["broker_depth"] or 0
        )
        yield GaugeMetricFamily(
            "cis_deliveries_due", "Deliveries due and not yet made.", value=queue["deliveries_due"]
        )
        yield GaugeMetricFamily(
            "cis_oldest_due_delivery_age_seconds",
            "Age of the oldest due delivery.",
            value=queue["oldest_due_age_s"],
        )

        probe = GaugeMetricFamily(
            "cis_probe_success", "1 if the latest probe succeeded.", labels=["integration"]
        )
        latest = ProbeResult.objects.values("integration").annotate(last=Max("id"))
        for row in ProbeResult.objects.filter(id__in=[r["last"] for r in latest]):
            probe.add_metric([row.integration], 1.0 if row.ok else 0.0)
        yield probe

    @staticmethod
    def _histograms(
        name: str, metric: str, documentation: str, labels: list[str], split: Any, sums: Sums
    ) -> Iterator[Any]:
        family = _histogram(metric, documentation, labels)
        for (metric_name, label), row in sorted(sums.items()):
            if metric_name == name:
                family.add_metric(split(label), _buckets(row), (row["total"] or 0) / 1000)
        yield family


def _allowed(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    if settings.METRICS_TOKEN:
        return hmac.compare_digest(header, f"Bearer {settings.METRICS_TOKEN}")
    if can_read_monitoring(getattr(request, "user", None)):
        return True
    try:
        found = RevocableJWTAuthentication().authenticate(request)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a bad token is simply not allowed
        return False
    return bool(found and can_read_monitoring(found[0]))


@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SharedStoreCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
