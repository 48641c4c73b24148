"""AWS clients and resources for the fan-out: one place that turns settings into boto3 clients.

Settings read (each with a default until `config/settings.py` defines it):

- `AWS_ENDPOINT_URL`: the stand-in (moto) outside production, ``http://127.0.0.1:8427``;
  empty means real AWS. It is the only endpoint source: endpoints from the environment or an
  AWS config file are ignored, so settings and clients never disagree.
- `AWS_REGION` (``us-east-1``), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (``testing``
  outside production; in production, empty means boto3's own chain: role, profile...).
- `SNS_TOPIC_NAME` (``cis-order-events``), `SNS_TOPIC_ARN` (optional; otherwise built from the
  name, the region and the caller's account), `SNS_FIFO` (the topic name gets ``.fifo``),
  `SNS_DEMO_QUEUE_NAME` (``cis-order-events-demo``): the SQS queue `aws_setup` subscribes so a
  developer can read what was published.

Clients make one attempt per call with short timeouts: the delivery ledger decides retries.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings

logger = logging.getLogger(__name__)

LOCAL_ENDPOINT_URL = "http://127.0.0.1:8427"
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 5
FIFO_SUFFIX = ".fifo"


@dataclass(frozen=True, slots=True)
class AwsConfig:
    """The AWS settings in force, read afresh on each call (tests override them)."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str
    topic_name: str
    topic_arn: str
    fifo: bool
    demo_queue_name: str

    @classmethod
    def from_settings(cls) -> AwsConfig:
        production = bool(getattr(settings, "PRODUCTION", False))
        local_default = "" if production else "testing"
        fifo = bool(getattr(settings, "SNS_FIFO", False))
        topic_arn = getattr(settings, "SNS_TOPIC_ARN", "") or ""
        topic_name = topic_arn.rsplit(":", 1)[-1] if topic_arn else getattr(settings, "SNS_TOPIC_NAME", "")
        return cls(
            endpoint_url=getattr(settings, "AWS_ENDPOINT_URL", "" if production else LOCAL_ENDPOINT_URL)
            or "",
            region=getattr(settings, "AWS_REGION", "") or "us-east-1",
            access_key_id=getattr(settings, "AWS_ACCESS_KEY_ID", local_default) or "",
            secret_access_key=getattr(settings, "AWS_SECRET_ACCESS_KEY", local_default) or "",
            topic_name=_with_fifo_suffix(topic_name or "cis-order-events", fifo),
            topic_arn=topic_arn,
            fifo=fifo,
            demo_queue_name=_with_fifo_suffix(
                getattr(settings, "SNS_DEMO_QUEUE_NAME", "") or "cis-order-events-demo", fifo
            ),
        )


def _with_fifo_suffix(name: str, fifo: bool) -> str:
    return f"{name}{FIFO_SUFFIX}" if fifo and not name.endswith(FIFO_SUFFIX) else name


def aws_client(service: str) -> Any:
    """A boto3 client for `service` ("sns", "sqs", "sts", ...) built from the settings.

    Cached per (service, endpoint, region, credentials): boto3 clients are thread-safe, and
    building one costs milliseconds of CPU.
    """
    config = AwsConfig.from_settings()
    return _client(
        service, config.endpoint_url, config.region, config.access_key_id, config.secret_access_key
    )


@functools.lru_cache(maxsize=32)
def _client(service: str, endpoint_url: str, region: str, access_key_id: str, secret_access_key: str) -> Any:
    kwargs: dict[str, Any] = {
        "region_name": region,
        "config": Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            # One attempt, no retry ("max_attempts" would mean one *retry* in botocore's config).
            retries={"total_max_attempts": 1, "mode": "standard"},
            ignore_configured_endpoint_urls=True,
        ),
    }
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if access_key_id and secret_access_key:
        kwargs["aws_access_key_id"] = access_key_id
        kwargs["aws_secret_access_key"] = secret_access_key
    # A session of its own: boto3's default session is not thread-safe to create clients from.
    return boto3.session.Session().client(service, **kwargs)


def sns_topic_arn() -> str:
    """The topic the SNS adapter publishes to, without creating it.

    `SNS_TOPIC_ARN` when set; otherwise arn:<partition>:sns:<region>:<account>:<name>, with the
    account from STS GetCallerIdentity (which needs no permission). A missing topic then shows as
    NotFound on publish, a permanent error, instead of being created behind the operator's back.
    """
    config = AwsConfig.from_settings()
    if config.topic_arn:
        return config.topic_arn
    return _derived_topic_arn(
        config.endpoint_url, config.region, config.access_key_id, config.secret_access_key, config.topic_name
    )


@functools.lru_cache(maxsize=32)
def _derived_topic_arn(
    endpoint_url: str, region: str, access_key_id: str, secret_access_key: str, topic_name: str
) -> str:
    account = _client("sts", endpoint_url, region, access_key_id, secret_access_key).get_caller_identity()[
        "Account"
    ]
    partition = boto3.session.Session().get_partition_for_region(region)
    return f"arn:{partition}:sns:{region}:{account}:{topic_name}"


def aws_clear_caches() -> None:
    """Forget cached clients and topic ARNs (tests, or after credentials rotate)."""
    _client.cache_clear()
    _derived_topic_arn.cache_clear()


def aws_setup(*, demo_queue: bool) -> dict[str, Any]:
    """Create the SNS topic (and with `demo_queue` an SQS queue subscribed to it). Idempotent.

    The topic is FIFO when `SNS_FIFO` (with ContentBasedDeduplication off: every message carries
    its delivery's idempotency key as MessageDeduplicationId). The demo queue matches the topic's
    kind, receives raw messages (the JSON body as published, attributes as SQS attributes), and
    its policy lets only this topic send to it. Running it again changes nothing and answers the
    same ARNs.
    """
    config = AwsConfig.from_settings()
    sns = aws_client("sns")
    topic_attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if config.fifo else {}
    topic_arn = sns.create_topic(Name=config.topic_name, Attributes=topic_attributes)["TopicArn"]
    if config.topic_arn and config.topic_arn != topic_arn:
        logger.warning("SNS_TOPIC_ARN is %s but the topic created is %s", config.topic_arn, topic_arn)
    result: dict[str, Any] = {"topic_arn": topic_arn, "fifo": config.fifo}
    # CloudWatch Logs' group for the application's lines (monitoring.logs), when it ships them.
    if getattr(settings, "CLOUDWATCH_LOGS_ENABLED", False):
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
    arn = getattr(settings, "ALERTS_SNS_TOPIC_ARN", "") or ""
    return arn.rsplit(":", 1)[-1] if arn else getattr(settings, "ALERTS_SNS_TOPIC_NAME", "cis-ops-alerts")


def alerts_topic_arn() -> str:
    """The operators' alerts topic: ALERTS_SNS_TOPIC_ARN, or derived like `sns_topic_arn`."""
    arn = getattr(settings, "ALERTS_SNS_TOPIC_ARN", "") or ""
    if arn:
        return arn
    config = AwsConfig.from_settings()
    return _derived_topic_arn(
        config.endpoint_url,
        config.region,
        config.access_key_id,
        config.secret_access_key,
        alerts_topic_name(),
    )


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
