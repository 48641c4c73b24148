"""moto's AWS stand-in server, one request at a time, with DynamoDB's request tokens.

moto's DynamoDB is not thread-safe: a transaction deep-copies the table, checks its conditions,
writes, and on failure puts the copy back, all without a lock, so a concurrent request can slip
between check and write or be undone by that restore (two relays at once drew an HTTP 500,
"dictionary changed size during iteration"). Real DynamoDB makes each request atomic;
serialising requests gives that guarantee while the clients still race.

moto also ignores `TransactWriteItems`' `ClientRequestToken`, which real DynamoDB honours for
ten minutes: a repeat with the same token and the same request (botocore resends after a read
timeout) "returns successfully without making any changes", and the same token with another
request is refused with `IdempotentParameterMismatchException`. Without it, a transaction
that landed but whose answer came too late looked like a conflict on its retry. This server
keeps the tokens of the transactions it applied, as DynamoDB does.

For people it serves an SNS inbox, since moto's root answers a browser with S3's XML and its
dashboard (`/moto-api/`) loads its scripts from a CDN:
- `GET /_inbox/` (and a browser's `GET /`, redirected there): every message published to any
  topic of this process's moto, newest first, with its topic, subject, time, message id, group id,
  message attributes and body (HTML, escaped: messages are untrusted). `?topic=name` keeps one
  topic's (`cis-order-events`, `cis-ops-alerts`).
- `GET /_inbox/messages`: the same as JSON (`?topic=` too).
- `GET /favicon.ico`: a small icon (sandbox/favicon.py).
moto keeps each topic's published messages (`Topic.sent_notifications`) but not when they were
published: this server notes the time of each new one after every request it serves.

Development and test tooling only.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from sandbox import favicon

TRANSACT_WRITE = "DynamoDB_20120810.TransactWriteItems"
TOKEN_SECONDS = 600  # how long DynamoDB keeps a ClientRequestToken
INBOX_PATH = "/_inbox/"  # "_" is not allowed in an S3 bucket name: no bucket is hidden by these
INBOX_JSON_PATH = "/_inbox/messages"
INBOX_PAGE_LIMIT = 500  # messages shown on the HTML page (the JSON has them all)


@dataclass(frozen=True, slots=True)
class _Applied:
    at: float
    fingerprint: str
    status: str
    headers: list[tuple[str, str]]
    body: list[bytes]


class SerialMotoServer:
    def __init__(self, *, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer  # a development dependency

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> str:
        self.server.start()
        wsgi_server = self.server._server  # werkzeug's server: each request calls its `app`
        app, lock = wsgi_server.app, threading.Lock()
        applied: dict[str, _Applied] = {}

        def serial_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            with lock:
                own = _sandbox_page(environ, start_response)
                if own is not None:
                    return own
                if environ.get("PATH_INFO") == "/moto-api/reset":
                    applied.clear()
                    SNS_LOG.clear()
                try:
                    if environ.get("HTTP_X_AMZ_TARGET") != TRANSACT_WRITE:
                        return list(app(environ, start_response))
                    return _transact_write(app, environ, start_response, applied)
                finally:
                    SNS_LOG.notice()

        wsgi_server.app = serial_app
        host, port = self.server.get_host_and_port()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.stop()


def _transact_write(
    app: Any, environ: dict[str, Any], start_response: Any, applied: dict[str, _Applied]
) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)
    try:
        request = json.loads(body)
    except ValueError:
        return list(app(environ, start_response))
    token = request.pop("ClientRequestToken", None) if isinstance(request, dict) else None
    if not token:
        return list(app(environ, start_response))
    now = time.monotonic()
    for old in [key for key, seen in applied.items() if now - seen.at > TOKEN_SECONDS]:
        del applied[old]
    fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    seen = applied.get(token)
    if seen is not None:
        if seen.fingerprint != fingerprint:
            error = {
                "__type": "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                "message": "Request parameters do not match the original request for this token",
            }
            start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0")])
            return [json.dumps(error).encode()]
        start_response(seen.status, seen.headers)
        return seen.body
    answer: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer.update(status=status, headers=headers)
        return start_response(status, headers, exc_info)

    chunks = list(app(environ, capture))
    if str(answer.get("status", "")).startswith("200"):
        applied[token] = _Applied(now, fingerprint, answer["status"], list(answer["headers"]), chunks)
    return chunks


# --- The SNS inbox ---------------------------------------------------------------------------


def _topics() -> list[Any]:
    """Every SNS topic of this process's moto (all accounts and regions)."""
    from moto.sns.models import sns_backends

    return [
        topic
        for account in list(sns_backends.values())
        for backend in list(account.values())
        for topic in list(backend.topics.values())
    ]


class SnsLog:
    """When each message published to SNS was first seen, and in which order.

    moto's state is one per process, whichever of its servers is asked, so this log is too
    (`SNS_LOG`). `notice()` runs after every request: a topic's `sent_notifications` only grows
    (until a reset replaces the topic and its list), so it looks only at what is new.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}  # message id -> (time, sequence)
        self._counted: dict[str, tuple[list[Any], int]] = {}  # topic ARN -> (its list, length seen)
        self._sequence = 0

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._counted.clear()

    def notice(self) -> None:
        now = time.time()
        with self._lock:
            for topic in _topics():
                sent = topic.sent_notifications
                known, counted = self._counted.get(topic.arn, (None, 0))
                if known is not sent:
                    counted = 0
                length = len(sent)
                for note in sent[counted:length]:
                    self._sequence += 1
                    self._seen.setdefault(note[0], (now, self._sequence))
                self._counted[topic.arn] = (sent, length)

    def messages(self, *, topic_name: str = "") -> list[dict[str, Any]]:
        """Every published message, newest first, as JSON-ready dicts."""
        self.notice()
        found = []
        with self._lock:
            for topic in _topics():
                if topic_name and topic.name != topic_name:
                    continue
                for position, (message_id, body, subject, attributes, group_id) in enumerate(
                    list(topic.sent_notifications)
                ):
                    at, sequence = self._seen.get(message_id, (0.0, 0))
                    found.append(
                        (
                            (sequence, position),
                            {
                                "message_id": message_id,
                                "topic": topic.name,
                                "topic_arn": topic.arn,
                                "subject": subject,
                                "message": body,
                                "message_attributes": {
                                    name: {"type": value.get("Type"), "value": value.get("Value")}
                                    for name, value in (attributes or {}).items()
                                },
                                "message_group_id": group_id,
                                "published_at": (
                                    datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
                                    if at
                                    else None
                                ),
                            },
                        )
                    )
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [message for _, message in found]

    def topic_names(self) -> list[str]:
        return sorted({topic.name for topic in _topics()})


SNS_LOG = SnsLog()


def _sandbox_page(environ: dict[str, Any], start_response: Any) -> list[bytes] | None:
    """The inbox, its JSON and the icon; a browser's look at `/` goes to the inbox. None: moto's."""
    if environ.get("REQUEST_METHOD") not in {"GET", "HEAD"}:
        return None
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    topic_name = (query.get("topic") or [""])[0]
    if path == "/favicon.ico":
        return _answer(start_response, favicon.favicon_ico(favicon.AWS), favicon.CONTENT_TYPE)
    if path in {INBOX_PATH, INBOX_PATH.rstrip("/")}:
        page = _inbox_html(SNS_LOG.messages(topic_name=topic_name), SNS_LOG.topic_names(), topic_name)
        return _answer(start_response, page.encode(), "text/html; charset=utf-8")
    if path == INBOX_JSON_PATH:
        body = json.dumps({"messages": SNS_LOG.messages(topic_name=topic_name)}).encode()
        return _answer(start_response, body, "application/json")
    # A person's browser at the root: no AWS signature, and it asks for HTML (S3's ListBuckets
    # is the only API call there with GET, and it is always signed).
    if (
        path == "/"
        and "text/html" in environ.get("HTTP_ACCEPT", "")
        and not environ.get("HTTP_AUTHORIZATION")
        and "X-Amz-Signature" not in environ.get("QUERY_STRING", "")
    ):
        start_response("302 Found", [("Location", INBOX_PATH), ("Content-Length", "0")])
        return [b""]
    return None


def _answer(start_response: Any, body: bytes, content_type: str) -> list[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
    )
    return [body]


def _heading(message: dict[str, Any]) -> str:
    """The subject; without one (order events have none), the `event_type` attribute."""
    event_type = message["message_attributes"].get("event_type", {}).get("value")
    return message["subject"] or (f"{event_type} (no subject)" if event_type else "(no subject)")


def _when(published_at: str | None) -> str:
    """ "2026-12-01T15:56:09.741+00:00" as "2026-12-01 15:56:09.741 UTC"."""
    return published_at.replace("T", " ").replace("+00:00", " UTC") if published_at else "time unknown"


def _pretty(body: str) -> str:
    """A JSON body indented for reading; anything else as it came."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


def _inbox_html(messages: list[dict[str, Any]], topic_names: list[str], topic_name: str) -> str:
    e = html.escape
    shown = messages[:INBOX_PAGE_LIMIT]
    items = []
    for message in shown:
        attributes = "".join(
            f"<tr><th scope='row'><code>{e(name)}</code></th><td>{e(str(value['type']))}</td>"
            f"<td><code>{e(str(value['value']))}</code></td></tr>"
            for name, value in sorted(message["message_attributes"].items())
        )
        group = (
            f" · group <code>{e(message['message_group_id'])}</code>" if message["message_group_id"] else ""
        )
        items.append(
            f"""<article class="message" id="m-{e(message["message_id"])}">
  <h2>{e(_heading(message))}</h2>
  <p class="meta">Topic <strong class="topic">{e(message["topic"])}</strong>
    · {e(_when(message["published_at"]))} · MessageId <code>{e(message["message_id"])}</code>{group}</p>
  <table class="attributes"><caption>Message attributes</caption>
    <thead><tr><th scope="col">Name</th><th scope="col">Type</th><th scope="col">Value</th></tr></thead>
    <tbody>{attributes or "<tr><td colspan='3'><em>none</em></td></tr>"}</tbody></table>
  <details open><summary>Message</summary><pre>{e(_pretty(message["message"]))}</pre></details>
</article>"""
        )
    filters = " · ".join(
        [
            '<a href="/_inbox/">all topics</a>' if topic_name else "<strong>all topics</strong>",
            *(
                f"<strong>{e(name)}</strong>"
                if name == topic_name
                else f'<a href="/_inbox/?topic={e(name, quote=True)}">{e(name)}</a>'
                for name in topic_names
            ),
        ]
    )
    more = (
        f"<p>Showing the newest {len(shown)}; the JSON has all {len(messages)}.</p>"
        if len(messages) > len(shown)
        else ""
    )
    json_link = INBOX_JSON_PATH + (f"?topic={e(topic_name, quote=True)}" if topic_name else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>SNS sandbox inbox</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1f2328; }}
 .message {{ border: 1px solid #d0d7de; border-radius: 6px; padding: 0 1rem 1rem; margin: 1rem 0; }}
 .meta {{ color: #57606a; font-size: .9rem; overflow-wrap: anywhere; }}
 table {{ border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }}
 caption {{ text-align: left; font-weight: 600; padding-bottom: .25rem; }}
 td, th {{ border: 1px solid #d0d7de; padding: .2rem .5rem; text-align: left; vertical-align: top; }}
 thead th {{ background: #f6f8fa; }}
 pre {{ white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f8fa; padding: .5rem; }}
</style></head>
<body>
<h1>SNS sandbox inbox</h1>
<p>{len(messages)} message(s) published{f" to <strong>{e(topic_name)}</strong>" if topic_name else ""}
 · {filters} · <a href="{e(INBOX_PATH + (f"?topic={topic_name}" if topic_name else ""), quote=True)}">refresh</a>
 · <a href="{json_link}">JSON</a></p>
{more}{"".join(items) or "<p>No messages yet.</p>"}
</body></html>"""
