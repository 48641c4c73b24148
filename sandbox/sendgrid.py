"""A stand-in for SendGrid's v3 Mail Send API on 127.0.0.1, with an inbox page and fault injection.

No SendGrid emulator exists on any registry, so the project ships this one. It answers
`POST /v3/mail/send` the way SendGrid does: the bearer key is checked (401), a body over 30 MiB
gets 413, the body is validated (400, same `{"errors": [{"message", "field", "help"}]}`
envelope) against SendGrid's documented errors (with its messages: required fields, addresses,
at most 1,000 personalizations and 1,000 recipients, an address once per request, substitutions
and custom_args of a personalization at most 10,000 bytes, ...) and against its published
request schema (`sandbox/sendgrid_schema.py`, vendored from sendgrid/sendgrid-oai), and a good
request gets 202 with an empty body and an `X-Message-Id` header (200 and nothing kept when
`mail_settings.sandbox_mode.enable`). Like SendGrid, it makes one message of each
personalization, with that personalization's subject, substitutions (in subject and content),
custom_args and headers: a message's id is the X-Message-Id, with `.<index>` when the request
had several personalizations.

Standard library only (plus `jsonschema` for the schema, when installed), so it runs without
Django: in a thread of the test process (`SendGridSandbox(api_key=...).start()`), from
`manage.py sandbox_sendgrid`, or as `python -m sandbox.sendgrid --port 8425 --api-key SG.local-sandbox-key`.

Besides the API it serves, for people and tests:
- `GET /`: the inbox, every accepted message newest first (HTML).
- `GET /favicon.ico`: a small icon (sandbox/favicon.py), so a browser's tab has one.
- `GET /_sandbox/messages`: the same as JSON (`?to=address` filters by recipient).
- `GET /_sandbox/stats`: calls counted by outcome and by HTTP status.
- `GET|POST /_sandbox/faults`: `{"fail_next": N, "status": 503, "latency_ms": 0, "burst_429": N}`.
  The next `burst_429` calls get 429 (with SendGrid's rate-limit headers), then the next
  `fail_next` calls get `status`; `latency_ms` delays every Mail Send call until changed.
  Faulted calls are counted, never kept.
- `POST /_sandbox/reset`: forget messages, stats and faults.
Development and test tooling: never used in production.
"""

from __future__ import annotations

import argparse
import copy
import html
import json
import re
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from sandbox.favicon import CONTENT_TYPE as FAVICON_TYPE
from sandbox.favicon import SENDGRID as SENDGRID_COLOUR
from sandbox.favicon import favicon_ico
from sandbox.sendgrid_schema import schema_errors

MAIL_SEND_PATH = "/v3/mail/send"
# SendGrid's limits (its published request schema and its documented 400 errors).
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000  # to + cc + bcc over all personalizations of one request
MAX_SUBSTITUTIONS_BYTES = 10_000  # per personalization, keys and values
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_BODY_BYTES = 30 * 1024 * 1024  # SendGrid's limit for a whole Mail Send request
RATE_LIMIT = 600  # what the 429 headers announce per window
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."

# Loose on purpose (SendGrid accepts more than this), strict enough to reject what it rejects
# in practice: no "@", no domain, no dot in the domain, spaces, angle brackets.
_EMAIL = re.compile(
    r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
# Headers SendGrid sets itself and refuses in the `headers` object.
_RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)


def _error(message: str, field: str | None = None, help_anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": f"{_HELP}{help_anchor}" if help_anchor else None}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def is_valid_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 320 and bool(_EMAIL.match(value))


def _string_map_errors(value: Any, field: str) -> list[dict[str, Any]]:
    """custom_args and headers: an object whose values are all strings."""
    if not isinstance(value, dict):
        return [_error(f"Invalid type. Expected: object, given: {_json_type(value)}.", field, field)]
    return [
        _error(f"Invalid type. Expected: string, given: {_json_type(item)}.", f"{field}.{key}", field)
        for key, item in value.items()
        if not isinstance(item, str)
    ]


def _headers_errors(value: Any, field: str) -> list[dict[str, Any]]:
    errors = _string_map_errors(value, field)
    if isinstance(value, dict):
        errors += [
            _error(f"The header '{name}' is reserved and cannot be set.", f"{field}.{name}", "headers")
            for name in value
            if name.lower() in _RESERVED_HEADERS
        ]
    return errors


def _personalization_errors(index: int, item: Any) -> list[dict[str, Any]]:
    base = f"personalizations.{index}"
    if not isinstance(item, dict):
        return [_error("Each personalization must be an object.", base, "personalizations")]
    errors: list[dict[str, Any]] = []
    to = item.get("to")
    if not isinstance(to, list) or not to:
        errors.append(
            _error(
                "The to array is required for all personalization objects, and must have at least one "
                "email object with a valid email address.",
                f"{base}.to",
                "personalizations.to",
            )
        )
    seen: dict[str, str] = {}
    for kind in ("to", "cc", "bcc"):
        recipients = item.get(kind)
        if recipients is None or (kind == "to" and not isinstance(recipients, list)):
            continue
        if not isinstance(recipients, list):
            errors.append(
                _error(
                    f"Invalid type. Expected: array, given: {_json_type(recipients)}.",
                    f"{base}.{kind}",
                    f"personalizations.{kind}",
                )
            )
            continue
        for position, recipient in enumerate(recipients):
            address = recipient.get("email") if isinstance(recipient, dict) else None
            if not is_valid_email(address):
                errors.append(
                    _error(
                        "Does not contain a valid address.",
                        f"{base}.{kind}.{position}.email",
                        f"personalizations.{kind}",
                    )
                )
                continue
            key = address.lower()
            if key in seen:
                errors.append(
                    _error(
                        "Each email address in the personalization block should be unique between to, cc, "
                        f"and bcc. We found the first duplicate instance of [{address}] in the "
                        f"{base}.{kind} field.",
                        f"{base}.{kind}",
                        "personalizations",
                    )
                )
            seen[key] = kind
    if "subject" in item and (not isinstance(item["subject"], str) or not item["subject"]):
        errors.append(
            _error("The subject must be a string at least one character in length.", f"{base}.subject")
        )
    if "custom_args" in item:
        errors += _string_map_errors(item["custom_args"], f"{base}.custom_args")
        errors += _map_size_errors(
            item["custom_args"], f"{base}.custom_args", MAX_CUSTOM_ARGS_BYTES, "custom_args"
        )
    if "substitutions" in item:
        errors += _string_map_errors(item["substitutions"], f"{base}.substitutions")
        errors += _map_size_errors(
            item["substitutions"], f"{base}.substitutions", MAX_SUBSTITUTIONS_BYTES, "substitutions"
        )
    if "headers" in item:
        errors += _headers_errors(item["headers"], f"{base}.headers")
    return errors


def _map_size(value: dict[str, Any]) -> int:
    return sum(len(str(k).encode("utf-8")) + len(str(v).encode("utf-8")) for k, v in value.items())


def _map_size_errors(value: Any, field: str, limit: int, what: str) -> list[dict[str, Any]]:
    """custom_args and substitutions: at most `limit` bytes of keys and values together."""
    if not isinstance(value, dict) or _map_size(value) <= limit:
        return []
    return [_error(f"The {what} of a personalization may not exceed {limit:,} bytes.", field, what)]


def _recipient_errors(personalizations: list[Any]) -> list[dict[str, Any]]:
    """Across personalizations: at most MAX_RECIPIENTS in all, and each address once."""
    errors: list[dict[str, Any]] = []
    total = 0
    first_seen: dict[str, int] = {}
    for index, item in enumerate(personalizations):
        if not isinstance(item, dict):
            continue
        mine: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            recipients = item.get(kind)
            if not isinstance(recipients, list):
                continue
            total += len(recipients)
            for recipient in recipients:
                address = recipient.get("email") if isinstance(recipient, dict) else None
                if not isinstance(address, str):
                    continue
                key = address.lower()
                if key in first_seen and first_seen[key] != index and key not in mine:
                    errors.append(
                        _error(
                            "Each unique email address in the personalizations array should only be "
                            f"included once. You have included [{address}] more than once.",
                            f"personalizations.{index}.{kind}",
                            "personalizations",
                        )
                    )
                first_seen.setdefault(key, index)
                mine.add(key)
    if total > MAX_RECIPIENTS:
        errors.insert(
            0,
            _error(
                f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per request.",
                "personalizations",
                "personalizations",
            ),
        )
    return errors


def _content_errors(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        return [
            _error(
                "Unless a valid template_id is provided, the content parameter is required. There must be "
                "at least one defined content block. We typically suggest both text/plain and text/html "
                "blocks are included, but only one block is required.",
                "content",
                "content",
            )
        ]
    errors: list[dict[str, Any]] = []
    types: list[str] = []
    for index, block in enumerate(content):
        block = block if isinstance(block, dict) else {}
        kind = block.get("type")
        if not isinstance(kind, str) or not kind or any(c in kind for c in ";\r\n"):
            errors.append(
                _error(
                    "The content type cannot contain ';', or CRLF characters, and must be at least one "
                    "character in length.",
                    f"content.{index}.type",
                    "content.type",
                )
            )
        else:
            types.append(kind.lower())
        value = block.get("value")
        if not isinstance(value, str) or not value:
            errors.append(
                _error(
                    "The content value must be a string at least one character in length.",
                    f"content.{index}.value",
                    "content.value",
                )
            )
    order = {"text/plain": 0, "text/html": 1}
    ranks = [order.get(kind, 2) for kind in types]
    if ranks != sorted(ranks):
        errors.append(
            _error(
                "If present, text/plain content must be first, followed by text/html, followed by any "
                "other content.",
                "content",
                "content.type",
            )
        )
    return errors


def validate_mail_send(body: Any) -> list[dict[str, Any]]:
    """SendGrid's validation errors for a Mail Send body; an empty list when it is good: its
    documented errors (with its messages), then whatever else breaks its published request
    schema (sandbox/sendgrid_schema.py) on a field not already reported."""
    if not isinstance(body, dict):
        return [_error("Bad Request")]
    errors = _documented_errors(body)
    reported = {error["field"] for error in errors}
    for problem in schema_errors(body):
        field = problem["field"]
        if any(field == seen or (field or "").startswith(f"{seen}.") for seen in reported if seen):
            continue
        errors.append(_error(f"{field or 'body'} {problem['message']}.", field))
        reported.add(field)
    return errors


def _documented_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations per API "
                f"request. You have provided {len(personalizations)} personalizations. Please consider "
                "splitting this into multiple requests and resending your request.",
                "personalizations",
                "personalizations",
            )
        )
    for index, item in enumerate(personalizations[:MAX_PERSONALIZATIONS]):
        errors += _personalization_errors(index, item)
    errors += _recipient_errors(personalizations)

    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that requires the "
                'email parameter, but may also contain a name parameter.  e.g. {"email" : '
                '"example@example.com"}  or {"email" : "example@example.com", "name" : "Example Recipient"}.',
                "from.email",
                "from",
            )
        )
    elif not is_valid_email(sender["email"]):
        errors.append(_error("The from email does not contain a valid address.", "from.email", "from"))
    reply_to = body.get("reply_to")
    if reply_to is not None and not (isinstance(reply_to, dict) and is_valid_email(reply_to.get("email"))):
        errors.append(
            _error("The reply_to email does not contain a valid address.", "reply_to.email", "reply_to")
        )

    if reply_to is not None and body.get("reply_to_list") is not None:
        errors.append(
            _error(
                "The reply_to and reply_to_list fields are mutually exclusive: use one of them.",
                "reply_to_list",
                "reply_to_list",
            )
        )

    template_id = body.get("template_id")
    if template_id is not None and (not isinstance(template_id, str) or not template_id):
        errors.append(_error("The template_id must be a string.", "template_id", "template_id"))
    has_template = bool(template_id)
    if isinstance(template_id, str) and template_id.startswith("d-"):
        errors += [
            _error(
                "Substitutions may not be used with dynamic templating",
                f"personalizations.{index}.substitutions",
                "personalizations.substitutions",
            )
            for index, item in enumerate(personalizations)
            if isinstance(item, dict) and item.get("substitutions")
        ]
    subject = body.get("subject")
    every_personalization_has_subject = bool(personalizations) and all(
        isinstance(item, dict) and item.get("subject") for item in personalizations
    )
    if subject is not None and (not isinstance(subject, str) or not subject):
        errors.append(_error("The subject must be a string at least one character in length.", "subject"))
    elif subject is None and not has_template and not every_personalization_has_subject:
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a template with "
                "a subject defined or if every personalization has a subject defined.",
                "subject",
                "subject",
            )
        )
    if not has_template or "content" in body:
        errors += _content_errors(body.get("content"))

    if "custom_args" in body:
        errors += _string_map_errors(body["custom_args"], "custom_args")
    if "headers" in body:
        errors += _headers_errors(body["headers"], "headers")
    categories = body.get("categories")
    if categories is not None and (
        not isinstance(categories, list)
        or len(categories) > 10
        or not all(isinstance(item, str) and item for item in categories)
    ):
        errors.append(
            _error("Categories must be a list of at most 10 non-empty strings.", "categories", "categories")
        )
    mail_settings = body.get("mail_settings")
    if mail_settings is not None and not isinstance(mail_settings, dict):
        errors.append(
            _error(
                f"Invalid type. Expected: object, given: {_json_type(mail_settings)}.",
                "mail_settings",
                "mail_settings",
            )
        )
    sandbox = mail_settings.get("sandbox_mode") if isinstance(mail_settings, dict) else None
    if sandbox is not None and not (isinstance(sandbox, dict) and isinstance(sandbox.get("enable"), bool)):
        errors.append(
            _error(
                "The sandbox mode enable param should be a boolean value.",
                "mail_settings.sandbox_mode.enable",
                "mail_settings.sandbox_mode.enable",
            )
        )
    return errors


def _is_sandbox_mode(body: dict[str, Any]) -> bool:
    mail_settings = body.get("mail_settings")
    if not isinstance(mail_settings, dict):
        return False
    sandbox = mail_settings.get("sandbox_mode")
    return isinstance(sandbox, dict) and sandbox.get("enable") is True


def _substitute(text: str, substitutions: dict[str, str]) -> str:
    """Every substitution tag in `text` replaced by its value, in one pass (a value is not
    searched again for tags)."""
    if not substitutions or not text:
        return text
    tags = sorted(substitutions, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(tag) for tag in tags))
    return pattern.sub(lambda match: substitutions[match.group(0)], text)


def _messages_of(message_id: str, body: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    """One accepted request as the messages SendGrid makes of it: one per personalization, with
    its own subject, substitutions, custom_args and headers applied. Each message's `body` is
    that message alone (its personalization, its subject and content substituted, and the
    custom_args that apply to it, the request's overridden by the personalization's, at the top
    level too), so what one recipient got never shows another's; `request` says which call it
    came from."""
    personalizations = body["personalizations"]
    received_at = datetime.now(UTC).isoformat()
    count = len(personalizations)
    messages = []
    for index, personalization in enumerate(personalizations):
        substitutions = personalization.get("substitutions") or {}
        subject = _substitute(personalization.get("subject") or body.get("subject", ""), substitutions)
        content = [
            {**block, "value": _substitute(block["value"], substitutions)}
            for block in body.get("content", [])
        ]
        by_type = {block["type"].lower(): block["value"] for block in content}
        alone = {
            key: value for key, value in body.items() if key not in {"personalizations", "subject", "content"}
        }
        alone = {"personalizations": [personalization], "subject": subject, **alone}
        if content:
            alone["content"] = content
        custom_args = {**body.get("custom_args", {}), **personalization.get("custom_args", {})}
        if custom_args:
            alone["custom_args"] = custom_args  # what applies to it, as one place to read
        messages.append(
            {
                "id": message_id if count == 1 else f"{message_id}.{index}",
                "received_at": received_at,
                "from": personalization.get("from") or body["from"],
                "to": [r["email"] for r in personalization.get("to", [])],
                "cc": [r["email"] for r in personalization.get("cc", [])],
                "bcc": [r["email"] for r in personalization.get("bcc", [])],
                "subject": subject,
                "text": by_type.get("text/plain", ""),
                "html": by_type.get("text/html", ""),
                "custom_args": custom_args,
                "mail_headers": {**body.get("headers", {}), **personalization.get("headers", {})},
                "categories": body.get("categories", []),
                "template_id": body.get("template_id"),
                "request_headers": headers,
                "request": {"x_message_id": message_id, "personalizations": count, "index": index},
                "body": alone,
            }
        )
    return messages


class _State:
    """Messages, counters and faults, shared by the handler threads."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.messages: list[dict[str, Any]] = []
        self.by_outcome: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.fail_next = 0
        self.fail_status = 503
        self.latency_ms = 0
        self.burst_429 = 0

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.by_outcome.clear()
            self.by_status.clear()
            self.fail_next = 0
            self.fail_status = 503
            self.latency_ms = 0
            self.burst_429 = 0

    def faults(self) -> dict[str, int]:
        return {
            "fail_next": self.fail_next,
            "status": self.fail_status,
            "latency_ms": self.latency_ms,
            "burst_429": self.burst_429,
        }

    def set_faults(self, changes: dict[str, Any]) -> dict[str, int]:
        """Apply `changes` (any of the fault keys); raises ValueError for anything else."""
        unknown = set(changes) - {"fail_next", "status", "latency_ms", "burst_429"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        for key, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a whole number >= 0")
        status = changes.get("status", self.fail_status)
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        with self.lock:
            self.fail_next = changes.get("fail_next", self.fail_next)
            self.fail_status = status
            self.latency_ms = changes.get("latency_ms", self.latency_ms)
            self.burst_429 = changes.get("burst_429", self.burst_429)
            return self.faults()

    def take_fault(self) -> int | None:
        """The status this call must fail with, if a fault is armed (429 bursts first)."""
        with self.lock:
            if self.burst_429:
                self.burst_429 -= 1
                return 429
            if self.fail_next:
                self.fail_next -= 1
                return self.fail_status
            return None

    def count(self, outcome: str, status: int) -> None:
        with self.lock:
            self.by_outcome[outcome] += 1
            self.by_status[status] += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": sum(self.by_status.values()),
                "accepted": self.by_outcome["accepted"],
                "sandbox_mode": self.by_outcome["sandbox_mode"],
                "rejected": self.by_outcome["rejected"],
                "unauthorized": self.by_outcome["unauthorized"],
                "faulted": self.by_outcome["faulted"],
                "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
                "messages": len(self.messages),
                "faults": self.faults(),
            }


class _Handler(BaseHTTPRequestHandler):
    server_version = "SendGridSandbox/1"

    def version_string(self) -> str:
        return self.server_version

    state: _State  # set on the subclass made for each server
    quiet = True

    # --- plumbing -------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if not self.quiet:
            super().log_message(format, *args)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any, *, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _errors(
        self, status: int, errors: list[dict[str, Any]], *, headers: dict[str, str] | None = None
    ) -> None:
        self._json(status, {"errors": errors}, headers=headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # --- routing --------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(HTTPStatus.OK, self._inbox_page().encode(), content_type="text/html; charset=utf-8")
        elif url.path == "/favicon.ico":
            self._send(HTTPStatus.OK, favicon_ico(SENDGRID_COLOUR), content_type=FAVICON_TYPE)
        elif url.path == "/_sandbox/messages":
            recipient = (parse_qs(url.query).get("to") or [""])[0].lower()
            with self.state.lock:
                messages = copy.deepcopy(self.state.messages)
            if recipient:
                messages = [m for m in messages if recipient in (a.lower() for a in m["to"])]
            self._json(HTTPStatus.OK, {"messages": messages})
        elif url.path == "/_sandbox/stats":
            self._json(HTTPStatus.OK, self.state.stats())
        elif url.path == "/_sandbox/faults":
            with self.state.lock:
                self._json(HTTPStatus.OK, self.state.faults())
        elif url.path.startswith("/v3/"):
            self._v3_other(url.path)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == MAIL_SEND_PATH:
            self._mail_send()
        elif path == "/_sandbox/faults":
            try:
                changes = json.loads(self._read_body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("send a JSON object")
                faults = self.state.set_faults(changes)
            except ValueError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            else:
                self._json(HTTPStatus.OK, faults)
        elif path == "/_sandbox/reset":
            self._read_body()
            self.state.reset()
            self._json(HTTPStatus.OK, {"reset": True})
        elif path.startswith("/v3/"):
            self._v3_other(path)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_PUT(self) -> None:
        self._v3_other(urlsplit(self.path).path)

    do_PATCH = do_PUT
    do_DELETE = do_PUT

    def _v3_other(self, path: str) -> None:
        self._read_body()
        if path == MAIL_SEND_PATH:
            self._errors(HTTPStatus.METHOD_NOT_ALLOWED, [_error("method not allowed")])
        else:
            self._errors(HTTPStatus.NOT_FOUND, [_error("resource not found")])

    # --- the API --------------------------------------------------------------------------
    def _mail_send(self) -> None:
        state = self.state
        raw = self._read_body()
        latency = state.latency_ms
        if latency:
            state.stopping.wait(latency / 1000)
        status = state.take_fault()
        if status is not None:
            state.count("faulted", status)
            headers = self._rate_limit_headers() if status == 429 else None
            message = "too many requests" if status == 429 else HTTPStatus(status).phrase
            self._errors(status, [_error(message)], headers=headers)
            return

        authorization = self.headers.get("Authorization", "")
        if not authorization:
            state.count("unauthorized", 401)
            self._errors(HTTPStatus.UNAUTHORIZED, [_error("authorization required")])
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), state.api_key):
            state.count("unauthorized", 401)
            self._errors(
                HTTPStatus.UNAUTHORIZED,
                [_error("The provided authorization grant is invalid, expired, or revoked")],
            )
            return
        if len(raw) > MAX_BODY_BYTES:
            state.count("rejected", 413)
            self._errors(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, [_error("Payload Too Large")])
            return
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        errors = validate_mail_send(body)
        if errors:
            state.count("rejected", 400)
            self._errors(HTTPStatus.BAD_REQUEST, errors)
            return

        body = cast(dict[str, Any], body)  # validate_mail_send accepts only objects
        if _is_sandbox_mode(body):
            state.count("sandbox_mode", 200)
            self._send(HTTPStatus.OK)
            return
        message_id = secrets.token_urlsafe(16)
        headers = {name: value for name, value in self.headers.items() if name.lower() != "authorization"}
        headers["Authorization"] = "Bearer [redacted]"
        with state.lock:
            state.messages.extend(_messages_of(message_id, body, headers))
        state.count("accepted", 202)
        self._send(HTTPStatus.ACCEPTED, headers={"X-Message-Id": message_id})

    @staticmethod
    def _rate_limit_headers() -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) + 1),
        }

    # --- the inbox page -------------------------------------------------------------------
    def _inbox_page(self) -> str:
        with self.state.lock:
            messages = copy.deepcopy(self.state.messages)
        stats = self.state.stats()
        e = html.escape
        items = []
        for message in reversed(messages):
            custom_args = "".join(
                f"<li><code>{e(key)}</code> = <code>{e(value)}</code></li>"
                for key, value in message["custom_args"].items()
            )
            html_part = (
                f'<iframe sandbox="" title="HTML body" srcdoc="{e(message["html"], quote=True)}"></iframe>'
                if message["html"]
                else "<p><em>no HTML part</em></p>"
            )
            request = message["request"]
            part = (
                f" · personalization {request['index'] + 1} of {request['personalizations']} of one request"
                if request["personalizations"] > 1
                else ""
            )
            items.append(
                f"""<article class="message" id="{e(message["id"])}">
  <h2>{e(message["subject"])}</h2>
  <p class="meta">To <strong>{e(", ".join(message["to"]))}</strong> · from {e(message["from"].get("email", ""))}
    · {e(message["received_at"])} · message id <code>{e(message["id"])}</code>{part}</p>
  <details><summary>custom_args</summary><ul>{custom_args}</ul></details>
  <details open><summary>HTML</summary>{html_part}</details>
  <details><summary>Plain text</summary><pre>{e(message["text"])}</pre></details>
</article>"""
            )
        faults = stats["faults"]
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SendGrid sandbox inbox</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1f2328; }}
 .message {{ border: 1px solid #d0d7de; border-radius: 6px; padding: 0 1rem 1rem; margin: 1rem 0; }}
 .meta {{ color: #57606a; font-size: .9rem; }}
 iframe {{ width: 100%; height: 24rem; border: 1px solid #d0d7de; }}
 pre {{ white-space: pre-wrap; background: #f6f8fa; padding: .5rem; }}
</style></head>
<body>
<h1>SendGrid sandbox inbox</h1>
<p>{len(messages)} message(s) accepted · {stats["calls"]} call(s) to <code>{MAIL_SEND_PATH}</code>
 · faults armed: fail_next={faults["fail_next"]} (status {faults["status"]}), burst_429={faults["burst_429"]},
 latency_ms={faults["latency_ms"]} · <a href="/">refresh</a> · <a href="/_sandbox/messages">JSON</a></p>
{"".join(items) or "<p>No messages yet.</p>"}
</body></html>"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (its timeout, during injected latency) is not an error here."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class SendGridSandbox:
    """The stand-in on 127.0.0.1, served from a daemon thread of this process."""

    def __init__(self, *, api_key: str, port: int = 0, quiet: bool = True) -> None:
        self._state = _State(api_key)
        self._port = port
        self._quiet = quiet
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    @property
    def api_key(self) -> str:
        return self._state.api_key

    def start(self) -> str:
        """Bind and serve; returns the base URL (`SENDGRID_API_BASE`)."""
        if self._server is not None:
            raise RuntimeError("the SendGrid sandbox is already running")
        handler = type("SendGridSandboxHandler", (_Handler,), {"state": self._state, "quiet": self._quiet})
        self._state.stopping.clear()
        server = _Server(("127.0.0.1", self._port), handler)
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="sendgrid-sandbox", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and free the port (calls waiting on injected latency end at once)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._state.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop (the process form; call from the main thread)."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stop.wait(0.2):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def reset(self) -> None:
        self._state.reset()

    def messages(self) -> list[dict[str, Any]]:
        """Every accepted message, oldest first (copies)."""
        with self._state.lock:
            return copy.deepcopy(self._state.messages)

    def stats(self) -> dict[str, Any]:
        return self._state.stats()

    def set_faults(self, **changes: int) -> dict[str, int]:
        """Same as `POST /_sandbox/faults`: fail_next, status, latency_ms, burst_429."""
        return self._state.set_faults(changes)

    def __enter__(self) -> SendGridSandbox:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SendGrid v3 Mail Send stand-in on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8425)
    parser.add_argument("--api-key", default="SG.local-sandbox-key")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    sandbox = SendGridSandbox(api_key=args.api_key, port=args.port, quiet=not args.verbose)
    url = sandbox.start()
    print(f"SendGrid sandbox on {url} (inbox: {url}/)", flush=True)
    sandbox.serve_until_signalled()


if __name__ == "__main__":
    main()
