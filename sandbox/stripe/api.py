"""Routes of the Stripe stand-in that localstripe lacks or answers in an old dialect.

- `GET /v1/balance`: `available` and `pending` as lists of {amount, currency, source_types}.
- `GET /v1/events` (created[gt|gte|lt|lte], type with `*`, types[], delivery_success, limit,
  starting_after, ending_before; newest first) and `GET /v1/events/{id}`.
- `GET /v1/payment_intents/search`: `metadata['k']:'v'` and `status:'v'` terms joined by AND.
- `POST /v1/refunds` (Stripe's bounds, refund webhooks, the refund-fail test card) and
  `GET /v1/refunds` (charge=, payment_intent=, created, paging).
- `/v1/webhook_endpoints`: create (with its `secret`, shown only then), list, retrieve, update,
  delete; events go to every enabled endpoint that wants them, signed with its secret.
- `POST /v1/payment_intents/{id}/cancel` (localstripe's, taking `cancellation_reason`).
- `GET /js.stripe.com/v3/`: our copy of localstripe's Stripe.js stand-in (static/).

Left out: Stripe's search is eventually consistent (about a minute) and understands far more
syntax; here it is immediate and takes only the terms above (anything else is a 400). Webhook
endpoints render events in the pinned API version only (another `api_version` is refused) and
have no Connect. Balance funds are `available` at once (Stripe's test charges are pending first).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from localstripe import server
from localstripe.errors import UserError
from localstripe.resources import PaymentIntent, try_convert_to_bool

from sandbox.stripe import compat, events, rules
from sandbox.stripe.events import STATE, WebhookEndpoint
from sandbox.stripe.rules import invalid_request

STRIPE_JS = Path(__file__).with_name("static") / "localstripe-v3.js"
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def _json(obj: Any, status: int = 200) -> web.Response:
    return server.json_response(obj, status=status)


def _query(request: web.Request) -> dict[str, Any]:
    return dict(server.unflatten_data(request.query) or {})


async def _body(request: web.Request) -> dict[str, Any]:
    return dict(await server.get_post_data(request) or {})


def _refuse_unknown(params: dict[str, Any], allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise invalid_request(f"Received unknown parameter: {name}", code="parameter_unknown", param=name)


def _missing(name: str) -> UserError:
    return invalid_request(f"Missing required param: {name}.", code="parameter_missing", param=name)


def _no_such(kind: str, object_id: str, *, param: str = "id") -> UserError:
    return invalid_request(f"No such {kind}: '{object_id}'", code="resource_missing", param=param, status=404)


def _limit(value: Any) -> int:
    if value is None:
        return 10
    limit = rules.as_int(value, param="limit")
    if limit < 1:
        raise invalid_request(
            "This value must be greater than or equal to 1.", code="parameter_invalid_integer", param="limit"
        )
    if limit > 100:
        raise invalid_request(
            "This value must be less than or equal to 100.", code="parameter_invalid_integer", param="limit"
        )
    return limit


def _newest_first(items: list[Any]) -> list[tuple[tuple[int, int], Any]]:
    """`items` (oldest first) keyed by (created, position), newest first: the order Stripe lists in."""
    keyed = [((int(getattr(item, "created", 0)), position), item) for position, item in enumerate(items)]
    return sorted(keyed, key=lambda pair: pair[0], reverse=True)


def _page(
    keyed: list[tuple[Any, Any]],
    matching: list[tuple[Any, Any]],
    params: dict[str, Any],
    *,
    url: str,
    kind: str,
    render: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """One page of `matching` (newest first), with Stripe's cursors over all of `keyed`."""
    limit = _limit(params.pop("limit", None))
    after, before = params.pop("starting_after", None), params.pop("ending_before", None)
    if after and before:
        raise invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="starting_after",
        )
    cursors = {getattr(item, "id", None): key for key, item in keyed}
    if after:
        if after not in cursors:
            raise _no_such(kind, after, param="starting_after")
        rest = [item for key, item in matching if key < cursors[after]]
        data, has_more = rest[:limit], len(rest) > limit
    elif before:
        if before not in cursors:
            raise _no_such(kind, before, param="ending_before")
        rest = [item for key, item in matching if key > cursors[before]]
        data, has_more = rest[-limit:], len(rest) > limit
    else:
        rest = [item for _, item in matching]
        data, has_more = rest[:limit], len(rest) > limit
    return {"object": "list", "data": [render(item) for item in data], "has_more": has_more, "url": url}


def _created_filter(created: Any) -> Callable[[int], bool]:
    if created is None:
        return lambda _: True
    if isinstance(created, str):
        exact = rules.as_int(created, param="created")
        return lambda value: value == exact
    if not isinstance(created, dict):
        raise invalid_request("Invalid created: must be an integer or a hash", param="created")
    tests = {"gt": int.__gt__, "gte": int.__ge__, "lt": int.__lt__, "lte": int.__le__}
    bounds = []
    for op, raw in created.items():
        if op not in tests:
            raise invalid_request(
                f"Received unknown parameter: created[{op}]", code="parameter_unknown", param=f"created[{op}]"
            )
        bounds.append((tests[op], rules.as_int(raw, param=f"created[{op}]")))
    return lambda value: all(test(value, bound) for test, bound in bounds)


# ---------------------------------------------------------------------------------- balance


async def balance(request: web.Request) -> web.Response:
    """Net of captured charges and refunds that did not fail, per currency (localstripe's own
    balance transactions are `available` at once, so the funds are too)."""
    _refuse_unknown(_query(request), {"expand"})
    totals: dict[str, int] = {}
    for charge in compat.objects("charge"):
        if charge.status == "succeeded" and charge.captured:
            totals[charge.currency] = totals.get(charge.currency, 0) + charge.amount
    for refund in compat.objects("refund"):
        if getattr(refund, "status", "succeeded") != "failed":
            totals[refund.currency] = totals.get(refund.currency, 0) - refund.amount
    totals = totals or {"usd": 0}
    return _json(
        {
            "object": "balance",
            "available": [
                {"amount": amount, "currency": currency, "source_types": {"card": amount}}
                for currency, amount in sorted(totals.items())
            ],
            "livemode": False,
            "pending": [
                {"amount": 0, "currency": currency, "source_types": {"card": 0}}
                for currency in sorted(totals)
            ],
        }
    )


# ----------------------------------------------------------------------------------- events


def _events_newest_first() -> list[tuple[tuple[int, int], Any]]:
    found = compat.objects("event")
    keyed = [((int(event.created), int(getattr(event, "_seq", 0))), event) for event in found]
    return sorted(keyed, key=lambda pair: pair[0], reverse=True)


def _type_test(params: dict[str, Any]) -> Callable[[str], bool]:
    one, many = params.pop("type", None), params.pop("types", None)
    if one is not None and many is not None:
        raise invalid_request("You may only specify one of these parameters: type, types.", param="types")
    if one is not None:
        if not isinstance(one, str):
            raise invalid_request("Invalid type: must be a string", param="type")
        pattern = re.compile("^" + ".*".join(re.escape(part) for part in one.split("*")) + "$")
        return lambda event_type: bool(pattern.match(event_type))
    if many is not None:
        if isinstance(many, str):
            many = [many]
        if not isinstance(many, list) or not all(isinstance(t, str) for t in many) or len(many) > 20:
            raise invalid_request("Invalid types: must be an array of up to 20 event types", param="types")
        wanted = set(many)
        return lambda event_type: event_type in wanted
    return lambda _: True


async def list_events(request: web.Request) -> web.Response:
    params = _query(request)
    expand = params.pop("expand", None)
    created = _created_filter(params.pop("created", None))
    type_ok = _type_test(params)
    delivery = params.pop("delivery_success", None)
    delivered = None if delivery is None else bool(try_convert_to_bool(delivery))
    _refuse_unknown(params, {"limit", "starting_after", "ending_before"})
    keyed = _events_newest_first()
    matching = [
        (key, event)
        for key, event in keyed
        if created(int(event.created))
        and type_ok(event.type)
        and (delivered is None or (getattr(event, "_pending_webhooks", 0) == 0) == delivered)
    ]
    listing = _page(
        keyed,
        matching,
        params,
        url="/v1/events",
        kind="event",
        render=lambda event: event._export(expand=None),
    )
    for path in compat.check_expand(expand):
        compat.expand_path(listing, path)
    return _json(listing)


async def retrieve_event(request: web.Request) -> web.Response:
    params = _query(request)
    expand = params.pop("expand", None)
    _refuse_unknown(params, set())
    event_id = request.match_info["id"]
    event = compat.store.get("event:" + event_id)
    if event is None:
        raise _no_such("event", event_id)
    return _json(event._export(expand=expand))


# ----------------------------------------------------------------------------------- search

_SEARCH_TERM = re.compile(
    r"""\s*(?:metadata\[(?P<kq>['"])(?P<key>(?:\\.|(?!(?P=kq)).)*)(?P=kq)\]|(?P<field>status))"""
    r"""\s*:\s*(?P<vq>['"])(?P<value>(?:\\.|(?!(?P=vq)).)*)(?P=vq)\s*"""
)
_SEARCH_AND = re.compile(r"AND\s+")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parse_search_query(query: str) -> list[tuple[str, str, str]]:
    """[("metadata", key, value) | ("status", "", value)] of a query the stand-in understands."""
    terms, position = [], 0
    while True:
        match = _SEARCH_TERM.match(query, position)
        if match is None:
            break
        if match["field"]:
            terms.append(("status", "", _unescape(match["value"])))
        else:
            terms.append(("metadata", _unescape(match["key"]), _unescape(match["value"])))
        position = match.end()
        joiner = _SEARCH_AND.match(query, position)
        if joiner is None:
            break
        position = joiner.end()
    if not terms or position != len(query):
        raise invalid_request(
            f"Invalid search query: {query!r}. The Stripe stand-in understands metadata['key']:'value' "
            "and status:'value' terms joined by AND.",
            param="query",
        )
    return terms


async def search_payment_intents(request: web.Request) -> web.Response:
    params = _query(request)
    expand = params.pop("expand", None)
    query = params.pop("query", None)
    if not query:
        raise _missing("query")
    limit = _limit(params.pop("limit", None))
    page = params.pop("page", None)
    _refuse_unknown(params, set())
    offset = 0
    if page is not None:
        if not (isinstance(page, str) and re.fullmatch(r"page_\d+", page)):
            raise invalid_request(f"Invalid page: {page}", param="page")
        offset = int(page.removeprefix("page_"))
    terms = parse_search_query(query)

    def holds(intent: Any, kind: str, key: str, value: str) -> bool:
        if kind == "status":
            return intent.status == value  # a property of localstripe's PaymentIntent
        metadata = intent.metadata or {}
        return key in metadata and str(metadata[key]) == value

    def matches(intent: Any) -> bool:
        return all(holds(intent, kind, key, value) for kind, key, value in terms)

    found = [intent for _, intent in _newest_first(compat.objects("payment_intent")) if matches(intent)]
    data = found[offset : offset + limit]
    more = len(found) > offset + limit
    result = {
        "object": "search_result",
        "data": [intent._export() for intent in data],
        "has_more": more,
        "next_page": f"page_{offset + limit}" if more else None,
        "url": "/v1/payment_intents/search",
    }
    for path in compat.check_expand(expand):
        compat.expand_path(result, path)
    return _json(result)


# ---------------------------------------------------------------------------------- refunds


def _charge_to_refund(data: dict[str, Any]) -> Any:
    charge_id, intent_id = data.get("charge"), data.get("payment_intent")
    if not charge_id and not intent_id:
        raise invalid_request(
            "One of the following params should be provided for this request: payment_intent or charge.",
            param="payment_intent",
        )
    if intent_id:
        intent = compat.store.get(f"payment_intent:{intent_id}")
        if intent is None:
            raise _no_such("payment_intent", str(intent_id), param="payment_intent")
        charge = intent.latest_charge
        if charge is None or charge.status != "succeeded":
            raise invalid_request(
                f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                param="payment_intent",
            )
        if charge_id and charge_id != charge.id:
            raise invalid_request(
                f"Charge {charge_id} does not belong to PaymentIntent {intent_id}.", param="charge"
            )
        return charge
    charge = compat.store.get(f"charge:{charge_id}")
    if charge is None:
        raise _no_such("charge", str(charge_id), param="charge")
    if charge.status == "failed":
        raise invalid_request("Cannot refund a failed payment.", param="charge")
    return charge


async def create_refund(request: web.Request) -> web.Response:
    data = await _body(request)
    expand = data.pop("expand", None)
    _refuse_unknown(data, {"charge", "payment_intent", "amount", "metadata", "reason"})
    amount = None if data.get("amount") in (None, "") else rules.positive_amount(data["amount"])
    reason = data.get("reason") or None
    if reason is not None and reason not in REFUND_REASONS:
        raise invalid_request(
            "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer", param="reason"
        )
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise invalid_request("Invalid metadata: must be a hash", param="metadata")
    charge = _charge_to_refund(data)
    refunded = compat.amount_refunded(charge)
    if amount is None:
        amount = charge.amount - refunded
    rules.check_refund_amount(
        amount=amount,
        charge_id=charge.id,
        charge_amount=charge.amount,
        refunded=refunded,
        currency=charge.currency,
    )
    refund = compat.make_refund(charge=charge, amount=amount, metadata=metadata, reason=reason)
    events.emit("refund.created", refund)
    events.emit("charge.refunded", charge)
    if compat.card_number(charge.payment_method) == compat.REFUND_FAIL_CARD:
        events.fail_refund_later(refund)
    return _json(refund._export(expand=expand))


async def list_refunds(request: web.Request) -> web.Response:
    params = _query(request)
    expand = params.pop("expand", None)
    created = _created_filter(params.pop("created", None))
    charge_id, intent_id = params.pop("charge", None), params.pop("payment_intent", None)
    _refuse_unknown(params, {"limit", "starting_after", "ending_before"})
    if intent_id is not None and compat.store.get(f"payment_intent:{intent_id}") is None:
        raise _no_such("payment_intent", str(intent_id), param="payment_intent")
    if charge_id is not None and compat.store.get(f"charge:{charge_id}") is None:
        raise _no_such("charge", str(charge_id), param="charge")

    def wanted(refund: Any) -> bool:
        if charge_id is not None and refund.charge != charge_id:
            return False
        if intent_id is not None:
            charge = compat.store.get(f"charge:{refund.charge}")
            if charge is None or charge.payment_intent != intent_id:
                return False
        return created(int(refund.created))

    keyed = _newest_first(compat.objects("refund"))
    matching = [(key, refund) for key, refund in keyed if wanted(refund)]
    listing = _page(keyed, matching, params, url="/v1/refunds", kind="refund", render=lambda r: r._export())
    for path in compat.check_expand(expand):
        compat.expand_path(listing, path)
    return _json(listing)


# ------------------------------------------------------------------------ webhook endpoints


def _enabled_events(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise invalid_request("Invalid array", code="parameter_invalid_array", param="enabled_events")
    return list(value)


def _endpoint_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise invalid_request(f"Invalid URL: {value}", code="url_invalid", param="url")
    return value


def _endpoint(endpoint_id: str) -> WebhookEndpoint:
    endpoint = STATE.endpoints.get(endpoint_id)
    if endpoint is None:
        raise _no_such("webhook_endpoint", endpoint_id)
    return endpoint


async def create_endpoint(request: web.Request) -> web.Response:
    data = await _body(request)
    data.pop("expand", None)
    _refuse_unknown(data, {"url", "enabled_events", "description", "api_version", "metadata", "connect"})
    if not data.get("url"):
        raise _missing("url")
    if not data.get("enabled_events"):
        raise _missing("enabled_events")
    version = data.get("api_version") or None
    if version is not None and version != compat.api_version():
        # Stripe would render this endpoint's events in that version; the stand-in knows one.
        raise invalid_request(
            f"The Stripe stand-in renders events only in API version {compat.api_version()}, not {version}.",
            param="api_version",
        )
    if try_convert_to_bool(data.get("connect")) is True:
        raise invalid_request("The Stripe stand-in has no Connect accounts.", param="connect")
    endpoint = WebhookEndpoint(
        id=events.new_id("we_"),
        url=_endpoint_url(data["url"]),
        secret=events.new_id("whsec_", 32),
        enabled_events=_enabled_events(data["enabled_events"]),
        created=int(time.time()),
        description=data.get("description") or None,
        api_version=version,
        metadata=dict(data.get("metadata") or {}),
    )
    STATE.endpoints[endpoint.id] = endpoint
    return _json(endpoint.export(with_secret=True))


async def list_endpoints(request: web.Request) -> web.Response:
    params = _query(request)
    params.pop("expand", None)
    _refuse_unknown(params, {"limit", "starting_after", "ending_before"})
    keyed = _newest_first(list(STATE.endpoints.values()))
    listing = _page(
        keyed,
        keyed,
        params,
        url="/v1/webhook_endpoints",
        kind="webhook_endpoint",
        render=lambda e: e.export(),
    )
    return _json(listing)


async def retrieve_endpoint(request: web.Request) -> web.Response:
    return _json(_endpoint(request.match_info["id"]).export())


async def update_endpoint(request: web.Request) -> web.Response:
    endpoint = _endpoint(request.match_info["id"])
    data = await _body(request)
    data.pop("expand", None)
    _refuse_unknown(data, {"url", "enabled_events", "description", "disabled", "metadata"})
    if "url" in data:
        endpoint.url = _endpoint_url(data["url"])
    if "enabled_events" in data:
        endpoint.enabled_events = _enabled_events(data["enabled_events"])
    if "description" in data:
        endpoint.description = data["description"] or None
    if "disabled" in data:
        disabled = try_convert_to_bool(data["disabled"])
        if not isinstance(disabled, bool):
            raise invalid_request("Invalid boolean: " + str(data["disabled"]), param="disabled")
        endpoint.status = "disabled" if disabled else "enabled"
    for key, value in (data.get("metadata") or {}).items():
        if value in ("", None):
            endpoint.metadata.pop(key, None)  # Stripe: an empty value unsets the key
        else:
            endpoint.metadata[key] = value
    return _json(endpoint.export())


async def delete_endpoint(request: web.Request) -> web.Response:
    endpoint = _endpoint(request.match_info["id"])
    del STATE.endpoints[endpoint.id]
    return _json({"id": endpoint.id, "object": "webhook_endpoint", "deleted": True})


# --------------------------------------------------------------------------------- the rest


async def stripe_js(request: web.Request) -> web.Response:
    return web.Response(text=STRIPE_JS.read_text(encoding="utf-8"), content_type="application/javascript")


def routes() -> list[tuple[str, str, Any]]:
    """(method, path, handler) to register before localstripe's own, which they replace."""
    cancel = "/v1/payment_intents/{id}/cancel"
    return [
        ("GET", "/v1/balance", balance),
        ("GET", "/v1/events", list_events),
        ("GET", "/v1/events/{id}", retrieve_event),
        ("GET", "/v1/payment_intents/search", search_payment_intents),
        ("POST", cancel, server.api_extra(PaymentIntent._api_cancel, cancel)),
        ("POST", "/v1/refunds", create_refund),
        ("GET", "/v1/refunds", list_refunds),
        ("POST", "/v1/webhook_endpoints", create_endpoint),
        ("GET", "/v1/webhook_endpoints", list_endpoints),
        ("GET", "/v1/webhook_endpoints/{id}", retrieve_endpoint),
        ("POST", "/v1/webhook_endpoints/{id}", update_endpoint),
        ("DELETE", "/v1/webhook_endpoints/{id}", delete_endpoint),
        ("GET", "/js.stripe.com/v3/", stripe_js),
    ]
