"""What the other apps report, turned into figures, recorded errors and alerts.

`orders`, `payments` and `integrations` sit below monitoring and never import it: they log
structured events (`extra={"event": ..., ...}`) on their own loggers, as they would for any
operator. `EventHandler`, attached to those loggers by the LOGGING setting, reads the events it
knows and records them:

| event | fields | becomes |
|---|---|---|
| order.created | order_id | count orders.created |
| order.status_changed | order_id, status | count orders.status (label: the status) |
| payment.failed | order_id, error_class | an error (source payment) |
| refund.refused | order_id | an error (source payment) |
| webhook.failed | error_class | an error (source webhook) |
| webhook.refused | error_class | count webhooks.refused |
| payment.review, payment.reversed, payment.disputed, refund.failed, refund.excess | order_id, error_class | an error (source payment) and an alert (subject payments) |
| delivery.call | integration, latency_ms | timing delivery.call |
| delivery.outcome | integration, order_id, state, lag_ms, error_class | counts delivery.attempts and delivery.<state>, timing delivery.lag; a retry or dead letter is an error, a dead letter an alert |
| delivery.successes | integration, count, lags_ms | a batch's successes at once: counts delivery.attempts and delivery.succeeded, a delivery.lag timing per lag |
| circuit.opened | integration | an alert |

The same lines go on to the log handlers (console, CloudWatch) like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

# The handler is built while logging is configured, before Django's apps are ready: the modules
# that touch models are imported when the first event arrives.
_lazy: dict[str, Any] = {}


def _recorder() -> Any:
    if "recorder" not in _lazy:
        from monitoring import recorder

        _lazy["recorder"] = recorder
    return _lazy["recorder"]


def _services() -> Any:
    if "services" not in _lazy:
        from monitoring import services

        _lazy["services"] = services
    return _lazy["services"]


def _order_created(record: logging.LogRecord) -> None:
    _recorder().count("orders.created")


def _order_status(record: logging.LogRecord) -> None:
    _recorder().count("orders.status", label=str(record.status))


def _error(source: str) -> Callable[[logging.LogRecord], None]:
    def record_error(record: logging.LogRecord) -> None:
        _services().error_record(
            source=source,
            integration=getattr(record, "integration", "") or "",
            order_id=getattr(record, "order_id", None),
            error_class=getattr(record, "error_class", "") or record.levelname,
            message=record.getMessage(),
        )

    return record_error


def _delivery_call(record: logging.LogRecord) -> None:
    _recorder().observe("delivery.call", float(record.latency_ms), label=str(record.integration))


def _delivery_outcome(record: logging.LogRecord) -> None:
    integration, state = str(record.integration), str(record.state)
    _recorder().count("delivery.attempts", label=integration)
    _recorder().count(f"delivery.{state}", label=integration)
    lag = getattr(record, "lag_ms", None)
    if lag is not None:
        _recorder().observe("delivery.lag", float(lag), label=integration)
    if state == "succeeded":
        return
    _error("delivery")(record)
    if state == "dead":
        _services().alert_raise(
            subject=integration,
            kind="dead_letter",
            message=f"{integration} deliveries are being dead-lettered (given up); first: {record.getMessage()}",
        )


def _delivery_successes(record: logging.LogRecord) -> None:
    """A batch's successes in one record: the same figures as one `delivery.outcome` each."""
    integration, n = str(record.integration), int(record.count)
    recorder = _recorder()
    recorder.count("delivery.attempts", label=integration, n=n)
    recorder.count("delivery.succeeded", label=integration, n=n)
    recorder.observe_many("delivery.lag", [float(lag) for lag in record.lags_ms], label=integration)


def _webhook_refused(record: logging.LogRecord) -> None:
    _recorder().count("webhooks.refused")


def _payment_alert(record: logging.LogRecord) -> None:
    """Money that needs a person: a payment held or reversed, a dispute, a refund that failed
    after it succeeded or that exceeded what was paid."""
    _error("payment")(record)
    _services().alert_raise(subject="payments", kind=str(record.event), message=record.getMessage())


def _circuit_opened(record: logging.LogRecord) -> None:
    _services().alert_raise(subject=str(record.integration), kind="circuit_open", message=record.getMessage())


EVENTS: dict[str, Callable[[logging.LogRecord], None]] = {
    "order.created": _order_created,
    "order.status_changed": _order_status,
    "payment.failed": _error("payment"),
    "refund.refused": _error("payment"),
    "webhook.failed": _error("webhook"),
    "webhook.refused": _webhook_refused,
    "payment.review": _payment_alert,
    "payment.reversed": _payment_alert,
    "payment.disputed": _payment_alert,
    "refund.failed": _payment_alert,
    "refund.excess": _payment_alert,
    "delivery.call": _delivery_call,
    "delivery.outcome": _delivery_outcome,
    "delivery.successes": _delivery_successes,
    "circuit.opened": _circuit_opened,
}


class EventHandler(logging.Handler):
    """Records the events of EVENTS; ignores every other line. Never raises into the caller."""

    def emit(self, record: logging.LogRecord) -> None:
        handle = EVENTS.get(record.__dict__.get("event", ""))
        if handle is None:
            return
        try:
            handle(record)
        except Exception:  # noqa: BLE001 - figures and errors must not break what is being reported
            self.handleError(record)
