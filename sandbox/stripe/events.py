"""Events of the Stripe stand-in: recorded for `GET /v1/events`, delivered signed.

Every event localstripe or our routes create goes through `schedule()`: it counts the
destinations (`pending_webhooks`), renders the event once in the current shape, and after
`STATE.webhook_delay` seconds POSTs it to each destination, signed as Stripe signs
(`Stripe-Signature: t=<now>,v1=<HMAC-SHA256 of "t.body" with the destination's secret>`).
Destinations are the hooks of localstripe's `POST /_config/webhooks/{id}` and the enabled
webhook endpoints (`POST /v1/webhook_endpoints`) whose `enabled_events` hold the type or `*`.
Like localstripe, a failed delivery is logged, not retried (Stripe retries for up to 3 days).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sandbox.stripe import compat

logger = logging.getLogger("sandbox.stripe")


@dataclass
class WebhookEndpoint:
    id: str
    url: str
    secret: str
    enabled_events: list[str]
    created: int
    description: str | None = None
    api_version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "enabled"

    def wants(self, event_type: str) -> bool:
        return self.status == "enabled" and ("*" in self.enabled_events or event_type in self.enabled_events)

    def export(self, *, with_secret: bool = False) -> dict[str, Any]:
        obj = {
            "id": self.id,
            "object": "webhook_endpoint",
            "api_version": self.api_version,
            "application": None,
            "created": self.created,
            "description": self.description,
            "enabled_events": list(self.enabled_events),
            "livemode": False,
            "metadata": dict(self.metadata),
            "status": self.status,
            "url": self.url,
        }
        if with_secret:  # Stripe shows the signing secret only in the answer to the create call
            obj["secret"] = self.secret
        return obj


@dataclass
class SandboxState:
    """What the wrapper keeps beside localstripe's store; emptied with it."""

    webhook_delay: float = 1.0
    async_delay: float = 1.0
    endpoints: dict[str, WebhookEndpoint] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    idempotency: dict[tuple[str, str], Any] = field(default_factory=dict)

    def clear(self) -> None:
        self.endpoints.clear()
        self.idempotency.clear()


STATE = SandboxState()


def new_id(prefix: str, length: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def spawn(coro: Any) -> asyncio.Task[Any]:
    """A background task that `cancel_pending()` can cancel (deliveries, later refund failures)."""
    task = asyncio.ensure_future(coro)
    STATE.tasks.add(task)
    task.add_done_callback(STATE.tasks.discard)
    return task


def cancel_pending() -> int:
    current = asyncio.current_task()
    pending = [task for task in STATE.tasks if task is not current and not task.done()]
    for task in pending:
        task.cancel()
    return len(pending)


def _destinations(event_type: str) -> list[tuple[str, str]]:
    from localstripe import webhooks

    found = [
        (hook.url, hook.secret)
        for hook in list(webhooks._webhooks.values())
        if hook.events is None or event_type in hook.events
    ]
    found += [(ep.url, ep.secret) for ep in STATE.endpoints.values() if ep.wants(event_type)]
    return found


def schedule(event: Any) -> None:
    """Deliver `event` (a localstripe Event) to its destinations after the webhook delay."""
    targets = _destinations(event.type)
    event._pending_webhooks = len(targets)
    if not targets:
        return
    payload = json.dumps(event._export(), indent=2, sort_keys=True).encode()
    spawn(_deliver(event, payload, targets))


def emit(event_type: str, obj: Any, *, previous_attributes: dict[str, Any] | None = None) -> Any:
    """Record an event about `obj` (a localstripe object) and schedule its delivery."""
    from localstripe.resources import Event

    event = Event(event_type, obj)
    if previous_attributes:
        event._previous_attributes = previous_attributes
    schedule(event)
    return event


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    signed = b"%d.%s" % (timestamp, payload)
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


async def _deliver(event: Any, payload: bytes, targets: list[tuple[str, str]]) -> None:
    await asyncio.sleep(STATE.webhook_delay)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for url, secret in targets:
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature_header(payload, secret, int(time.time())),
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    delivered = 200 <= response.status < 300
                    if delivered:
                        event._pending_webhooks = max(0, event._pending_webhooks - 1)
                    logger.info("webhook %s %s to %s: HTTP %d", event.type, event.id, url, response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                logger.info("webhook %s %s to %s failed: %s", event.type, event.id, url, exc)


def fail_refund_later(refund: Any) -> None:
    """Stripe's test card 4000 0000 0000 5126: the refund succeeds, then fails asynchronously
    with `expired_or_canceled_card` (refund.updated, charge.refund.updated, refund.failed)."""

    async def later() -> None:
        compat.CURRENT_REQUEST.set(None)  # caused by no API request, like Stripe's own
        await asyncio.sleep(STATE.async_delay)
        previous = {"status": refund.status}
        refund.status = "failed"
        refund._failure_reason = compat.REFUND_FAILURE_REASON
        for event_type in ("refund.updated", "charge.refund.updated"):
            emit(event_type, refund, previous_attributes=previous)
        emit("refund.failed", refund)

    spawn(later())


def reset(*, forget_webhooks: bool) -> int:
    """Empty the store, the endpoints and the idempotency keys; cancel what is still waiting."""
    from localstripe import resources, webhooks

    cancelled = cancel_pending()
    resources.store.clear()
    STATE.clear()
    if forget_webhooks:
        webhooks._webhooks.clear()
    return cancelled
