"""django-q2 tasks of the fan-out: each takes names or ids and calls one service."""

from __future__ import annotations

from integrations import services


def dispatch(integration: str) -> str:
    # The task may have waited in the queue: its mark lasts from now (see request_dispatch).
    services.dispatch_mark(integration)
    report = services.deliveries_dispatch(integration=integration)
    return (
        f"{integration}: {report.calls} call(s), {report.succeeded} succeeded, {report.retrying} retrying,"
        f" {report.dead} dead{f', waiting: {report.waited_for}' if report.waited_for else ''}"
    )


def sweep() -> str:
    report = services.deliveries_sweep()
    return (
        f"relayed {report.relayed}, took back {report.leases_taken_back},"
        f" dispatch asked for {', '.join(report.dispatch_requested) or 'nothing'}"
    )
