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

Development and test tooling only.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

TRANSACT_WRITE = "DynamoDB_20120810.TransactWriteItems"
TOKEN_SECONDS = 600  # how long DynamoDB keeps a ClientRequestToken


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
                if environ.get("PATH_INFO") == "/moto-api/reset":
                    applied.clear()
                if environ.get("HTTP_X_AMZ_TARGET") != TRANSACT_WRITE:
                    return list(app(environ, start_response))
                return _transact_write(app, environ, start_response, applied)

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
