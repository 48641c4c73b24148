"""AWS resources of the fan-out: the SNS topics of order events and alerts, and their setup.

Clients come from the one factory, `core.aws.aws_client` (endpoint, region, credentials and
timeouts are decided there, with one attempt per call: the delivery ledger decides retries).
The SNS settings read here:

- `SNS_TOPIC_NAME`, `SNS_TOPIC_ARN` (optional; otherwise built from the name, the region and
  the caller's account), `SNS_FIFO` (the topic name gets ``.fifo``), `SNS_DEMO_QUEUE_NAME`: the
  SQS queue `aws_setup` subscribes so a developer can read what was published.
- `ALERTS_SNS_TOPIC_NAME` / `ALERTS_SNS_TOPIC_ARN`: the operators' alerts topic.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core.aws import AwsEndpoint, aws_client, aws_partition
from core.aws import aws_clear_caches as clear_client_caches

logger = logging.getLogger(__name__)

FIFO_SUFFIX = ".fifo"


@dataclass(frozen=True, slots=True)
class SnsConfig:
    """The SNS settings in force, read afresh on each call (tests override them)."""

    topic_name: str
    topic_arn: str
    fifo: bool
    demo_queue_name: str

    @classmethod
    def from_settings(cls) -> SnsConfig:
        fifo = settings.SNS_FIFO
        topic_arn = settings.SNS_TOPIC_ARN
        topic_name = topic_arn.rsplit(":", 1)[-1] if topic_arn else settings.SNS_TOPIC_NAME
        return cls(
            topic_name=_with_fifo_suffix(topic_name, fifo),
            topic_arn=topic_arn,
            fifo=fifo,
            demo_queue_name=_with_fifo_suffix(settings.SNS_DEMO_QUEUE_NAME, fifo),
        )


def _with_fifo_suffix(name: str, fifo: bool) -> str:
    return f"{name}{FIFO_SUFFIX}" if fifo and not name.endswith(FIFO_SUFFIX) else name


def sns_topic_arn() -> str:
    """The topic the SNS adapter publishes to, without creating it.

    `SNS_TOPIC_ARN` when set; otherwise arn:<partition>:sns:<region>:<account>:<name>, with the
    account from STS GetCallerIdentity (which needs no permission). A missing topic then shows as
    NotFound on publish, a permanent error, instead of being created behind the operator's back.
    """
    config = SnsConfig.from_settings()
    if config.topic_arn:
        return config.topic_arn
    return _derived_topic_arn(AwsEndpoint.from_settings(), config.topic_name)


@functools.lru_cache(maxsize=32)
def _derived_topic_arn(endpoint: AwsEndpoint, topic_name: str) -> str:
    # `endpoint` is what `aws_client` reads from the settings now: the cache key of the answer.
    account = aws_client("sts").get_caller_identity()["Account"]
    return f"arn:{aws_partition(endpoint.region)}:sns:{endpoint.region}:{account}:{topic_name}"


def aws_clear_caches() -> None:
    """Forget cached clients and topic ARNs (tests, or after credentials rotate)."""
    clear_client_caches()
    _derived_topic_arn.cache_clear()


def aws_setup(*, demo_queue: bool) -> dict[str, Any]:
    """Create the SNS topic (and with `demo_queue` an SQS queue subscribed to it). Idempotent.

    The topic is FIFO when `SNS_FIFO` (with ContentBasedDeduplication off: every message carries
    its delivery's idempotency key as MessageDeduplicationId). The demo queue matches the topic's
    kind, receives raw messages (the JSON body as published, attributes as SQS attributes), and
    its policy lets only this topic send to it. Running it again changes nothing and answers the
    same ARNs.
    """
    config = SnsConfig.from_settings()
    sns = aws_client("sns")
    topic_attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if config.fifo else {}
    topic_arn = sns.create_topic(Name=config.topic_name, Attributes=topic_attributes)["TopicArn"]
    if config.topic_arn and config.topic_arn != topic_arn:
        logger.warning("SNS_TOPIC_ARN is %s but the topic created is %s", config.topic_arn, topic_arn)
    result: dict[str, Any] = {"topic_arn": topic_arn, "fifo": config.fifo}
    # CloudWatch Logs' group for the application's lines (monitoring.logs), when it ships them.
    if settings.CLOUDWATCH_LOGS_ENABLED:
        from integrations.cloudwatch import ensure_log_group

        ensure_log_group(settings.CLOUDWATCH_LOG_GROUP)
        result["log_group"] = settings.CLOUDWATCH_LOG_GROUP
    # The operators' alerts topic (monitoring.services.alert_raise): a standard topic of its own.
    alerts_arn = sns.create_topic(Name=alerts_topic_name())["TopicArn"]
    result["alerts_topic_arn"] = alerts_arn
    if demo_queue:
        result.update(
            _demo_queue_setup(queue_name=config.demo_queue_name, topic_arn=topic_arn, fifo=config.fifo)
        )
        alerts_queue = _demo_queue_setup(
            queue_name=f"{alerts_topic_name()}-demo", topic_arn=alerts_arn, fifo=False
        )
        result["alerts_queue_url"] = alerts_queue["queue_url"]
    return result


def alerts_topic_name() -> str:
    arn = settings.ALERTS_SNS_TOPIC_ARN
    return arn.rsplit(":", 1)[-1] if arn else settings.ALERTS_SNS_TOPIC_NAME


def alerts_topic_arn() -> str:
    """The operators' alerts topic: ALERTS_SNS_TOPIC_ARN, or derived like `sns_topic_arn`."""
    arn = settings.ALERTS_SNS_TOPIC_ARN
    if arn:
        return arn
    return _derived_topic_arn(AwsEndpoint.from_settings(), alerts_topic_name())


def _demo_queue_setup(*, queue_name: str, topic_arn: str, fifo: bool) -> dict[str, str]:
    sqs = aws_client("sqs")
    sns = aws_client("sns")
    queue_attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    queue_url = sqs.create_queue(QueueName=queue_name, Attributes=queue_attributes)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})

    subscription_arn = ""
    paginator = sns.get_paginator("list_subscriptions_by_topic")
    for page in paginator.paginate(TopicArn=topic_arn):
        for subscription in page["Subscriptions"]:
            if subscription["Protocol"] == "sqs" and subscription["Endpoint"] == queue_arn:
                subscription_arn = subscription["SubscriptionArn"]
                break
        if subscription_arn:
            break
    if subscription_arn:
        sns.set_subscription_attributes(
            SubscriptionArn=subscription_arn, AttributeName="RawMessageDelivery", AttributeValue="true"
        )
    else:
        subscription_arn = sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
    return {"queue_url": queue_url, "queue_arn": queue_arn, "subscription_arn": subscription_arn}
