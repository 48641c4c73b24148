"""The Stripe stand-in (localstripe, wrapped by sandbox/stripe/) against today's Stripe.

Driven through the real `stripe.StripeClient`, built as payments/gateways/stripe.py builds it,
and judged against Stripe's published example objects (stripe_fixtures3.json, a copy of
`openapi/fixtures3.json` from github:stripe/openapi) and the API version the installed `stripe`
pins. Webhooks are received by a small HTTP server of the test's own on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from sandbox.stripe.server import StripeSandboxThread, register_webhook
from tests.concurrency import race
from tests.payments.conftest import WEBHOOK_SECRET
from tests.polling import eventually

FIXTURES = json.loads(Path(__file__).with_name("stripe_fixtures3.json").read_text())["resources"]
VISA = "pm_card_visa"
REFUND_FAIL = "pm_card_refundFail"  # card 4000 0000 0000 5126: refunds fail asynchronously
SECRET_KEY = "sk_test_suite"

# Keys the stand-in sends that the published example objects lack, and why.
JUSTIFIED_EXTRAS = {
    # A conditional field of the Refund schema (spec3), present only on failed refunds.
    "refund": {"failure_reason"},
    # Stripe returns the signing secret in the answer to the create call only.
    "webhook_endpoint": {"secret"},
}
# Fields Stripe removed from these objects by the pinned API version (2022-11-15: no `charges`
# on intents, no auto-expanded `refunds` on charges; 2025-03-31: no `invoice` on either).
REMOVED = {
    "payment_intent": {"charges", "invoice"},
    "charge": {"refunds", "invoice"},
    "refund": {"date"},
    "balance": set(),
    "setup_intent": set(),
    "event": set(),
    "webhook_endpoint": set(),
}


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def type_mismatches(ours: dict[str, Any], published: dict[str, Any], path: str = "") -> list[str]:
    """Shared keys whose values are of different JSON types (nulls and metadata aside)."""
    found = []
    for key in ours.keys() & published.keys():
        mine, theirs = ours[key], published[key]
        if mine is None or theirs is None or key in {"metadata", "data"}:
            continue
        if kind_of(mine) != kind_of(theirs):
            found.append(f"{path}{key}: {kind_of(mine)} vs {kind_of(theirs)}")
        elif isinstance(mine, dict):
            found += type_mismatches(mine, theirs, f"{path}{key}.")
    return found


def assert_current_shape(kind: str, obj: dict[str, Any]) -> None:
    published = FIXTURES[kind]
    assert obj["object"] == kind
    extras = set(obj) - set(published) - JUSTIFIED_EXTRAS.get(kind, set())
    assert not extras, f"{kind} has keys Stripe's {kind} does not: {sorted(extras)}"
    assert not set(obj) & REMOVED[kind], f"{kind} still has {sorted(set(obj) & REMOVED[kind])}"
    assert not type_mismatches(obj, published), type_mismatches(obj, published)


@pytest.fixture
def client(stripe_api: str) -> stripe.StripeClient:
    """The SDK's client, configured as payments/gateways/stripe.py configures it."""
    return stripe.StripeClient(
        SECRET_KEY,
        base_addresses={"api": stripe_api},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=20),
    )


@dataclass
class Delivery:
    path: str
    body: bytes
    signature: str

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)

    def at(self, path: str) -> list[Delivery]:
        return [d for d in list(self.deliveries) if d.path == path]

    def of_type(self, event_type: str, path: str = "/hook") -> list[Delivery]:
        return [d for d in self.at(path) if d.event["type"] == event_type]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """Webhooks land here: a tiny HTTP server on 127.0.0.1 answering 200 to every POST."""
    received: list[Delivery] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(Delivery(self.path, body, self.headers.get("Stripe-Signature", "")))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", received)
    server.shutdown()
    server.server_close()


def paid(client: stripe.StripeClient, *, amount: int = 2500, method: str = VISA, **metadata: str) -> Any:
    intent = client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "payment_method": method,
            "payment_method_types": ["card"],
            "metadata": metadata,
        }
    )
    return client.v1.payment_intents.confirm(intent.id, params={"expand": ["latest_charge"]})


def plain(obj: Any) -> dict[str, Any]:
    return obj.to_dict()


def verified(delivery: Delivery, secret: str = WEBHOOK_SECRET) -> Any:
    return stripe.Webhook.construct_event(delivery.body.decode(), delivery.signature, secret)


# ------------------------------------------------------------------------------------ shapes


def test_a_payment_intent_is_in_the_current_shape(client: stripe.StripeClient) -> None:
    created = plain(
        client.v1.payment_intents.create(
            params={
                "amount": 2500,
                "currency": "usd",
                "payment_method": VISA,
                "payment_method_types": ["card"],
            }
        )
    )
    assert (created["status"], created["amount_received"], created["latest_charge"]) == (
        "requires_confirmation",
        0,
        None,
    )
    assert_current_shape("payment_intent", created)

    intent = plain(client.v1.payment_intents.confirm(created["id"]))
    assert_current_shape("payment_intent", intent)
    assert intent["status"] == "succeeded"
    assert intent["amount_received"] == 2500
    assert isinstance(intent["latest_charge"], str) and intent["latest_charge"].startswith("ch_")

    expanded = plain(client.v1.payment_intents.retrieve(intent["id"], params={"expand": ["latest_charge"]}))
    assert expanded["latest_charge"]["id"] == intent["latest_charge"]
    assert_current_shape("charge", expanded["latest_charge"])


def test_a_charge_has_its_refunded_total_and_its_refunds_only_when_expanded(
    client: stripe.StripeClient,
) -> None:
    intent = paid(client, amount=3000)
    charge_id = intent.latest_charge.id
    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1000})

    charge = plain(client.v1.charges.retrieve(charge_id))
    assert_current_shape("charge", charge)
    assert (charge["amount_refunded"], charge["refunded"], charge["payment_intent"]) == (
        1000,
        False,
        intent.id,
    )

    with_refunds = plain(client.v1.charges.retrieve(charge_id, params={"expand": ["refunds"]}))
    assert [r["amount"] for r in with_refunds["refunds"]["data"]] == [1000]


def test_a_refund_is_in_the_current_shape(client: stripe.StripeClient) -> None:
    intent = paid(client)
    refund = plain(
        client.v1.refunds.create(params={"payment_intent": intent.id, "metadata": {"why": "test"}})
    )
    assert_current_shape("refund", refund)
    assert refund["payment_intent"] == intent.id
    assert refund["charge"] == intent.latest_charge.id
    assert (refund["status"], refund["currency"], refund["metadata"]) == ("succeeded", "usd", {"why": "test"})
    assert isinstance(refund["created"], int)
    assert "failure_reason" not in refund


def test_setup_intents_balance_and_events_are_in_the_current_shape(client: stripe.StripeClient) -> None:
    assert_current_shape(
        "setup_intent", plain(client.v1.setup_intents.create(params={"payment_method_types": ["card"]}))
    )
    paid(client, amount=1200)

    balance = plain(client.v1.balance.retrieve())
    assert_current_shape("balance", balance)
    assert balance["available"] == [{"amount": 1200, "currency": "usd", "source_types": {"card": 1200}}]
    assert isinstance(balance["pending"], list)

    (event,) = client.v1.events.list(params={"type": "payment_intent.succeeded"}).data
    event = plain(event)
    assert_current_shape("event", event)
    assert event["api_version"] == stripe.api_version
    assert (event["livemode"], event["pending_webhooks"]) == (False, 0)
    assert set(event["request"]) == {"id", "idempotency_key"}
    assert_current_shape("payment_intent", event["data"]["object"])


def test_a_webhook_endpoint_is_in_the_current_shape(client: stripe.StripeClient, receiver: Receiver) -> None:
    created = plain(
        client.v1.webhook_endpoints.create(
            params={
                "url": f"{receiver.url}/hook",
                "enabled_events": ["refund.created"],
                "description": "ours",
            }
        )
    )
    assert_current_shape("webhook_endpoint", created)
    assert created["secret"].startswith("whsec_")
    retrieved = plain(client.v1.webhook_endpoints.retrieve(created["id"]))
    assert_current_shape("webhook_endpoint", retrieved)
    assert "secret" not in retrieved


# ------------------------------------------------------------------------------- idempotency


def create_params(amount: int = 2500) -> dict[str, Any]:
    return {"amount": amount, "currency": "usd", "payment_method": VISA, "payment_method_types": ["card"]}


def test_the_same_key_and_parameters_replay_the_first_answer(client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())
    first = client.v1.payment_intents.create(params=create_params(), options={"idempotency_key": key})
    again = client.v1.payment_intents.create(params=create_params(), options={"idempotency_key": key})

    assert again.id == first.id
    assert plain(again) == plain(first)
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert again.last_response.headers["Original-Request"] == first.last_response.request_id
    assert [i.id for i in client.v1.payment_intents.list().data] == [first.id]


def test_the_same_key_with_other_parameters_is_an_idempotency_error(client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())
    client.v1.payment_intents.create(params=create_params(2500), options={"idempotency_key": key})
    with pytest.raises(stripe.IdempotencyError) as refused:
        client.v1.payment_intents.create(params=create_params(2600), options={"idempotency_key": key})
    assert refused.value.http_status == 400
    assert refused.value.error.type == "idempotency_error"
    assert refused.value.user_message == (
        "Keys for idempotent requests can only be used with the same parameters they were first used with. "
        f"Try using a key other than '{key}' if you meant to execute a different request."
    )
    with pytest.raises(stripe.IdempotencyError, match="same endpoint"):
        client.v1.customers.create(options={"idempotency_key": key})
    assert len(client.v1.payment_intents.list().data) == 1


def test_keys_are_per_api_key_and_a_refused_request_keeps_none(
    stripe_api: str, client: stripe.StripeClient
) -> None:
    key = str(uuid.uuid4())
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(params=create_params(10), options={"idempotency_key": key})
    ours = client.v1.payment_intents.create(params=create_params(), options={"idempotency_key": key})

    other_account = stripe.StripeClient(
        SECRET_KEY + "_other", base_addresses={"api": stripe_api}, max_network_retries=0
    )
    theirs = other_account.v1.payment_intents.create(params=create_params(), options={"idempotency_key": key})
    assert theirs.id != ours.id


def test_concurrent_requests_with_one_key_make_one_intent(client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())

    def create(_: int) -> Any:
        return client.v1.payment_intents.create(params=create_params(), options={"idempotency_key": key})

    results = race(8, create)
    made = {r.id for r in results if isinstance(r, stripe.PaymentIntent)}
    # Stripe answers a request whose key is still running with 409 (the SDK's APIError).
    others = [r for r in results if not isinstance(r, stripe.PaymentIntent)]
    assert all(isinstance(r, stripe.APIError) and r.http_status == 409 for r in others), others
    assert len(made) == 1
    assert [i.id for i in client.v1.payment_intents.list().data] == list(made)


def test_a_reset_forgets_the_keys(stripe_sandbox: StripeSandboxThread, client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())
    client.v1.payment_intents.create(params=create_params(2500), options={"idempotency_key": key})
    stripe_sandbox.reset()
    again = client.v1.payment_intents.create(params=create_params(2600), options={"idempotency_key": key})
    assert again.amount == 2600


# ----------------------------------------------------------------------- Stripe's refusals


@pytest.mark.parametrize(
    ("currency", "minimum", "shown"),
    [("usd", 50, "$0.50 usd"), ("eur", 50, "€0.50 eur"), ("gbp", 30, "£0.30 gbp"), ("jpy", 50, "¥50 jpy")],
)
def test_amounts_under_stripes_minimum_are_refused(
    client: stripe.StripeClient, currency: str, minimum: int, shown: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.create(params={"amount": minimum - 1, "currency": currency})
    assert (refused.value.http_status, refused.value.code, refused.value.param) == (
        400,
        "amount_too_small",
        "amount",
    )
    assert refused.value.error.type == "invalid_request_error"
    assert refused.value.user_message == f"Amount must be at least {shown}"
    assert (
        client.v1.payment_intents.create(params={"amount": minimum, "currency": currency}).amount == minimum
    )


def test_a_refund_larger_than_what_is_left_is_refused(client: stripe.StripeClient) -> None:
    intent = paid(client, amount=2500)
    charge_id = intent.latest_charge.id

    with pytest.raises(stripe.InvalidRequestError) as too_large:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 2501})
    assert (too_large.value.code, too_large.value.param) == ("amount_too_large", "amount")
    assert too_large.value.user_message == "Refund amount ($25.01) is greater than charge amount ($25.00)"

    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1000})
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        client.v1.refunds.create(params={"charge": charge_id, "amount": 1501})
    assert too_large.value.code == "amount_too_large"
    assert (
        too_large.value.user_message
        == "Refund amount ($15.01) is greater than unrefunded amount on charge ($15.00)"
    )

    client.v1.refunds.create(params={"payment_intent": intent.id})  # the rest
    with pytest.raises(stripe.InvalidRequestError) as already:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1})
    assert already.value.code == "charge_already_refunded"
    assert already.value.user_message == f"Charge {charge_id} has already been refunded."
    assert client.v1.charges.retrieve(charge_id).amount_refunded == 2500


@pytest.mark.parametrize("amount", [0, -5])
def test_a_refund_of_nothing_is_refused(client: stripe.StripeClient, amount: int) -> None:
    intent = paid(client)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": intent.id, "amount": amount})
    assert (refused.value.http_status, refused.value.code, refused.value.param) == (
        400,
        "parameter_invalid_integer",
        "amount",
    )
    assert refused.value.user_message == "This value must be greater than or equal to 1."
    assert client.v1.refunds.list(params={"payment_intent": intent.id}).data == []


# --------------------------------------------------------------------------- refund webhooks


def test_a_refund_sends_refund_created_and_charge_refunded(
    stripe_api: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    register_webhook(stripe_api, url=f"{receiver.url}/hook", secret=WEBHOOK_SECRET)
    intent = paid(client, amount=4000)
    key = str(uuid.uuid4())
    refund = client.v1.refunds.create(
        params={"payment_intent": intent.id, "amount": 1500}, options={"idempotency_key": key}
    )

    created = eventually(lambda: receiver.of_type("refund.created"), what="refund.created")[0]
    refunded = eventually(lambda: receiver.of_type("charge.refunded"), what="charge.refunded")[0]
    for delivery in (created, refunded):
        event = verified(delivery)
        assert event.api_version == stripe.api_version
        assert_current_shape("event", delivery.event)
        assert delivery.event["request"]["idempotency_key"] == key
        assert delivery.event["request"]["id"] == refund.last_response.request_id
    assert created.event["data"]["object"]["id"] == refund.id
    assert_current_shape("refund", created.event["data"]["object"])
    charge = refunded.event["data"]["object"]
    assert_current_shape("charge", charge)
    assert (charge["id"], charge["amount_refunded"], charge["refunded"]) == (
        intent.latest_charge.id,
        1500,
        False,
    )

    recorded = [e.type for e in client.v1.events.list().data]
    assert {"refund.created", "charge.refunded", "payment_intent.succeeded"} <= set(recorded)


def test_the_refund_fail_card_refunds_then_fails(
    stripe_api: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    register_webhook(stripe_api, url=f"{receiver.url}/hook", secret=WEBHOOK_SECRET)
    intent = paid(client, amount=2000, method=REFUND_FAIL)
    assert intent.status == "succeeded"
    refund = client.v1.refunds.create(params={"payment_intent": intent.id})
    assert refund.status == "succeeded"  # at first, as at Stripe

    failed = eventually(lambda: receiver.of_type("refund.failed"), what="refund.failed")[0]
    for event_type in ("refund.updated", "charge.refund.updated"):
        (delivery,) = eventually(lambda t=event_type: receiver.of_type(t), what=event_type)
        verified(delivery)
        assert delivery.event["data"]["previous_attributes"] == {"status": "succeeded"}
    for delivery in (failed, *receiver.of_type("refund.updated"), *receiver.of_type("charge.refund.updated")):
        obj = delivery.event["data"]["object"]
        assert (obj["id"], obj["status"], obj["failure_reason"]) == (
            refund.id,
            "failed",
            "expired_or_canceled_card",
        )
        assert_current_shape("refund", obj)

    now = plain(client.v1.refunds.retrieve(refund.id))
    assert (now["status"], now["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert client.v1.charges.retrieve(intent.latest_charge.id).amount_refunded == 0
    types = [
        e.type for e in client.v1.events.list(params={"types": ["refund.updated", "refund.failed"]}).data
    ]
    assert sorted(types) == ["refund.failed", "refund.updated"]


# ------------------------------------------------------------------------------------ search


def test_payment_intents_are_found_by_metadata_and_status(client: stripe.StripeClient) -> None:
    order, other = str(uuid.uuid4()), str(uuid.uuid4())
    first = paid(client, order_id=order, attempt="1")
    second = paid(client, order_id=order, attempt="2")
    paid(client, order_id=other, attempt="1")
    pending = client.v1.payment_intents.create(params={**create_params(), "metadata": {"order_id": order}})

    found = client.v1.payment_intents.search(params={"query": f"metadata['order_id']:'{order}'"})
    raw = plain(found)
    assert (raw["object"], raw["url"], raw["has_more"], raw["next_page"]) == (
        "search_result",
        "/v1/payment_intents/search",
        False,
        None,
    )
    assert [i.id for i in found.data] == [pending.id, second.id, first.id]  # newest first
    assert_current_shape("payment_intent", raw["data"][0])

    one = client.v1.payment_intents.search(
        params={"query": f"metadata['order_id']:'{order}' AND metadata['attempt']:'2'"}
    )
    assert [i.id for i in one.data] == [second.id]
    done = client.v1.payment_intents.search(
        params={"query": f"metadata['order_id']:'{order}' AND status:'succeeded'"}
    )
    assert [i.id for i in done.data] == [second.id, first.id]

    page = client.v1.payment_intents.search(params={"query": f"metadata['order_id']:'{order}'", "limit": 2})
    assert (len(page.data), page.has_more) == (2, True)
    rest = client.v1.payment_intents.search(
        params={"query": f"metadata['order_id']:'{order}'", "limit": 2, "page": page.next_page}
    )
    assert ([i.id for i in rest.data], rest.has_more, rest.next_page) == ([first.id], False, None)
    assert [i.id for i in page.auto_paging_iter()] == [pending.id, second.id, first.id]


@pytest.mark.parametrize(
    "query",
    [
        "amount>1000",
        "metadata['order_id']:'a' OR status:'succeeded'",
        "metadata['order_id']:'a' AND",
        "customer:'cus_1'",
    ],
)
def test_a_search_the_stand_in_cannot_answer_is_refused(client: stripe.StripeClient, query: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.payment_intents.search(params={"query": query})
    assert (refused.value.http_status, refused.value.param) == (400, "query")


# ------------------------------------------------------------------------------------ events


def test_events_are_listed_newest_first_and_paged(client: stripe.StripeClient) -> None:
    intents = [paid(client, amount=1000 + i) for i in range(3)]
    succeeded = client.v1.events.list(params={"type": "payment_intent.succeeded"}).data
    assert [e.data.object.id for e in succeeded] == [i.id for i in reversed(intents)]

    first = client.v1.events.list(params={"limit": 2, "types": ["payment_intent.succeeded"]})
    assert (len(first.data), first.has_more) == (2, True)
    rest = client.v1.events.list(
        params={"limit": 2, "types": ["payment_intent.succeeded"], "starting_after": first.data[-1].id}
    )
    assert ([e.id for e in rest.data], rest.has_more) == ([succeeded[2].id], False)
    back = client.v1.events.list(
        params={"limit": 2, "type": "payment_intent.*", "ending_before": rest.data[0].id}
    )
    assert [e.id for e in back.data] == [e.id for e in first.data]

    newest, oldest = max(e.created for e in succeeded), min(e.created for e in succeeded)
    assert client.v1.events.list(params={"created": {"gt": newest}}).data == []
    after = client.v1.events.list(params={"created": {"gt": oldest - 1}, "type": "payment_intent.succeeded"})
    assert len(after.data) == 3
    assert (
        len(
            client.v1.events.list(
                params={"created": {"gte": newest}, "type": "payment_intent.succeeded"}
            ).data
        )
        >= 1
    )

    one = client.v1.events.retrieve(succeeded[0].id)
    assert plain(one) == plain(succeeded[0])
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.events.retrieve("evt_missing")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.events.list(params={"colour": "blue"})
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")


def test_refunds_are_listed_by_payment_intent_and_charge(client: stripe.StripeClient) -> None:
    intent = paid(client, amount=3000)
    other = paid(client, amount=3000)
    first = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 500})
    second = client.v1.refunds.create(params={"charge": intent.latest_charge.id, "amount": 700})
    client.v1.refunds.create(params={"payment_intent": other.id, "amount": 100})

    by_intent = client.v1.refunds.list(params={"payment_intent": intent.id})
    by_charge = client.v1.refunds.list(params={"charge": intent.latest_charge.id})
    assert [r.id for r in by_intent.data] == [r.id for r in by_charge.data] == [second.id, first.id]
    for refund in by_intent.data:
        assert_current_shape("refund", plain(refund))
        assert refund.payment_intent == intent.id
    assert [r.id for r in client.v1.refunds.list(params={"payment_intent": intent.id, "limit": 1}).data] == [
        second.id
    ]


# ------------------------------------------------------------------------- webhook endpoints


def test_webhook_endpoints_are_created_listed_updated_and_deleted(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    created = client.v1.webhook_endpoints.create(
        params={
            "url": f"{receiver.url}/a",
            "enabled_events": ["refund.created"],
            "api_version": stripe.api_version,
        }
    )
    assert (created.status, created.api_version, created.enabled_events) == (
        "enabled",
        stripe.api_version,
        ["refund.created"],
    )
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [created.id]

    updated = client.v1.webhook_endpoints.update(
        created.id,
        params={
            "url": f"{receiver.url}/b",
            "enabled_events": ["charge.refunded", "refund.created"],
            "disabled": True,
        },
    )
    assert (updated.url, updated.enabled_events, updated.status) == (
        f"{receiver.url}/b",
        ["charge.refunded", "refund.created"],
        "disabled",
    )
    assert "secret" not in plain(updated)
    assert client.v1.webhook_endpoints.update(created.id, params={"disabled": False}).status == "enabled"

    deleted = client.v1.webhook_endpoints.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.webhook_endpoints.retrieve(created.id)
    assert (gone.value.http_status, gone.value.code) == (404, "resource_missing")
    assert client.v1.webhook_endpoints.list().data == []

    with pytest.raises(stripe.InvalidRequestError) as other_version:
        client.v1.webhook_endpoints.create(
            params={"url": receiver.url, "enabled_events": ["*"], "api_version": "2017-08-15"}
        )
    assert other_version.value.param == "api_version"


def test_events_go_to_the_endpoints_that_want_them_signed_with_their_secret(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    everything = client.v1.webhook_endpoints.create(
        params={"url": f"{receiver.url}/all", "enabled_events": ["*"]}
    )
    payments_only = client.v1.webhook_endpoints.create(
        params={"url": f"{receiver.url}/payments", "enabled_events": ["payment_intent.succeeded"]}
    )
    switched_off = client.v1.webhook_endpoints.create(
        params={"url": f"{receiver.url}/off", "enabled_events": ["*"]}
    )
    client.v1.webhook_endpoints.update(switched_off.id, params={"disabled": True})

    intent = paid(client)
    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 100})

    def arrived(path: str, event_type: str) -> list[Delivery]:
        return [d for d in receiver.at(path) if d.event["type"] == event_type]

    for event_type in ("payment_intent.succeeded", "refund.created", "charge.refunded"):
        (delivery,) = eventually(lambda t=event_type: arrived("/all", t), what=f"{event_type} at /all")
        assert verified(delivery, everything.secret).type == event_type
        with pytest.raises(stripe.SignatureVerificationError):
            verified(delivery, payments_only.secret)
    (payment,) = eventually(
        lambda: arrived("/payments", "payment_intent.succeeded"), what="the payments endpoint"
    )
    assert verified(payment, payments_only.secret).data.object.id == intent.id
    # Each body says how many destinations the event had when sent: the refund's only /all.
    assert payment.event["pending_webhooks"] == 2
    assert arrived("/all", "refund.created")[0].event["pending_webhooks"] == 1
    assert receiver.at("/off") == []


def test_the_stand_in_serves_its_card_element(stripe_api: str) -> None:
    script = requests.get(f"{stripe_api}/js.stripe.com/v3/", timeout=20)
    assert script.headers["Content-Type"].startswith("application/javascript")
    for text in ("'Card number'", "'MM / YY'", "'CVC'", "'ZIP/postal code'", "replace(/[\\s-]/g, '')"):
        assert text in script.text
