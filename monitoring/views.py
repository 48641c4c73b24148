"""The operators' page (`/ops/`): thin views over `monitoring.selectors` and the fan-out's services.

Everything shown is measured: a ratio or a percentile with nothing behind it reads "no data",
never an invented figure. `?fragment=1` answers only the live part, which `static/js/ops.js`
fetches again when the page's `ops` stream (live/) says something changed, or every 15 seconds
without the stream. The buttons (retry a dead letter, retry an integration's dead
letters, run a probe) are POST forms for staff; each redirects back with a message.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from core.errors import ApplicationError
from integrations import services as integration_services
from integrations.models import CircuitState, Delivery, DeliveryState
from live import services as live
from monitoring import probes, selectors
from monitoring.charts import Series, bar_chart, line_chart
from monitoring.models import ErrorSource
from monitoring.permissions import can_read_monitoring
from monitoring.probes import probe_names
from orders import services as order_services

# How the page names each integration and probe.
TITLES = {"email": "Email (SendGrid)", "sheets": "Google Sheets", "sns": "Amazon SNS", "stripe": "Stripe"}
WINDOWS = {"1h": ("the last hour", 60), "24h": ("the last 24 hours", 96)}
DEFAULT_WINDOW = "1h"
REFRESH_SECONDS = 15
ERRORS_SHOWN = 25
ALERTS_SHOWN = 10
DEAD_LETTERS_SHOWN = 5
LAG_HELP = (
    "Event → delivered: from an order's change to the provider accepting it, for automatic"
    " deliveries only (their automatic retries with backoff included). A delivery staff sent again"
    " (a retried dead letter, a resent email) is left out: its order event may be hours old, and"
    " that is not a slow delivery."
)


# --- who may see and act ----------------------------------------------------------------------
def monitoring_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff, or anyone granted "monitoring.view_monitoring"; others get the login page or a 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not can_read_monitoring(request.user):
            raise PermissionDenied("The operators' page is for staff.")
        return view(request, *args, **kwargs)

    return wrapper


def staff_action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A POST (CSRF-checked by the middleware) that changes something: staff only."""

    @require_POST
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(reverse("monitoring:ops"))
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("Only staff may change deliveries or run probes.")
        return view(request, *args, **kwargs)

    return wrapper


# --- the page ---------------------------------------------------------------------------------
@require_GET
@monitoring_required
def ops(request: HttpRequest) -> HttpResponse:
    window = request.GET.get("window", DEFAULT_WINDOW)
    if window not in WINDOWS:
        window = DEFAULT_WINDOW
    if request.GET.get("fragment"):
        response = render(request, "monitoring/_live.html", _live_context(request, window))
        response["X-Ops-Fragment"] = "1"  # ops.js stops refreshing when a login page comes back
        response["Cache-Control"] = "no-store"
        return response
    live_stream = live.stream_url(live.OPS)  # before the figures: no change missed
    context = _live_context(request, window) | _lookup_context(request.GET.get("order", ""))
    context["live_stream"] = live_stream
    response = render(request, "monitoring/ops.html", context)
    response["Cache-Control"] = "no-store"
    return response


def _live_context(request: HttpRequest, window: str) -> dict[str, Any]:
    summary = selectors.metrics_summary(window)  # first: it flushes this process's figures
    health = selectors.health_check()
    overview = selectors.integrations_overview()
    probes = selectors.latest_probes()
    error_source = request.GET.get("source", "")
    error_integration = request.GET.get("integration", "")
    errors = list(selectors.errors_list(source=error_source, integration=error_integration)[:ERRORS_SHOWN])
    return {
        "window": window,
        "window_label": WINDOWS[window][0],
        "windows": list(WINDOWS),
        "refresh_seconds": REFRESH_SECONDS,
        "lag_help": LAG_HELP,
        "measured_at": timezone.now(),
        "health": health,
        "health_tiles": [_health_tile(c) for c in health.components if not c.name.startswith("integration:")],
        "summary": summary,
        "figures": _figures(summary),
        "integrations": [
            _integration_card(entry, summary["integrations"].get(entry["name"], {})) for entry in overview
        ],
        "probes": [
            {
                "name": name,
                "title": TITLES.get(name, name),
                "latest": probes.get(name),
                "ago": _ago(probes[name]["at"]) if name in probes else None,
            }
            for name in probe_names()
        ],
        "queue": summary["queue"],
        "charts": _charts(window),
        "alerts": list(selectors.alerts_recent(ALERTS_SHOWN)),
        "errors": errors,
        "error_sources": ErrorSource.choices,
        "error_source": error_source,
        "error_integration": error_integration,
        "integration_names": integration_services.integration_names(),
        "here": _here(request),
    }


def _here(request: HttpRequest) -> str:
    """This page's URL with its filters, without the fragment switch: where forms come back to."""
    query = request.GET.copy()
    query.pop("fragment", None)
    return reverse("monitoring:ops") + (f"?{query.urlencode()}" if query else "")


def _percent(ratio: float | None) -> str | None:
    return None if ratio is None else f"{ratio * 100:.1f}%"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s" if seconds % 60 else f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _ago(at: datetime | None) -> str | None:
    """ "12 s ago", "3 min 5 s ago": how long before now (Django's timesince says "0 minutes")."""
    if at is None:
        return None
    return f"{_duration(max(0.0, (timezone.now() - at).total_seconds()))} ago"


def _ms(value: float | None) -> str | None:
    if value is None:
        return None
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _health_tile(component: selectors.ComponentHealth) -> dict[str, Any]:
    return {
        "name": component.name.replace("_", " "),
        "ok": component.ok,
        "latency": _ms(component.latency_ms),
        "error": component.error,
        "detail": component.detail,
    }


def _figures(summary: dict[str, Any]) -> list[dict[str, Any]]:
    orders, payments, requests, webhooks = (
        summary["orders"],
        summary["payments"],
        summary["requests"],
        summary["webhooks"],
    )
    return [
        {"label": "Orders created", "value": orders["created"], "id": "orders-created"},
        {"label": "Orders paid", "value": orders["paid"], "id": "orders-paid"},
        {"label": "Payments failed", "value": orders["payment_failed"], "id": "orders-payment-failed"},
        {
            "label": "Payment success",
            "value": _percent(payments["success_ratio"]),
            "note": f"{payments['succeeded']} succeeded, {payments['failed']} failed",
            "id": "payment-success",
        },
        {
            "label": "Requests",
            "value": requests["total"],
            "note": f"{requests['errors_5xx']} answered 5xx",
            "id": "requests",
        },
        {
            "label": "Webhooks",
            "value": webhooks["received"],
            "note": f"{webhooks['failed']} failed",
            "id": "webhooks",
        },
    ]


# Succeeded deliveries are counted over the last 24 h (every state but that one over the whole
# ledger): see selectors.integrations_overview.
STATE_LABELS = {DeliveryState.SUCCEEDED: "Succeeded (24 h)"}


def _integration_card(entry: dict[str, Any], figures: dict[str, Any]) -> dict[str, Any]:
    name = entry["name"]
    dead = selectors.dead_letters(integration=name, limit=DEAD_LETTERS_SHOWN)
    latency = figures.get("latency") or {}
    lag = figures.get("lag") or {}
    probe = entry.get("probe")
    last_error = entry.get("last_error")
    return entry | {
        "title": TITLES.get(name, name.capitalize()),
        "retry_in": _duration(entry["retry_in_s"]) if entry.get("retry_in_s") else None,
        "last_success_ago": _ago(entry.get("last_success_at")),
        "last_error_ago": _ago(last_error["last_error_at"]) if last_error else None,
        "probe_ago": _ago(probe["at"]) if probe else None,
        "circuit_label": CircuitState(entry["circuit"]).label
        if entry["circuit"] in CircuitState.values
        else entry["circuit"],
        "states": [
            {"value": state, "label": STATE_LABELS.get(state, DeliveryState(state).label), "n": n}
            for state, n in entry["counts"].items()
        ],
        "dead_letters": dead,
        "dead_count": entry["counts"].get(DeliveryState.DEAD, 0),
        "success_24h": _percent(entry["success_ratio_24h"]),
        "p95_24h": _ms((entry["latency_24h"] or {}).get("p95_ms")),
        "p95_window": _ms(latency.get("p95_ms")),
        "lag_p95_window": _ms(lag.get("p95_ms")),
        "failure_ratio_pct": _percent(entry["failure_ratio"]) if entry["calls_in_window"] else None,
        "window_figures": figures,
    }


def _charts(window: str) -> list[dict[str, Any]]:
    label, points = WINDOWS[window]
    step_minutes = selectors.WINDOWS[window].total_seconds() / 60 / points
    created = selectors.series("orders.created", window=window, points=points)
    paid = selectors.series("orders.status", window=window, label="paid", points=points)
    failed = selectors.series("orders.status", window=window, label="payment_failed", points=points)
    times = [step["at"] for step in created]

    def per_minute(steps: list[dict[str, Any]]) -> list[float]:
        return [round(step["count"] / step_minutes, 2) for step in steps]

    totals = {
        name: sum(s["count"] for s in steps)
        for name, steps in (("created", created), ("paid", paid), ("failed", failed))
    }
    orders_chart = line_chart(
        title="Orders per minute",
        desc=f"Orders created, paid and failing payment per minute over {label}: "
        f"{totals['created']} created, {totals['paid']} paid, {totals['failed']} payment failed.",
        times=times,
        series=[
            Series("created", per_minute(created), "#1f5fbf"),
            Series("paid", per_minute(paid), "#1e7a46"),
            Series("payment failed", per_minute(failed), "#b42318"),
        ],
        unit="orders/min",
        empty="No orders in this window",
    )
    payments = selectors.payment_series(window=window, points=points)
    succeeded = sum(step["succeeded"] for step in payments)
    failed_payments = sum(step["failed"] for step in payments)
    payments_chart = bar_chart(
        title="Payment outcomes",
        desc=f"Payments that succeeded and failed over {label}: {succeeded} succeeded, {failed_payments} failed.",
        times=[step["at"] for step in payments],
        series=[
            Series("succeeded", [step["succeeded"] for step in payments], "#1e7a46"),
            Series("failed", [step["failed"] for step in payments], "#b42318"),
        ],
        unit="payments",
        empty="No payments in this window",
    )
    names = integration_services.integration_names()
    latency = {
        name: selectors.series("delivery.call", window=window, label=name, points=points) for name in names
    }
    lag = {name: selectors.series("delivery.lag", window=window, label=name, points=points) for name in names}
    latency_chart = line_chart(
        title="Delivery latency (p95 of provider calls)",
        desc=f"The 95th percentile of each integration's call time per step over {label}; "
        + "; ".join(
            f"{name}: {_plural(sum(s['count'] for s in steps), 'call')}" for name, steps in latency.items()
        )
        + ".",
        times=times,
        series=[Series(name, [s["p95_ms"] for s in steps]) for name, steps in latency.items()],
        unit="ms",
        empty="No provider calls in this window",
    )
    lag_chart = line_chart(
        title="Order event to delivered (p95)",
        desc=f"The 95th percentile of the time from an order's change to its delivery per step over {label}"
        " (automatic deliveries only; retries and resends staff asked for are left out); "
        + "; ".join(
            f"{name}: {_plural(sum(s['count'] for s in steps), 'delivery', 'deliveries')}"
            for name, steps in lag.items()
        )
        + ".",
        times=times,
        series=[Series(name, [s["p95_ms"] for s in steps]) for name, steps in lag.items()],
        unit="ms",
        empty="Nothing delivered in this window",
    )
    return [
        {"id": "chart-orders", "svg": orders_chart},
        {"id": "chart-payments", "svg": payments_chart},
        {"id": "chart-latency", "svg": latency_chart},
        {"id": "chart-lag", "svg": lag_chart},
    ]


def _plural(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _lookup_context(raw: str) -> dict[str, Any]:
    """The order lookup (an id, a short reference or an email address): one order's story, the
    orders it matches, or a message saying why there are none."""
    found = selectors.order_lookup(raw[:1000])
    return {
        "lookup": found.text,
        "lookup_error": found.error,
        "lookup_help": selectors.LOOKUP_HELP,
        "story": found.story,
        "lookup_orders": found.orders,
        "lookup_heading": found.heading,
        "lookup_more": found.more,
    }


# --- actions ----------------------------------------------------------------------------------
def _back(request: HttpRequest) -> HttpResponse:
    """To the page the form was on (only ever a URL of the operators' page)."""
    target = request.POST.get("next", "")
    base = reverse("monitoring:ops")
    if not target.startswith(base) or target.startswith("//") or "\\" in target:
        target = base
    return redirect(target)


@staff_action
def delivery_retry(request: HttpRequest, delivery_id: uuid.UUID) -> HttpResponse:
    actor = order_services.actor_for(request.user)
    try:
        delivery = integration_services.delivery_retry(delivery_id=delivery_id, actor=actor)
    except Delivery.DoesNotExist as exc:
        raise Http404("No such delivery.") from exc
    except ApplicationError as exc:
        messages.warning(request, exc.message)
    else:
        messages.success(
            request,
            f"The {delivery.integration} delivery ({delivery.event_type}) of order {delivery.order_id} is queued again.",
        )
    return _back(request)


@staff_action
def integration_retry_dead(request: HttpRequest, name: str) -> HttpResponse:
    if name not in integration_services.integration_names():
        raise Http404("No such integration.")
    count = integration_services.deliveries_retry_matching(
        actor=order_services.actor_for(request.user), integration=name
    )
    if count:
        messages.success(request, f"{count} dead {name} deliver{'y' if count == 1 else 'ies'} queued again.")
    else:
        messages.info(request, f"There were no dead {name} deliveries to retry.")
    return _back(request)


@staff_action
def probe_run(request: HttpRequest, name: str) -> HttpResponse:
    if name not in probe_names():
        raise Http404("No such probe.")
    result = probes.probe_run(name, trigger="button")
    latency = _ms(result.latency_ms)
    if result.ok:
        messages.success(request, f"The {name} probe passed in {latency}.")
    else:
        messages.error(request, f"The {name} probe failed after {latency}: {result.error}")
    return _back(request)
