"""Reading what reached an SQS queue on the moto stand-in."""

from __future__ import annotations

import json
from typing import Any

from core.aws import aws_client


def drain(queue_url: str) -> list[dict[str, Any]]:
    """Every message waiting in the queue now, its body parsed as JSON; deleted as read."""
    sqs = aws_client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not batch:
            return found
        found += [json.loads(m["Body"]) for m in batch]
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
        )
