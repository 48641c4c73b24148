"""The email adapter: SendGrid v3 Mail Send, many emails per call, rendered from Django templates.

Each event type has a template pair in `templates/emails/` (`.txt` and `.html`, both sent).
A batch goes to SendGrid in as few calls as its limits allow (`plan_calls`): one
personalization per delivery, each with its own recipient, its own `subject`, its own
`custom_args` and header, and its own rendered bodies as `substitutions` for the two tags that
make up the call's shared `content`, so each recipient sees only their own order. An email whose
bodies are over SendGrid's 10,000 bytes of substitutions goes alone, its bodies as the content;
a call never carries one address twice (SendGrid refuses that) nor more than
SENDGRID_BATCH_SIZE (at most 1,000) emails. Every message carries its delivery's identity
twice, so a repeat can be recognised: in its personalization's `custom_args` (SendGrid echoes
them in its event webhook) and in an `X-Idempotency-Key` mail header (the recipient's copy).
SendGrid itself has no idempotency keys, so a retry after a lost answer may send the email
twice; the ledger keeps that to the rare lost-answer case.

Outcomes: 2xx → the `X-Message-Id` header as external id (`<id>.<n>`, n the personalization's
index, when the call carried several); a 400 or 413 for a call of several → each email is tried
alone, so one bad address fails only its own delivery; other HTTP errors → classified by status
for every email of the call (429 and 5xx transient, other 4xx permanent); no answer (refused,
reset, timeout) → transient. After a transient failure (a 429 with its Retry-After) the rest of
the batch is not tried. A payload that cannot be rendered → permanent, and nothing is sent.

Settings (read on every call, so tests can override them): `SENDGRID_API_KEY`,
`SENDGRID_API_BASE`, `SENDGRID_FROM_EMAIL`, `SENDGRID_SANDBOX_MODE`, `SENDGRID_BATCH_SIZE` and
`SENDGRID_TIMEOUT_SECONDS` (declared in `config/settings.py`).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.template.loader import render_to_string
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

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


# SendGrid's limits for one Mail Send request: its published request schema (sendgrid-oai) and
# its documented 400 errors (twilio.com/docs/sendgrid/api-reference/mail-send/errors).
MAX_PERSONALIZATIONS = 1000  # personalizations per request (schema: maxItems)
MAX_SUBSTITUTIONS_BYTES = 10_000  # substitutions of one personalization, keys and values
MAX_REQUEST_BYTES = 30 * 1024 * 1024  # a whole request
# The two substitution tags of a batched request: its content is just these, and each
# personalization substitutes its own rendered email for them.
TEXT_TAG = "%cis_text_body%"
HTML_TAG = "%cis_html_body%"
# What one email adds to a batched request at most: JSON escaping can triple a UTF-8 byte (a
# non-ASCII character as \uXXXX), plus the envelope (address, subject, custom_args, header).
_ENVELOPE_BYTES = 1024
_ESCAPING = 3


@dataclass(frozen=True, slots=True)
class Email:
    """One delivery, rendered: its personalization (recipient, subject, custom_args, header)
    and its own plain-text and HTML bodies."""

    request: DeliveryRequest
    personalization: dict[str, Any]
    text: str
    html: str
    substitutions_bytes: int

    @property
    def address(self) -> str:
        return self.personalization["to"][0]["email"].lower()

    @property
    def batchable(self) -> bool:
        """Can it travel as substitutions in a shared request? (SendGrid's 10,000-byte limit)"""
        return self.substitutions_bytes <= MAX_SUBSTITUTIONS_BYTES

    @property
    def request_bytes(self) -> int:
        return _ESCAPING * self.substitutions_bytes + _ENVELOPE_BYTES


def build_email(request: DeliveryRequest) -> Email:
    """The email of one delivery (raises RenderError when it cannot be made)."""
    subject, text, html = render_email(request)
    order = request.order
    try:
        recipient = {"email": str(order["email"])}
    except (KeyError, TypeError) as exc:
        raise RenderError(f"order payload has no email address: {exc!r}") from exc
    if order.get("customer_name"):
        recipient["name"] = str(order["customer_name"])
    personalization = {
        "to": [recipient],
        "subject": subject,
        # Per personalization, so each message of a shared request keeps its own identity
        # (SendGrid's event webhook echoes them).
        "custom_args": {
            "order_id": str(request.order_id),
            "event_type": request.event_type,
            "idempotency_key": request.idempotency_key,
            "delivery_id": str(request.delivery_id),
        },
        "headers": {IDEMPOTENCY_HEADER: request.idempotency_key},
    }
    size = len(TEXT_TAG) + len(HTML_TAG) + len(text.encode("utf-8")) + len(html.encode("utf-8"))
    return Email(request, personalization, text, html, size)


def mail_body(emails: list[Email], *, from_email: str, sandbox_mode: bool) -> dict[str, Any]:
    """The Mail Send request for these emails: one personalization each. One email carries its
    bodies as the content; several share a content of two substitution tags and each
    personalization substitutes its own bodies, so a recipient sees only their own order."""
    if len(emails) == 1:
        [email] = emails
        personalizations = [email.personalization]
        content = [
            {"type": "text/plain", "value": email.text},
            {"type": "text/html", "value": email.html},
        ]
    else:
        personalizations = [
            {**email.personalization, "substitutions": {TEXT_TAG: email.text, HTML_TAG: email.html}}
            for email in emails
        ]
        content = [{"type": "text/plain", "value": TEXT_TAG}, {"type": "text/html", "value": HTML_TAG}]
    body: dict[str, Any] = {
        "personalizations": personalizations,
        "from": {"email": from_email},
        # Required by the schema; each personalization's own subject overrides it.
        "subject": emails[0].personalization["subject"],
        "content": content,
    }
    if sandbox_mode:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


def plan_calls(emails: list[Email], *, per_call: int) -> list[list[Email]]:
    """Group emails into Mail Send requests within SendGrid's limits: at most `per_call` (and
    MAX_PERSONALIZATIONS) each, an address at most once in a request, the request's size under
    MAX_REQUEST_BYTES, and an email too big for substitutions alone in its own request."""
    per_call = max(1, min(per_call, MAX_PERSONALIZATIONS))
    calls: list[list[Email]] = []
    open_calls: list[tuple[list[Email], set[str], list[int]]] = []
    for email in emails:
        if not email.batchable or per_call == 1:
            calls.append([email])
            continue
        for members, addresses, size in open_calls:
            if (
                len(members) < per_call
                and email.address not in addresses
                and size[0] + email.request_bytes <= MAX_REQUEST_BYTES
            ):
                break
        else:
            members, addresses, size = [], set(), [0]
            open_calls.append((members, addresses, size))
            calls.append(members)
        members.append(email)
        addresses.add(email.address)
        size[0] += email.request_bytes
    return calls


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
    """Delivers order emails through SendGrid's Mail Send API, many emails per call."""

    name: ClassVar[str] = "email"
    # SendGrid's own limit; how many a dispatcher hands over at once is SENDGRID_BATCH_SIZE
    # (the "batch" of settings.INTEGRATIONS["email"]).
    max_batch: ClassVar[int] = MAX_PERSONALIZATIONS

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
        outcomes: list[DeliveryOutcome] = []
        emails: list[Email] = []
        for request in requests:
            try:
                emails.append(build_email(request))
            except RenderError as exc:
                error = DeliveryError(
                    transient=False, error_class=type(exc).__name__, message=str(exc)[:1000]
                )
                outcomes.append(DeliveryOutcome(request.delivery_id, error=error))
        if not emails:
            return outcomes
        client = self._client()
        from_email = settings.SENDGRID_FROM_EMAIL
        sandbox_mode = settings.SENDGRID_SANDBOX_MODE
        queue = deque(plan_calls(emails, per_call=settings.SENDGRID_BATCH_SIZE))
        halted: DeliveryOutcome | None = None  # why the rest of the batch is not sent
        while queue:
            call = queue.popleft()
            if halted is not None:
                outcomes += [replace(halted, delivery_id=email.request.delivery_id) for email in call]
                continue
            body = mail_body(call, from_email=from_email, sandbox_mode=sandbox_mode)
            message_id, error, backoff = self._post(client, body)
            if error is None:
                outcomes += [
                    DeliveryOutcome(
                        email.request.delivery_id,
                        external_id=_external_id(message_id, index, len(call), email, sandbox_mode),
                    )
                    for index, email in enumerate(call)
                ]
            elif error.provider_status in {400, 413} and len(call) > 1:
                # SendGrid refuses a request as a whole: try each email alone, so that one bad
                # address fails only its own delivery (each then classified as usual).
                queue.extendleft([email] for email in reversed(call))
            else:
                outcomes += [
                    DeliveryOutcome(email.request.delivery_id, error=error, backoff_seconds=backoff)
                    for email in call
                ]
                if error.transient:
                    # Told to slow down, or SendGrid is failing: the rest waits for the next attempt.
                    reason = "SendGrid answered 429" if error.provider_status == 429 else error.message
                    halted = DeliveryOutcome(
                        call[0].request.delivery_id,
                        error=DeliveryError(
                            transient=True,
                            error_class="RateLimited" if error.provider_status == 429 else error.error_class,
                            message=f"not sent: {reason} earlier in this batch"[:1000],
                            provider_status=error.provider_status,
                        ),
                        backoff_seconds=backoff,
                    )
        return outcomes

    def probe(self) -> str:
        """One Mail Send call in sandbox mode: SendGrid checks the key and the message and
        answers 200 without sending anything (the sender writes to itself, so even a SendGrid
        that ignored sandbox mode would mail no customer)."""
        timeout = probe_timeout_seconds()
        client = self._client()
        client.client.timeout = timeout
        from_email = settings.SENDGRID_FROM_EMAIL
        body = {
            "personalizations": [{"to": [{"email": from_email}], "custom_args": {"probe": "true"}}],
            "from": {"email": from_email},
            "subject": "Synthetic probe (sandbox mode, never sent)",
            "content": [{"type": "text/plain", "value": "A monitoring probe of the SendGrid integration.\n"}],
            "mail_settings": {"sandbox_mode": {"enable": True}},
        }
        try:
            response = client.send(body)
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

    def _post(
        self, client: SendGridAPIClient, body: dict[str, Any]
    ) -> tuple[str, DeliveryError | None, float]:
        """One Mail Send call: (X-Message-Id, None, 0) when accepted, else ("", why, backoff)."""
        try:
            response = client.send(body)
        except HTTPError as exc:
            status = int(exc.status_code)
            error = DeliveryError.from_http(status, _error_message(exc.body), error_class=type(exc).__name__)
            return "", error, _retry_after(exc.headers) if status == 429 else 0.0
        except TimeoutError as exc:
            return "", _no_answer("Timeout", f"no answer within {self.timeout} s: {exc}"), 0.0
        except urllib.error.URLError as exc:
            error_class = "Timeout" if isinstance(exc.reason, TimeoutError) else "ConnectionError"
            return "", _no_answer(error_class, f"cannot reach SendGrid: {exc.reason}"), 0.0
        except (http.client.HTTPException, OSError) as exc:
            return "", _no_answer("ConnectionError", f"connection to SendGrid failed: {exc!r}"), 0.0
        return response.headers.get("X-Message-Id") or "", None, 0.0


def _no_answer(error_class: str, message: str) -> DeliveryError:
    return DeliveryError(transient=True, error_class=error_class, message=message[:1000])


def _external_id(message_id: str, index: int, size: int, email: Email, sandbox_mode: bool) -> str:
    """The request's X-Message-Id, with `.<index of the personalization>` when the request
    carried several (the stand-in names its messages the same way)."""
    if not message_id:
        return f"sandbox-mode:{email.request.idempotency_key}" if sandbox_mode else ""
    return f"{message_id}.{index}" if size > 1 else message_id
