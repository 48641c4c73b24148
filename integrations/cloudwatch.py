"""CloudWatch: the destination of the application's log lines and figures.

- `log_handler()`: a watchtower handler shipping log lines to a log group in batches from its own
  thread, so a request never waits on CloudWatch; when CloudWatch cannot be reached, lines are
  dropped with a warning (watchtower's), never raised into the code that logged.
- `put_metric_data()`: PutMetricData in batches.

Both use the AWS settings of `core.aws` (moto outside production). Which lines and which
figures go is monitoring's business (`monitoring.logs`, `monitoring.cloudwatch`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from typing import Any

from core.aws import aws_client

logger = logging.getLogger(__name__)

# Metric data per PutMetricData call (AWS allows 1,000; small batches keep each call short).
METRIC_BATCH = 20


def ensure_log_group(name: str) -> None:
    """Create the log group unless it exists."""
    logs = aws_client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=name)


def log_handler(*, group: str, send_interval: float = 5) -> logging.Handler:
    """A watchtower handler for `group`, one stream per host, program and process."""
    import watchtower

    try:
        ensure_log_group(group)
    except Exception as exc:  # noqa: BLE001 - CloudWatch down must not stop the app starting
        logger.warning("CloudWatch Logs unreachable at start: %s", type(exc).__name__)
    program = os.path.basename(sys.argv[0]) or "python"
    return watchtower.CloudWatchLogHandler(
        log_group_name=group,
        log_stream_name=f"{socket.gethostname()}/{program}/{{process_id}}",
        boto3_client=aws_client("logs"),
        create_log_group=False,
        send_interval=send_interval,
    )


def put_metric_data(namespace: str, data: list[dict[str, Any]]) -> int:
    """Send metric data in batches; returns the number of calls made."""
    client = aws_client("cloudwatch")
    calls = 0
    for start in range(0, len(data), METRIC_BATCH):
        client.put_metric_data(Namespace=namespace, MetricData=data[start : start + METRIC_BATCH])
        calls += 1
    return calls
