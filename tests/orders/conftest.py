"""Fixtures of the orders tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from core.aws import aws_clear_caches


@pytest.fixture
def fresh_dynamodb_client(dynamodb: Any) -> Iterator[Any]:
    """A DynamoDB client of the test's own, shared with no other code: for counting its calls
    or stubbing its answers (`core.aws` hands everyone else the cached one)."""
    from orders.repositories.dynamodb import dynamodb_client

    aws_clear_caches()
    client = dynamodb_client()
    aws_clear_caches()  # forgotten at once: the next caller gets a client of its own
    yield client
    aws_clear_caches()
