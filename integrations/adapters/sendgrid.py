"""The email adapter: one SendGrid v3 Mail Send call per delivery, rendered from Django templates.

Each event type has a template pair in `templates/emails/` (`.txt` and `.html`, both sent in
`content`). Every message carries the delivery's identity twice, so a repeat can be recognised:
in `custom_args` (SendGrid echoes them in its event webhook) and in an `X-Idempotency-Key` mail
header (the recipient's copy). SendGrid itself has no idempotency keys, so a retry after a lost
answer may send the email twice; the ledger keeps that to the rare lost-answer case.

Outcomes: 2xx → the `X-Message-Id` header as external id; an HTTP error → classified by status
(429 and 5xx transient, other 4xx permanent); no answer (refused, reset, timeout) → transient;
a payload that cannot be rendered → permanent.

Settings (read on every call, so tests can override them): `SENDGRID_API_KEY`,
`SENDGRID_API_BASE`, `SENDGRID_FROM_EMAIL`, `SENDGRID_SANDBOX_MODE`, and
`SENDGRID_TIMEOUT_SECONDS` (declared in `config/settings.py`).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.template.loader import render_to_string
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    CustomArg,
    From,
    Header,
    HtmlContent,
    Mail,
    MailSettings,
    PlainTextContent,
    SandBoxMode,
    To,
)
from sendgrid.helpers.mail.exceptions import SendGridException

from integrations.adapters.base import (
    DeliveryError,
    DeliveryOutcome,
    DeliveryRequest,
    ProbeFailed,
    probe_timeout_seconds,
)
from orders.domain import order_reference
from orders.money import format_money

IDEMPOTENCY_HEADER = "X-Idempotency-Key"

# event type → template name (templates/emails/<name>.txt and .html)
TEMPLATES: dict[str, str] = {
    "order.paid": "order_paid",
    "order.payment_failed": "order_payment_failed",
    "order.refunded": "order_refunded",
    "order.partially_refunded": "order_refunded",
    "order.cancelled": "order_cancelled",
}
SUBJECTS: dict[str, str] = {
    "order.paid": "Order {ref} confirmed: {total} paid",
    "order.payment_failed": "Order {ref}: your payment did not go through",
    "order.refunded": "Order {ref} refunded: {refunded}",
    "order.partially_refunded": "Order {ref} partly refunded: {refunded}",
    "order.cancelled": "Order {ref} has been cancelled",
}


class RenderError(Exception):
    """The delivery's payload cannot be made into an email (unknown event type, missing fields)."""


def _parse_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def render_email(request: DeliveryRequest) -> tuple[str, str, str]:
    """(subject, plain text, HTML) for one delivery; raises RenderError when it cannot."""
    template = TEMPLATES.get(request.event_type)
    if template is None:
        raise RenderError(f"no email for event type {request.event_type!r}")
    try:
        order = request.payload["order"]
        event = request.payload.get("event") or {}
        data = event.get("data") or {}
        currency = order["currency"]
        refunded_minor = data.get("refunded_minor")
        context = {
            "order": order,
            "event": event,
            "event_type": request.event_type,
            "partial": request.event_type == "order.partially_refunded",
            "ref": order_reference(order["id"]),
            "created_at": _parse_datetime(order.get("created_at")),
            "event_at": _parse_datetime(event.get("at")),
            "failure_message": data.get("failure_message", ""),
            "refunded_minor": refunded_minor,
        }
        subject = SUBJECTS[request.event_type].format(
            ref=context["ref"],
            total=format_money(order["total_minor"], currency),
            refunded=format_money(refunded_minor, currency)
            if isinstance(refunded_minor, int)
            else format_money(order["total_minor"], currency),
        )
        text = render_to_string(f"emails/{template}.txt", context).strip() + "\n"
        html = render_to_string(f"emails/{template}.html", context)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RenderError(f"order payload is missing or malformed: {exc!r}") from exc
    except (TemplateDoesNotExist, TemplateSyntaxError) as exc:
        raise RenderError(f"email template problem: {exc}") from exc
    return subject, text, html


def build_mail(request: DeliveryRequest, *, from_email: str, sandbox_mode: bool) -> Mail:
    """The SendGrid message for one delivery (raises RenderError or SendGridException)."""
    subject, text, html = render_email(request)
    order = request.order
    mail = Mail(
        from_email=From(from_email),
        to_emails=To(order["email"], order.get("customer_name") or None),
        subject=subject,
        plain_text_content=PlainTextContent(text),
        html_content=HtmlContent(html),
    )
    mail.custom_arg = [
        CustomArg("order_id", str(request.order_id)),
        CustomArg("event_type", request.event_type),
        CustomArg("idempotency_key", request.idempotency_key),
        CustomArg("delivery_id", str(request.delivery_id)),
    ]
    mail.header = Header(IDEMPOTENCY_HEADER, request.idempotency_key)
    if sandbox_mode:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    return mail


def _error_message(body: Any) -> str:
    """SendGrid's `{"errors": [{"message", "field"}]}` as one line; the raw body otherwise."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        errors = json.loads(text)["errors"]
        parts = [f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"]) for e in errors]
    except (ValueError, KeyError, TypeError):
        return text or "no response body"
    return "; ".join(parts) or text


def _retry_after(headers: Any) -> float:
    """Seconds to wait after a 429: Retry-After, else X-RateLimit-Reset (epoch s); 1 to 60."""
    headers = headers or {}
    seconds = 1.0
    try:
        if headers.get("Retry-After"):
            seconds = float(headers["Retry-After"])
        elif headers.get("X-RateLimit-Reset"):
            seconds = float(headers["X-RateLimit-Reset"]) - time.time()
    except (TypeError, ValueError):
        pass
    return min(max(seconds, 1.0), 60.0)


class SendGridAdapter:
    """Delivers order emails through SendGrid's Mail Send API, one call per delivery."""

    name: ClassVar[str] = "email"
    max_batch: ClassVar[int] = 25

    def __init__(self, *, timeout: float | None = None) -> None:
        self._timeout = timeout

    @property
    def timeout(self) -> float:
        """Seconds to wait for SendGrid's answer: the constructor's, else SENDGRID_TIMEOUT_SECONDS."""
        if self._timeout is not None:
            return self._timeout
        return settings.SENDGRID_TIMEOUT_SECONDS

    def _client(self) -> SendGridAPIClient:
        client = SendGridAPIClient(
            api_key=settings.SENDGRID_API_KEY,
            host=settings.SENDGRID_API_BASE.rstrip("/"),
        )
        client.client.timeout = self.timeout  # SendGridAPIClient has no timeout option of its own
        return client

    def deliver(self, requests: list[DeliveryRequest]) -> list[DeliveryOutcome]:
        client = self._client()
        from_email = settings.SENDGRID_FROM_EMAIL
        sandbox_mode = settings.SENDGRID_SANDBOX_MODE
        outcomes: list[DeliveryOutcome] = []
        backoff = 0.0
        for request in requests:
            if backoff:
                # Told to slow down: the rest of the batch waits for the next attempt.
                error = DeliveryError(
                    transient=True,
                    error_class="RateLimited",
                    message="not sent: SendGrid answered 429 earlier in this batch",
                    provider_status=429,
                )
                outcomes.append(DeliveryOutcome(request.delivery_id, error=error, backoff_seconds=backoff))
                continue
            outcome = self._deliver_one(client, request, from_email=from_email, sandbox_mode=sandbox_mode)
            backoff = outcome.backoff_seconds
            outcomes.append(outcome)
        return outcomes

    def probe(self) -> str:
        """One Mail Send call in sandbox mode: SendGrid checks the key and the message and
        answers 200 without sending anything (the sender writes to itself, so even a SendGrid
        that ignored sandbox mode would mail no customer)."""
        timeout = probe_timeout_seconds()
        client = self._client()
        client.client.timeout = timeout
        from_email = settings.SENDGRID_FROM_EMAIL
        mail = Mail(
            from_email=From(from_email),
            to_emails=To(from_email),
            subject="Synthetic probe (sandbox mode, never sent)",
            plain_text_content=PlainTextContent("A monitoring probe of the SendGrid integration.\n"),
        )
        mail.custom_arg = [CustomArg("probe", "true")]
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
        try:
            response = client.send(mail)
        except HTTPError as exc:
            error = DeliveryError.from_http(
                int(exc.status_code), _error_message(exc.body), error_class=type(exc).__name__
            )
            raise ProbeFailed.from_error(error) from exc
        except TimeoutError as exc:
            raise ProbeFailed(f"no answer within {timeout} s", error_class="Timeout") from exc
        except urllib.error.URLError as exc:
            error_class = "Timeout" if isinstance(exc.reason, TimeoutError) else "ConnectionError"
            raise ProbeFailed(f"cannot reach SendGrid: {exc.reason}", error_class=error_class) from exc
        except (http.client.HTTPException, OSError) as exc:
            raise ProbeFailed(
                f"connection to SendGrid failed: {exc!r}", error_class="ConnectionError"
            ) from exc
        return f"sandbox send accepted ({response.status_code})"

    def _deliver_one(
        self, client: SendGridAPIClient, request: DeliveryRequest, *, from_email: str, sandbox_mode: bool
    ) -> DeliveryOutcome:
        try:
            mail = build_mail(request, from_email=from_email, sandbox_mode=sandbox_mode)
        except (RenderError, SendGridException) as exc:
            error = DeliveryError(transient=False, error_class=type(exc).__name__, message=str(exc)[:1000])
            return DeliveryOutcome(request.delivery_id, error=error)
        try:
            response = client.send(mail)
        except HTTPError as exc:
            status = int(exc.status_code)
            error = DeliveryError.from_http(status, _error_message(exc.body), error_class=type(exc).__name__)
            backoff = _retry_after(exc.headers) if status == 429 else 0.0
            return DeliveryOutcome(request.delivery_id, error=error, backoff_seconds=backoff)
        except TimeoutError as exc:
            return self._no_answer(request, "Timeout", f"no answer within {self.timeout} s: {exc}")
        except urllib.error.URLError as exc:
            error_class = "Timeout" if isinstance(exc.reason, TimeoutError) else "ConnectionError"
            return self._no_answer(request, error_class, f"cannot reach SendGrid: {exc.reason}")
        except (http.client.HTTPException, OSError) as exc:
            return self._no_answer(request, "ConnectionError", f"connection to SendGrid failed: {exc!r}")
        message_id = response.headers.get("X-Message-Id") or ""
        if not message_id and sandbox_mode:
            message_id = f"sandbox-mode:{request.idempotency_key}"
        return DeliveryOutcome(request.delivery_id, external_id=message_id)

    @staticmethod
    def _no_answer(request: DeliveryRequest, error_class: str, message: str) -> DeliveryOutcome:
        error = DeliveryError(transient=True, error_class=error_class, message=message[:1000])
        return DeliveryOutcome(request.delivery_id, error=error)
