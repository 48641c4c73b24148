"""The SNS adapter and `setup_aws` against a real moto server (fixtures in tests/integrations/conftest.py).

What reached SNS is read back from the demo SQS queue subscribed to the topic; which API calls
the adapter made is recorded with botocore's own event hooks on the real client.
"""

from __future__ import annotations

import io
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from django.core.management import call_command

from core.aws import aws_client
from integrations.adapters.base import DeliveryRequest, IntegrationAdapter
from integrations.adapters.sns import (
    THROTTLE_BACKOFF_SECONDS,
    SnsAdapter,
    classify_error,
    fifo_deduplication_id,
)
from integrations.aws import aws_setup
from tests.polling import eventually

EVENT_TYPES = [
    "order.paid",
    "order.payment_failed",
    "order.refunded",
    "order.partially_refunded",
    "order.cancelled",
]


def delivery(
    *,
    event_type: str = "order.paid",
    order_id: uuid.UUID | None = None,
    version: int = 2,
    key: str | None = None,
    note: str = "",
) -> DeliveryRequest:
    order_id = order_id or uuid.uuid4()
    delivery_id = uuid.uuid4()
    order = {
        "id": str(order_id),
        "status": "paid",
        "email": "ada@example.com",
        "customer_name": "Ada Lovelace",
        "currency": "EUR",
        "subtotal_minor": 2900,
        "shipping_minor": 0,
        "total_minor": 2900,
        "lines": [
            {"sku": "MUG-1", "name": "Mug", "quantity": 2, "unit_price_minor": 1450, "line_total_minor": 2900}
        ],
        "shipping_address": {"name": "Ada Lovelace", "city": "London", "country": "GB", "note": note},
        "created_at": "2026-11-24T10:00:00+00:00",
        "updated_at": "2026-11-24T10:01:00+00:00",
        "version": version,
    }
    event = {
        "from_status": "pending_payment",
        "to_status": "paid",
        "actor": "stripe",
        "at": "2026-11-24T10:01:00+00:00",
        "data": {"intent_id": "pi_123"},
    }
    return DeliveryRequest(
        delivery_id=delivery_id,
        idempotency_key=key or f"{order_id}:sns:{version}",
        event_type=event_type,
        order_id=order_id,
        order_version=version,
        payload={"order": order, "event": event},
    )


def receive_all(queue_url: str, count: int) -> list[dict[str, Any]]:
    """Read `count` messages from the queue (deleting them), polling until they are all there."""
    sqs = aws_client("sqs")
    seen: dict[str, dict[str, Any]] = {}

    def check() -> bool:
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        for message in response.get("Messages", []):
            seen[message["MessageId"]] = message
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(seen) >= count

    eventually(check, what=f"{count} messages in {queue_url}")
    assert len(seen) == count
    return list(seen.values())


def queue_depth(queue_url: str) -> int:
    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


@pytest.fixture
def sns_calls(aws_sandbox: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """The SNS operations the adapter's client performs: [{"operation", "params", "response"}]."""
    client = aws_client("sns")
    calls: list[dict[str, Any]] = []

    def on_params(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append({"operation": model.name, "params": params, "response": None})

    def on_response(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if calls and calls[-1]["operation"] == model.name:
            calls[-1]["response"] = parsed

    client.meta.events.register("provide-client-params.sns", on_params, unique_id="test-sns-params")
    client.meta.events.register("after-call.sns", on_response, unique_id="test-sns-response")
    yield calls
    client.meta.events.unregister("provide-client-params.sns", unique_id="test-sns-params")
    client.meta.events.unregister("after-call.sns", unique_id="test-sns-response")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sns_adapter_satisfies_the_port() -> None:
    adapter = SnsAdapter()
    assert isinstance(adapter, IntegrationAdapter)
    assert (adapter.name, adapter.max_batch) == ("sns", 10)


def test_a_batch_of_ten_is_one_publish_batch_and_reaches_the_subscribed_queue(
    aws_sandbox: dict[str, Any], sns_calls: list[dict[str, Any]]
) -> None:
    requests = [delivery(event_type=EVENT_TYPES[i % len(EVENT_TYPES)], version=i + 1) for i in range(10)]

    outcomes = SnsAdapter().deliver(requests)

    assert [call["operation"] for call in sns_calls] == ["PublishBatch"]
    assert all(outcome.ok for outcome in outcomes), outcomes
    # Each delivery's external id is the MessageId SNS gave its entry.
    call = sns_calls[0]
    entry_of = {entry["Id"]: entry for entry in call["params"]["PublishBatchRequestEntries"]}
    sent_key = {entry["Id"]: json.loads(entry["Message"])["idempotency_key"] for entry in entry_of.values()}
    message_id_of_key = {
        sent_key[result["Id"]]: result["MessageId"] for result in call["response"]["Successful"]
    }
    external_id = {outcome.delivery_id: outcome.external_id for outcome in outcomes}
    assert {r.delivery_id: message_id_of_key[r.idempotency_key] for r in requests} == external_id
    assert len(set(external_id.values())) == 10

    received = receive_all(aws_sandbox["queue_url"], 10)
    by_key = {json.loads(m["Body"])["idempotency_key"]: m for m in received}
    assert set(by_key) == {r.idempotency_key for r in requests}
    for request in requests:
        message = by_key[request.idempotency_key]
        assert json.loads(message["Body"]) == {
            "schema_version": 1,
            "event_type": request.event_type,
            "order_id": str(request.order_id),
            "order_version": request.order_version,
            "idempotency_key": request.idempotency_key,
            "occurred_at": "2026-11-24T10:01:00+00:00",
            "order": request.payload["order"],
            "event": request.payload["event"],
        }
        assert message["MessageAttributes"] == {
            "event_type": {"DataType": "String", "StringValue": request.event_type},
            "order_id": {"DataType": "String", "StringValue": str(request.order_id)},
        }


def test_a_single_delivery_uses_publish(aws_sandbox: dict[str, Any], sns_calls: list[dict[str, Any]]) -> None:
    request = delivery(event_type="order.refunded")

    [outcome] = SnsAdapter().deliver([request])

    assert [call["operation"] for call in sns_calls] == ["Publish"]
    assert outcome.ok and outcome.delivery_id == request.delivery_id
    assert outcome.external_id == sns_calls[0]["response"]["MessageId"]
    [message] = receive_all(aws_sandbox["queue_url"], 1)
    body = json.loads(message["Body"])
    assert (body["event_type"], body["order_id"]) == ("order.refunded", str(request.order_id))


def test_fifo_topic_drops_a_repeated_delivery_and_groups_by_order(
    aws_sandbox: dict[str, Any], settings: Any
) -> None:
    settings.SNS_FIFO = True
    fifo = aws_setup(demo_queue=True)
    assert fifo["topic_arn"].endswith(":cis-order-events.fifo")
    assert fifo["queue_url"].endswith("/cis-order-events-demo.fifo")
    request = delivery()

    first = SnsAdapter().deliver([request])
    again = SnsAdapter().deliver([request])  # a retry of a delivery that had in fact gone out

    assert first[0].ok and again[0].ok
    assert queue_depth(fifo["queue_url"]) == 1
    [message] = receive_all(fifo["queue_url"], 1)
    assert message["Attributes"]["MessageGroupId"] == str(request.order_id)
    assert message["Attributes"]["MessageDeduplicationId"] == request.idempotency_key
    # Nothing went to the standard topic's queue.
    assert queue_depth(aws_sandbox["queue_url"]) == 0

    # The next version of the same order is a new message, in the same group, after the first.
    later = delivery(order_id=request.order_id, version=3)
    other = delivery()
    assert all(o.ok for o in SnsAdapter().deliver([later, other]))
    received = receive_all(fifo["queue_url"], 2)
    assert {m["Attributes"]["MessageGroupId"] for m in received} == {
        str(request.order_id),
        str(other.order_id),
    }


def test_fifo_deduplication_id_is_the_key_or_its_hash() -> None:
    assert fifo_deduplication_id("order-1:sns:3") == "order-1:sns:3"
    for bad in ["has a space", "x" * 129, "naïve"]:
        hashed = fifo_deduplication_id(bad)
        assert len(hashed) == 64 and hashed == fifo_deduplication_id(bad)
        assert all(c in "0123456789abcdef" for c in hashed)


@pytest.mark.parametrize("how", ["by name", "by arn"])
@pytest.mark.parametrize("count", [1, 3])
def test_a_missing_topic_is_a_permanent_error(
    aws_sandbox: dict[str, Any], settings: Any, how: str, count: int
) -> None:
    if how == "by name":
        settings.SNS_TOPIC_NAME = "no-such-topic"
    else:
        settings.SNS_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    requests = [delivery() for _ in range(count)]

    outcomes = SnsAdapter().deliver(requests)

    assert {o.delivery_id for o in outcomes} == {r.delivery_id for r in requests}
    for outcome in outcomes:
        assert outcome.error is not None
        assert not outcome.error.transient
        assert (outcome.error.error_class, outcome.error.provider_status) == ("NotFound", 404)
    assert queue_depth(aws_sandbox["queue_url"]) == 0


@pytest.mark.parametrize("topic_arn", ["", "arn:aws:sns:us-east-1:123456789012:cis-order-events"])
@pytest.mark.parametrize("count", [1, 3])
def test_an_unreachable_endpoint_is_a_transient_error(settings: Any, topic_arn: str, count: int) -> None:
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{closed_port()}"
    settings.AWS_ACCESS_KEY_ID = settings.AWS_SECRET_ACCESS_KEY = "testing"
    settings.SNS_TOPIC_ARN = topic_arn
    requests = [delivery() for _ in range(count)]

    outcomes = SnsAdapter().deliver(requests)

    assert len(outcomes) == count
    for outcome in outcomes:
        assert outcome.error is not None and outcome.error.transient
        assert outcome.error.error_class == "EndpointConnectionError"


def test_one_oversized_message_fails_alone(aws_sandbox: dict[str, Any]) -> None:
    small = [delivery() for _ in range(2)]
    huge = delivery(note="x" * 300_000)

    outcomes = {o.delivery_id: o for o in SnsAdapter().deliver([small[0], huge, small[1]])}

    assert outcomes[huge.delivery_id].error is not None
    assert not outcomes[huge.delivery_id].error.transient
    assert outcomes[huge.delivery_id].error.error_class == "MessageTooLarge"
    assert all(outcomes[r.delivery_id].ok for r in small)
    assert len(receive_all(aws_sandbox["queue_url"], 2)) == 2


def test_batches_are_split_to_stay_under_256_kib(
    aws_sandbox: dict[str, Any], sns_calls: list[dict[str, Any]]
) -> None:
    requests = [delivery(note="x" * 100_000) for _ in range(3)]

    outcomes = SnsAdapter().deliver(requests)

    assert all(o.ok for o in outcomes), outcomes
    assert [call["operation"] for call in sns_calls] == ["PublishBatch", "Publish"]
    assert len(receive_all(aws_sandbox["queue_url"], 3)) == 3


def _client_error(code: str, status: int, operation: str = "Publish") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@pytest.mark.parametrize(
    ("exc", "transient", "backoff"),
    [
        (_client_error("Throttling", 400), True, THROTTLE_BACKOFF_SECONDS),
        (_client_error("ThrottledException", 429), True, THROTTLE_BACKOFF_SECONDS),
        (_client_error("InternalError", 500), True, 0.0),
        (_client_error("ServiceUnavailable", 503), True, 0.0),
        (_client_error("NotFound", 404), False, 0.0),
        (_client_error("AuthorizationError", 403), False, 0.0),
        (_client_error("InvalidParameter", 400), False, 0.0),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True, 0.0),
        (NoCredentialsError(), False, 0.0),
    ],
)
def test_errors_are_classified(exc: Exception, transient: bool, backoff: float) -> None:
    error, backoff_seconds = classify_error(exc)
    assert (error.transient, backoff_seconds) == (transient, backoff)


def test_setup_aws_twice_gives_the_same_arns_and_one_subscription(aws_sandbox: dict[str, Any]) -> None:
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        call_command("setup_aws", "--demo-queue", stdout=out)
        outputs.append(dict(line.split(": ", 1) for line in out.getvalue().splitlines()))

    assert outputs[0] == outputs[1]
    assert outputs[0]["topic_arn"] == aws_sandbox["topic_arn"]
    assert outputs[0]["queue_arn"] == aws_sandbox["queue_arn"]
    assert outputs[0]["subscription_arn"] == aws_sandbox["subscription_arn"]
    subscriptions = aws_client("sns").list_subscriptions_by_topic(TopicArn=aws_sandbox["topic_arn"])
    assert len(subscriptions["Subscriptions"]) == 1
    [subscription] = subscriptions["Subscriptions"]
    attributes = aws_client("sns").get_subscription_attributes(
        SubscriptionArn=subscription["SubscriptionArn"]
    )
    assert attributes["Attributes"]["RawMessageDelivery"] == "true"
    policy = json.loads(
        aws_client("sqs").get_queue_attributes(QueueUrl=aws_sandbox["queue_url"], AttributeNames=["Policy"])[
            "Attributes"
        ]["Policy"]
    )
    assert policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"] == aws_sandbox["topic_arn"]


def test_setup_aws_without_demo_queue_creates_only_the_topic(aws_sandbox: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("setup_aws", "--no-demo-queue", stdout=out)
    assert out.getvalue().splitlines() == [
        f"topic_arn: {aws_sandbox['topic_arn']}",
        "fifo: False",
        f"alerts_topic_arn: {aws_sandbox['alerts_topic_arn']}",
    ]
