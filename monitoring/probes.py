"""Synthetic probes: one harmless real call per integration, timed and kept for operators.

Each probe goes through the real client library, the same code the deliveries use:

- `email`: a SendGrid Mail Send in sandbox mode (validated, never sent);
- `sheets`: a timestamp written to the health tab (SHEETS_HEALTH_WORKSHEET) of the spreadsheet,
  never to the orders tab;
- `sns`: a message on the order-events topic with the attribute probe = "true";
- `stripe`: a read of the account balance.

The provider calls live in the adapters (`probe()` of each integration adapter, and of the
payment gateway); this module times them, stores a `ProbeResult`, records the latency as the
`probe` metric, and on failure records an error (source "probe") and raises an alert about the
integration (deduplicated with the integration's other alerts). A provider's failure never
raises here: it is the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings

from live import services as live
from monitoring import recorder
from monitoring.models import ErrorSource, ProbeResult
from monitoring.scrub import scrub
from monitoring.services import alert_raise, error_record

logger = logging.getLogger(__name__)

# Every probe there is, in the order they run and are shown. `probe_names()` answers those in
# force: the integrations configured in settings.INTEGRATIONS, and Stripe.
PROBES: tuple[str, ...] = ("email", "sheets", "sns", "stripe")
DETAIL_LIMIT = 500
ERROR_LIMIT = 2000


def probe_names() -> list[str]:
    """The probes in force now: each configured integration of PROBES, then "stripe"."""
    return [name for name in PROBES if name == "stripe" or name in settings.INTEGRATIONS]


def _probe_call(name: str) -> Callable[[], str]:
    """The call that probes `name`; ValueError for a name that is not a probe in force."""
    if name not in probe_names():
        raise ValueError(f"no probe named {name!r}; the probes are {', '.join(probe_names())}")
    if name == "stripe":

        def stripe_probe() -> str:
            from payments.gateways.base import get_payment_gateway

            return get_payment_gateway().probe()

        return stripe_probe

    def integration_probe() -> str:
        from integrations.services import get_adapter

        return get_adapter(name).probe()

    return integration_probe


def _error_class(exc: BaseException) -> str:
    """How the failure is named: the adapter's classification, else the exception's class."""
    return str(getattr(exc, "error_class", "") or type(exc).__name__)


def probe_run(name: str, *, trigger: str = "command") -> ProbeResult:
    """Probe one integration now and keep the result (`trigger`: command, schedule, api...).

    Raises ValueError for an unknown probe name, and nothing for the provider's failure: that is
    stored as a result with `ok` False, an error record and an alert about `name`.
    """
    call = _probe_call(name)
    detail = error = error_class = ""
    started = time.perf_counter()
    try:
        detail = str(call())
    except Exception as exc:  # noqa: BLE001 - a failing provider is the probe's finding, not an error here
        error_class = _error_class(exc)
        error = scrub(f"{error_class}: {exc}")[:ERROR_LIMIT]
    latency_ms = (time.perf_counter() - started) * 1000
    ok = not error_class
    result = ProbeResult.objects.create(
        integration=name,
        ok=ok,
        latency_ms=round(latency_ms, 3),
        detail=scrub(detail)[:DETAIL_LIMIT],
        error=error,
        trigger=trigger[:16],
    )
    recorder.observe("probe", latency_ms, label=name)
    live.publish(live.OPS)  # the probe's card on /ops/
    if not ok:
        logger.warning("Probe of %s failed after %.0f ms: %s", name, latency_ms, error)
        error_record(source=ErrorSource.PROBE, integration=name, error_class=error_class, message=error)
        alert_raise(subject=name, kind="probe_failed", message=f"The {name} probe failed: {error}")
    return result


def probe_all(trigger: str = "command") -> list[ProbeResult]:
    """Run every probe in force, one after another; one result each."""
    return [probe_run(name, trigger=trigger) for name in probe_names()]


def probe_latest() -> dict[str, ProbeResult | None]:
    """The latest result of each probe in force (None: never run), for the operators' page."""
    return {name: ProbeResult.objects.filter(integration=name).first() for name in probe_names()}
