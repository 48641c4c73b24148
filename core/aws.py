"""The one factory of boto3 clients: settings in, a cached thread-safe client out.

Every app asks here (`aws_client("sns")`, `aws_client("dynamodb", attempts=3, pool=25)`), so the
endpoint, region, credentials and timeouts are decided in one place:

- `AWS_ENDPOINT_URL` is the only endpoint source (a per-service override, such as
  `DYNAMODB_ENDPOINT_URL`, is passed by the caller as `endpoint_url`); endpoints from the
  environment or an AWS config file are ignored, so settings and clients never disagree. Empty
  means real AWS.
- `AWS_REGION`, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (empty means boto3's own chain:
  role, profile...).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 5


@dataclass(frozen=True, slots=True)
class AwsEndpoint:
    """Where and as whom clients connect, read afresh from the settings on each call."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str

    @classmethod
    def from_settings(cls, *, endpoint_url: str = "") -> AwsEndpoint:
        return cls(
            endpoint_url=endpoint_url or settings.AWS_ENDPOINT_URL or "",
            region=settings.AWS_REGION or "us-east-1",
            access_key_id=settings.AWS_ACCESS_KEY_ID or "",
            secret_access_key=settings.AWS_SECRET_ACCESS_KEY or "",
        )


def aws_client(service: str, *, endpoint_url: str = "", attempts: int = 1, pool: int = 10) -> Any:
    """A boto3 client for `service` built from the settings.

    `attempts` is botocore's total attempts per call (1: the caller, e.g. the delivery ledger,
    decides retries); `pool` its connection pool size. Cached per (service, endpoint,
    credentials, attempts, pool): boto3 clients are thread-safe, and building one costs
    milliseconds of CPU.
    """
    return _client(service, AwsEndpoint.from_settings(endpoint_url=endpoint_url), attempts, pool)


def aws_partition(region: str) -> str:
    """The partition ("aws", "aws-cn", ...) a region belongs to."""
    return boto3.session.Session().get_partition_for_region(region)


@functools.lru_cache(maxsize=32)
def _client(service: str, endpoint: AwsEndpoint, attempts: int, pool: int) -> Any:
    kwargs: dict[str, Any] = {
        "region_name": endpoint.region,
        "config": Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            # total_max_attempts counts the first attempt ("max_attempts" would count retries).
            retries={"total_max_attempts": attempts, "mode": "standard"},
            max_pool_connections=pool,
            ignore_configured_endpoint_urls=True,
        ),
    }
    if endpoint.endpoint_url:
        kwargs["endpoint_url"] = endpoint.endpoint_url
    if endpoint.access_key_id and endpoint.secret_access_key:
        kwargs["aws_access_key_id"] = endpoint.access_key_id
        kwargs["aws_secret_access_key"] = endpoint.secret_access_key
    # A session of its own: boto3's default session is not thread-safe to create clients from.
    return boto3.session.Session().client(service, **kwargs)


def aws_clear_caches() -> None:
    """Forget cached clients (tests, or after credentials rotate)."""
    _client.cache_clear()
