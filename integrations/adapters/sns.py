"""The SNS adapter: one message per delivery on the order-events topic, batched with PublishBatch.

Each message's body is JSON (`message_body`): schema_version, event_type, order_id,
order_version, idempotency_key, occurred_at, and the order snapshot and the change. The
attributes `event_type` and `order_id` let subscribers filter without parsing the body. On a
FIFO topic (`SNS_FIFO`) the order id is the MessageGroupId, so one order's events stay in order,
and the delivery's idempotency key is the MessageDeduplicationId, so a retried delivery that
had in fact been published is dropped by SNS. On a standard topic subscribers drop repeats by
`idempotency_key`.

Failures are classified, never raised: connection trouble, timeouts, throttling and 5xx are
transient; a missing topic, refused credentials and other 4xx are permanent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from botocore import exceptions as botocore_exceptions
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from core.aws import aws_client
from integrations.adapters.base import DeliveryError, DeliveryOutcome, DeliveryRequest, ProbeFailed
from integrations.aws import SnsConfig, sns_topic_arn

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# The event type of the synthetic probe's messages; they also carry the attribute probe = "true"
# so that subscribers can filter them out (a filter policy on event_type drops them already).
PROBE_EVENT_TYPE = "monitoring.probe"
# SNS's limit for one message, and for the sum of the messages of one PublishBatch.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_BATCH_ENTRIES = 10
# Seconds the adapter should pause after SNS said to slow down (its quotas are per second).
THROTTLE_BACKOFF_SECONDS = 2.0

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "Throttled",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "KMSThrottling",
        "SlowDown",
    }
)
TRANSIENT_CODES = THROTTLING_CODES | {
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    # Temporary credentials ran out: the next attempt gets fresh ones.
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
}
# Errors about the topic or the credentials: every message of the call fails the same way.
CALL_WIDE_PERMANENT_CODES = frozenset(
    {
        "NotFound",
        "NotFoundException",
        "AuthorizationError",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidSecurity",
        "KMSAccessDenied",
        "KMSDisabled",
        "KMSNotFound",
    }
)
# Client-side problems no retry can fix.
_PERMANENT_BOTOCORE = (
    botocore_exceptions.NoCredentialsError,
    botocore_exceptions.PartialCredentialsError,
    botocore_exceptions.NoRegionError,
    botocore_exceptions.ParamValidationError,
    botocore_exceptions.UnknownServiceError,
    botocore_exceptions.InvalidConfigError,
)
# Every printable ASCII character but space, 1 to 128 of them (SNS's MessageDeduplicationId).
_DEDUPLICATION_ID = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass(frozen=True, slots=True)
class _Message:
    request: DeliveryRequest
    body: str
    attributes: dict[str, dict[str, str]]
    group_id: str | None
    deduplication_id: str | None

    @property
    def size(self) -> int:
        """Bytes SNS counts against its limit: the body and each attribute's name, type and value."""
        attributes = sum(
            len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
            for name, value in self.attributes.items()
        )
        return len(self.body.encode()) + attributes

    def fields(self) -> dict[str, Any]:
        """The parameters Publish and a PublishBatch entry share."""
        fields: dict[str, Any] = {"Message": self.body, "MessageAttributes": self.attributes}
        if self.group_id is not None:
            fields["MessageGroupId"] = self.group_id
            fields["MessageDeduplicationId"] = self.deduplication_id
        return fields


def message_body(request: DeliveryRequest) -> str:
    """The JSON every subscriber receives for one delivery (schema_version 1)."""
    event = request.payload.get("event") or {}
    order = request.payload.get("order") or {}
    return json.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "event_type": request.event_type,
            "order_id": str(request.order_id),
            "order_version": request.order_version,
            "idempotency_key": request.idempotency_key,
            "occurred_at": event.get("at") or order.get("updated_at") or "",
            "order": order,
            "event": event,
        },
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
    )


def fifo_deduplication_id(idempotency_key: str) -> str:
    """The idempotency key itself when SNS accepts it, else its SHA-256 (64 hex characters)."""
    if _DEDUPLICATION_ID.fullmatch(idempotency_key):
        return idempotency_key
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def classify_error(exc: Exception) -> tuple[DeliveryError, float]:
    """A boto3 failure as a DeliveryError and the seconds of backoff it asks for (throttling)."""
    if isinstance(exc, botocore_exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "ClientError")
        message = str(error.get("Message") or exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in THROTTLING_CODES or status == 429:
            return DeliveryError(True, code, message[:1000], status), THROTTLE_BACKOFF_SECONDS
        if code in TRANSIENT_CODES:
            return DeliveryError(True, code, message[:1000], status), 0.0
        if code in CALL_WIDE_PERMANENT_CODES:
            return DeliveryError(False, code, message[:1000], status), 0.0
        if status is None:
            return DeliveryError(True, code, message[:1000], None), 0.0
        return DeliveryError.from_http(status, message, error_class=code), 0.0
    name = type(exc).__name__
    if isinstance(exc, _PERMANENT_BOTOCORE):
        return DeliveryError(False, name, str(exc)[:1000]), 0.0
    # Connection refused or reset, timeouts, credential lookups that failed for now, and any
    # other trouble on the way: worth another attempt.
    return DeliveryError(True, name, str(exc)[:1000]), 0.0


def _failed(
    requests: list[DeliveryRequest], error: DeliveryError, backoff: float = 0.0
) -> list[DeliveryOutcome]:
    return [
        DeliveryOutcome(delivery_id=request.delivery_id, error=error, backoff_seconds=backoff)
        for request in requests
    ]


class SnsAdapter:
    """Publishes order events to the SNS topic of the settings (`integrations.aws`)."""

    name: ClassVar[str] = "sns"
    max_batch: ClassVar[int] = MAX_BATCH_ENTRIES

    def __init__(self, *, topic_arn: str | None = None) -> None:
        self._topic_arn = topic_arn

    def deliver(self, requests: list[DeliveryRequest]) -> list[DeliveryOutcome]:
        if not requests:
            return []
        try:
            topic_arn = self._topic_arn or sns_topic_arn()
            client = aws_client("sns")
        except (botocore_exceptions.BotoCoreError, botocore_exceptions.ClientError) as exc:
            error, backoff = classify_error(exc)
            return _failed(requests, error, backoff)

        fifo = SnsConfig.from_settings().fifo or topic_arn.endswith(".fifo")
        outcomes: list[DeliveryOutcome] = []
        messages: list[_Message] = []
        for request in requests:
            message = self._message(request, fifo=fifo)
            if isinstance(message, DeliveryError):
                outcomes.append(DeliveryOutcome(delivery_id=request.delivery_id, error=message))
            else:
                messages.append(message)
        for chunk in _chunks(messages):
            if len(chunk) == 1:
                outcomes.append(self._publish(client, topic_arn, chunk[0]))
            else:
                outcomes.extend(self._publish_batch(client, topic_arn, chunk))
        return outcomes

    def probe(self) -> str:
        """Publish one message marked `probe` = "true" (and event_type "monitoring.probe") to the
        order-events topic. The client's own timeouts (5 s to connect, 5 s to read, one attempt;
        see `core.aws`) bound it."""
        try:
            topic_arn = self._topic_arn or sns_topic_arn()
            client = aws_client("sns")
            fifo = SnsConfig.from_settings().fifo or topic_arn.endswith(".fifo")
            probe_id = uuid.uuid4().hex
            fields: dict[str, Any] = {
                "Message": json.dumps(
                    {
                        "schema_version": SCHEMA_VERSION,
                        "event_type": PROBE_EVENT_TYPE,
                        "probe": True,
                        "probe_id": probe_id,
                        "occurred_at": timezone.now().isoformat(),
                    },
                    separators=(",", ":"),
                ),
                "MessageAttributes": {
                    "probe": {"DataType": "String", "StringValue": "true"},
                    "event_type": {"DataType": "String", "StringValue": PROBE_EVENT_TYPE},
                },
            }
            if fifo:
                fields["MessageGroupId"] = "monitoring-probe"
                fields["MessageDeduplicationId"] = probe_id
            response = client.publish(TopicArn=topic_arn, **fields)
        except (botocore_exceptions.BotoCoreError, botocore_exceptions.ClientError) as exc:
            error, _backoff = classify_error(exc)
            raise ProbeFailed.from_error(error) from exc
        return f"published message {response['MessageId']}"

    def _message(self, request: DeliveryRequest, *, fifo: bool) -> _Message | DeliveryError:
        """The message for one delivery, or why it can never be sent."""
        try:
            body = message_body(request)
        except (TypeError, ValueError) as exc:
            return DeliveryError(False, "InvalidPayload", f"payload is not JSON-serialisable: {exc}")
        message = _Message(
            request=request,
            body=body,
            attributes={
                "event_type": {"DataType": "String", "StringValue": request.event_type},
                "order_id": {"DataType": "String", "StringValue": str(request.order_id)},
            },
            group_id=str(request.order_id) if fifo else None,
            deduplication_id=fifo_deduplication_id(request.idempotency_key) if fifo else None,
        )
        if message.size > MAX_MESSAGE_BYTES:
            return DeliveryError(
                False, "MessageTooLarge", f"message is {message.size} bytes; SNS takes {MAX_MESSAGE_BYTES}"
            )
        return message

    def _publish(self, client: Any, topic_arn: str, message: _Message) -> DeliveryOutcome:
        delivery_id = message.request.delivery_id
        try:
            response = client.publish(TopicArn=topic_arn, **message.fields())
        except (botocore_exceptions.BotoCoreError, botocore_exceptions.ClientError) as exc:
            error, backoff = classify_error(exc)
            return DeliveryOutcome(delivery_id=delivery_id, error=error, backoff_seconds=backoff)
        return DeliveryOutcome(delivery_id=delivery_id, external_id=response["MessageId"])

    def _publish_batch(self, client: Any, topic_arn: str, messages: list[_Message]) -> list[DeliveryOutcome]:
        # Entry ids are positions: short, safe, and distinct even if a delivery came twice.
        by_id = {f"m{index}": message for index, message in enumerate(messages)}
        requests = [message.request for message in messages]
        try:
            response = client.publish_batch(
                TopicArn=topic_arn,
                PublishBatchRequestEntries=[{"Id": entry_id, **m.fields()} for entry_id, m in by_id.items()],
            )
        except (botocore_exceptions.BotoCoreError, botocore_exceptions.ClientError) as exc:
            error, backoff = classify_error(exc)
            if error.transient or error.error_class in CALL_WIDE_PERMANENT_CODES:
                return _failed(requests, error, backoff)
            # Refused as a whole for some other reason (one bad entry?): one by one, so a single
            # bad message does not take the others down with it.
            logger.warning("SNS PublishBatch refused (%s); publishing one by one", error.error_class)
            return [self._publish(client, topic_arn, message) for message in messages]

        outcomes: list[DeliveryOutcome] = []
        for entry in response.get("Successful", []):
            message = by_id.pop(entry["Id"], None)
            if message is not None:
                outcomes.append(
                    DeliveryOutcome(delivery_id=message.request.delivery_id, external_id=entry["MessageId"])
                )
        for entry in response.get("Failed", []):
            message = by_id.pop(entry["Id"], None)
            if message is None:
                continue
            code = str(entry.get("Code") or "PublishBatchFailed")
            transient = code in TRANSIENT_CODES or not entry.get("SenderFault", False)
            outcomes.append(
                DeliveryOutcome(
                    delivery_id=message.request.delivery_id,
                    error=DeliveryError(transient, code, str(entry.get("Message") or code)[:1000]),
                    backoff_seconds=THROTTLE_BACKOFF_SECONDS if code in THROTTLING_CODES else 0.0,
                )
            )
        # An entry SNS did not mention: unknown whether it went out, so try again (FIFO dedups).
        outcomes.extend(
            _failed(
                [message.request for message in by_id.values()],
                DeliveryError(True, "NoResult", "PublishBatch answered nothing for this entry"),
            )
        )
        return outcomes


def _chunks(messages: list[_Message]) -> Iterator[list[_Message]]:
    """Consecutive groups of at most 10 messages and 256 KiB in all (PublishBatch's limits)."""
    chunk: list[_Message] = []
    size = 0
    for message in messages:
        if chunk and (len(chunk) == MAX_BATCH_ENTRIES or size + message.size > MAX_MESSAGE_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += message.size
    if chunk:
        yield chunk
