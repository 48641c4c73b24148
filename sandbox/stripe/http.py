"""HTTP behaviour of Stripe that localstripe lacks: request ids, error bodies, idempotency keys.

Middlewares, outermost first (localstripe's own come after them):

- `request_context`: a `Request-Id` (req_...) and `Stripe-Version` on every `/v1` answer; the
  request id and idempotency key are what the events the request causes carry as `request`.
- `idempotency`: Stripe's idempotent requests (docs.stripe.com/api/idempotent_requests). A POST
  with an `Idempotency-Key` stores its status and body, per API key (the Authorization header),
  for 24 hours; the same key with the same endpoint and parameters replays them with
  `Idempotent-Replayed: true` and `Original-Request`; other parameters or another endpoint are a
  400 `idempotency_error`; a key whose first request is still running is a 409
  `idempotency_error` (`idempotency_key_in_use`). As at Stripe, a request refused before it
  ran (any 4xx but a 402 card error) stores nothing.
- `stripe_errors`: localstripe's error bodies in Stripe's form (`card_error` for 402s,
  `resource_missing` "No such payment_intent: 'pi_...'", `parameter_unknown` "Received unknown
  parameter: x", a `doc_url` for every code); unknown URLs and crashes as Stripe's JSON errors.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.stripe import compat
from sandbox.stripe.events import STATE, new_id

logger = logging.getLogger("sandbox.stripe")

IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60
_OBJECT_PATH = re.compile(r"^/v1/(?P<kind>[a-z_]+)s/(?P<id>[A-Za-z0-9_]+)(?:/|$)")


def stripe_error(status: int, error: dict[str, Any]) -> web.Response:
    code = error.get("code")
    if code and "doc_url" not in error:
        error = {**error, "doc_url": "https://stripe.com/docs/error-codes/" + code.replace("_", "-")}
    return web.json_response({"error": error}, status=status)


@web.middleware
async def request_context(request: web.Request, handler: Any) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    request_id = new_id("req_", 14)
    key = request.headers.get("Idempotency-Key") if request.method == "POST" else None
    token = compat.CURRENT_REQUEST.set({"id": request_id, "idempotency_key": key})
    try:
        response = await handler(request)
    finally:
        compat.CURRENT_REQUEST.reset(token)
    response.headers["Request-Id"] = request_id
    response.headers["Stripe-Version"] = compat.api_version()
    if key:
        response.headers["Idempotency-Key"] = key
    return response


# ------------------------------------------------------------------------------ idempotency


@dataclass
class _Stored:
    path: str
    params: str
    created: float
    request_id: str
    status: int | None = None
    body: bytes = b""


def _canonical_params(request: web.Request, body: bytes) -> str:
    """The request's parameters, independent of their order on the wire."""
    pairs = sorted(urllib.parse.parse_qsl(request.query_string, keep_blank_values=True))
    text = body.decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text) if text.strip().startswith("{") else None
    except ValueError:
        parsed = None
    if parsed is not None:
        return json.dumps([pairs, parsed], sort_keys=True)
    return json.dumps([pairs, sorted(urllib.parse.parse_qsl(text, keep_blank_values=True))])


def _idempotency_error(status: int, message: str, code: str | None = None) -> web.Response:
    error: dict[str, Any] = {"type": "idempotency_error", "message": message}
    if code:
        error["code"] = code
    return stripe_error(status, error)


def _saved(status: int) -> bool:
    # Stripe keeps the result once the endpoint began executing, 500s included; a request that
    # failed validation or conflicted with a running one keeps nothing.
    return status < 400 or status == 402 or status >= 500


@web.middleware
async def idempotency(request: web.Request, handler: Any) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or not request.path.startswith("/v1/"):
        return await handler(request)
    body = await request.read()
    scope = (request.headers.get("Authorization", ""), key)
    params = _canonical_params(request, body)
    now = time.time()
    stored: _Stored | None = STATE.idempotency.get(scope)
    if stored is not None and now - stored.created > IDEMPOTENCY_TTL_SECONDS:
        stored = None
    if stored is not None:
        if stored.path != request.path:
            return _idempotency_error(
                400,
                "Keys for idempotent requests can only be used for the same endpoint they were first "
                f"used for ('{request.path}' vs '{stored.path}'). Try using a key other than '{key}' if "
                "you meant to execute a different request.",
            )
        if stored.params != params:
            return _idempotency_error(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were "
                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                "different request.",
            )
        if stored.status is None:
            return _idempotency_error(
                409,
                "There is currently another in-progress request using this Idempotent Key (that "
                "probably means you submitted twice, and the other request is still going "
                f"through): {key}. Please try again later.",
                code="idempotency_key_in_use",
            )
        replay = web.Response(body=stored.body, status=stored.status, content_type="application/json")
        replay.headers["Idempotent-Replayed"] = "true"
        replay.headers["Original-Request"] = stored.request_id
        return replay
    current = compat.CURRENT_REQUEST.get() or {}
    stored = _Stored(path=request.path, params=params, created=now, request_id=str(current.get("id")))
    STATE.idempotency[scope] = stored
    try:
        response = await handler(request)
    except BaseException:
        STATE.idempotency.pop(scope, None)
        raise
    body_bytes = getattr(response, "body", None)
    if _saved(response.status) and isinstance(body_bytes, bytes):
        stored.status, stored.body = response.status, body_bytes
    elif STATE.idempotency.get(scope) is stored:
        del STATE.idempotency[scope]
    return response


# ----------------------------------------------------------------------------------- errors


def _normalised(request: web.Request, status: int, error: dict[str, Any]) -> dict[str, Any]:
    error = dict(error)
    message = str(error.get("message") or "")
    if status == 402:
        error["type"] = "card_error"
        match = _OBJECT_PATH.match(request.path)
        if match and match["kind"] == "payment_intent":
            from localstripe.resources import PaymentIntent

            try:
                error["payment_intent"] = PaymentIntent._api_retrieve(match["id"])._export()
            except Exception:  # noqa: BLE001 - the error stays useful without it
                logger.debug("no payment_intent for the card error of %s", request.path)
    elif status == 404 and message == "Not Found":
        match = _OBJECT_PATH.match(request.path)
        error["code"] = "resource_missing"
        if match:
            error["message"] = f"No such {match['kind']}: '{match['id']}'"
            error["param"] = "id"
    elif message.startswith("Unexpected "):
        name = message.removeprefix("Unexpected ").split(",")[0].strip()
        error.update(message=f"Received unknown parameter: {name}", code="parameter_unknown", param=name)
    return error


@web.middleware
async def stripe_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return stripe_error(
                404,
                {
                    "type": "invalid_request_error",
                    "message": f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                    "https://stripe.com/docs or we can help at https://support.stripe.com/.",
                },
            )
        raise
    except Exception:
        logger.exception("the Stripe stand-in failed on %s %s", request.method, request.path)
        return stripe_error(500, {"type": "api_error", "message": "An unknown error occurred"})
    if response.status < 400 or not request.path.startswith("/v1/"):
        return response
    body = getattr(response, "body", None)
    try:
        error = json.loads(body)["error"] if isinstance(body, bytes) else None
    except (ValueError, KeyError, TypeError):
        error = None
    if not isinstance(error, dict):
        return response
    return stripe_error(response.status, _normalised(request, response.status, error))
