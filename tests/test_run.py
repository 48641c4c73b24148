"""What `make run` starts, started for real: the Procfile's gunicorn web server and django-q2 cluster.

The processes use their own database (a temporary SQLite file, or the PostgreSQL database named by
DATABASE_URL) and broker, exactly as configured by the environment, and are stopped afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import pytest

from tests.polling import DEADLINE_SECONDS, eventually
from tools.processes import (
    free_port,
    http_bytes,
    logged,
    manage,
    port_closed,
    standins_on_free_ports,
    start,
    stop,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow
METRICS_TOKEN = "run-test-metrics-token"
DEMO_QUEUE = "cis-order-events-demo"
# How long one HTTP request or one `manage.py` command may take before it counts as hung: the
# deadline of a wait, since on a loaded machine either may take long without anything being wrong.
HANG_SECONDS = DEADLINE_SECONDS
# A `manage.py shell` that itself waits (with `eventually`) for another process: Django's start
# plus that wait.
SHELL_WAIT_SECONDS = 2 * DEADLINE_SECONDS

T = TypeVar("T")


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, raw = http_bytes(method, url, body, headers, timeout=HANG_SECONDS)
    return status, json.loads(raw or b"null")


def aws_client(env: dict[str, str], service: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def aws_call(call: Callable[[], T]) -> T:
    """`call()`, botocore's errors (a peer not answering yet, a resource not created yet) turned into
    ValueError, which `eventually` retries (they are not OSError)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except (BotoCoreError, ClientError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


@pytest.fixture(scope="module", params=["orm", "dynamodb"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """`make run`'s processes, with orders in the database, then (ORDER_REPOSITORY=dynamodb) in
    DynamoDB on the Procfile's moto server; yielded once every process the tests use is ready."""
    port = free_port()
    env = {
        **os.environ,
        "ORDER_REPOSITORY": request.param,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "DJANGO_ENV": "development",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "Q_CLUSTER_NAME": f"runtest-{uuid.uuid4().hex[:8]}",
        "Q_WORKERS": "1",
        # The Procfile's stand-ins listen where their settings say: free ports of their own.
        **standins_on_free_ports(),
        "SHEETS_FLUSH_SECONDS": "0.5",
        # Monitoring as `make run` has it: JSON lines and figures to CloudWatch on the moto stand-in.
        "CLOUDWATCH_LOGS_ENABLED": "true",
        "CLOUDWATCH_METRICS_ENABLED": "true",
        "LOG_FORMAT": "json",
        "MONITORING_FLUSH_SECONDS": "0.5",
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    if not env.get("DATABASE_URL"):
        env["SQLITE_PATH"] = str(tmp_path_factory.mktemp("run") / "db.sqlite3")
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        manage(env, *command, timeout=HANG_SECONDS)
    ports = [port] + [
        urlparse(env[name]).port or 0
        for name in ("STRIPE_API_BASE", "SENDGRID_API_BASE", "SHEETS_API_BASE", "AWS_ENDPOINT_URL")
    ]
    log = tmp_path_factory.mktemp("logs") / "honcho.log"
    process = start([str(BIN / "honcho"), "start", "-f", "Procfile"], env=env, log=log)
    base = f"http://127.0.0.1:{port}"

    def ready(check: Callable[[], Any], what: str) -> Any:
        """Wait for `check`; fail at once if honcho stopped (one of its processes ended), and
        show the end of honcho's log either way."""

        def still_running() -> Any:
            if process.poll() is not None:
                raise AssertionError(f"honcho exited ({process.returncode}) before {what} was ready")
            return check()

        try:
            return eventually(still_running, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- honcho's log ---\n{log.read_text()[-5000:]}") from exc

    try:
        ready(lambda: http("GET", f"{base}/api/monitoring/health")[0] == 200, "the web server")
        # The cluster reads the broker: the tests' tasks and the fan-out's run.
        # "Q Cluster <id> [<queue>] running.": the queue is the cluster's name on the ORM broker,
        # "django_q:<name>:q" on Redis.
        ready(lambda: logged(log, "worker.1", env["Q_CLUSTER_NAME"], "] running."), "the qcluster")
        # localstripe listens before it has our webhook registered: its line says it has.
        ready(
            lambda: logged(log, "stripe.1", f"localstripe on {env['STRIPE_API_BASE']}; webhooks go to"),
            "the Stripe stand-in with its webhook",
        )
        ready(
            lambda: http("GET", f"{env['SENDGRID_API_BASE']}/_sandbox/messages")[0] == 200,
            "the SendGrid stand-in",
        )
        ready(
            lambda: http("GET", f"{env['SHEETS_API_BASE']}/_sandbox/stats")[0] == 200, "the Sheets stand-in"
        )
        # moto answers before `sandbox_aws` has made the topics, queues, subscriptions, log group
        # (and DynamoDB table); it prints what it made once all is made.
        ready(lambda: logged(log, "aws.1", "queue_url: "), "the AWS stand-in's topics and queues")
        sqs = aws_client(env, "sqs")
        ready(
            lambda: aws_call(lambda: sqs.get_queue_url(QueueName=DEMO_QUEUE)), f"the SQS queue {DEMO_QUEUE}"
        )
        yield {"base": base, "env": env, "log": log}
    finally:
        # honcho passes SIGTERM on, and SIGKILL after a few seconds to what has not stopped.
        stop(process, timeout=DEADLINE_SECONDS)
        # Stopping honcho stops the web server and the stand-ins too: nothing is left listening.
        eventually(
            lambda: all(port_closed(p) for p in ports), what=f"nothing listening on ports {ports} any more"
        )


def test_the_shop_and_the_api_answer(running: dict[str, Any]) -> None:
    base = running["base"]
    with urllib.request.urlopen(f"{base}/", timeout=HANG_SECONDS) as page:  # noqa: S310
        assert page.status == 200
        assert "Cloud mug" in page.read().decode()
    status, products = http("GET", f"{base}/api/products")
    assert status == 200 and "MUG-001" in {p["sku"] for p in products}
    status, order = http(
        "POST",
        f"{base}/api/orders",
        {
            "lines": [{"sku": "MUG-001", "quantity": 1}],
            "shipping_address": {"name": "A", "line1": "B", "city": "C", "postal_code": "D", "country": "US"},
            "email": "run@example.com",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, order
    assert order["status"] == "pending_payment" and order["total_minor"] == 1450
    with urllib.request.urlopen(f"{base}/static/css/site.css", timeout=HANG_SECONDS) as css:  # noqa: S310
        assert css.status == 200


def shell_waiting(running: dict[str, Any], script: str) -> subprocess.CompletedProcess[str]:
    """`manage.py shell -c script` in the processes' environment, for a script that waits with
    `eventually` itself (one Django start for the whole wait, not one for each look)."""
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=ROOT,
        env=running["env"],
        capture_output=True,
        text=True,
        timeout=SHELL_WAIT_SECONDS,
    )


def test_the_worker_runs_tasks_from_the_broker(running: dict[str, Any]) -> None:
    """A task queued by another process comes back done: the cluster is up and reads the broker."""
    script = (
        "from django.db import DatabaseError\n"
        "from django_q.tasks import async_task, result\n"
        "from tests.polling import eventually\n"
        "task_id = async_task('math.factorial', 10)\n"
        "def done():\n"
        "    try:\n"
        "        return result(task_id)\n"
        "    except DatabaseError as exc:  # a busy database: look again\n"
        "        raise ValueError(exc) from exc\n"
        'print(eventually(done, what="math.factorial\'s result"))\n'
    )
    done = shell_waiting(running, script)
    assert done.stdout.strip().splitlines()[-1:] == ["3628800"], (
        done.stderr + running["log"].read_text()[-3000:]
    )


def test_a_payment_completes_through_the_stand_in_and_its_signed_webhook(running: dict[str, Any]) -> None:
    """`make run`'s Stripe stand-in charges the card and sends its webhook to the web server."""
    base = running["base"]
    status, tokens = http(
        "POST", f"{base}/api/auth/token", {"username": "customer", "password": "customer-demo-password"}
    )
    assert status == 200, tokens
    auth = {"Authorization": f"Bearer {tokens['access']}"}
    status, order = http(
        "POST",
        f"{base}/api/orders",
        {
            "lines": [{"sku": "TEE-001", "quantity": 1}],
            "shipping_address": {"name": "A", "line1": "B", "city": "C", "postal_code": "D", "country": "US"},
        },
        headers=auth,
    )
    assert status == 201, order
    status, payment = http(
        "POST",
        f"{base}/api/payments/confirm",
        {"order_id": order["id"], "payment_method": "pm_card_visa"},
        auth,
    )
    assert (status, payment["status"]) == (200, "succeeded"), payment
    assert http("GET", f"{base}/api/orders/{order['id']}", headers=auth)[1]["status"] == "paid"

    # No API shows webhook events: one shell looks in the database until the event is processed.
    script = (
        "from django.db import DatabaseError\n"
        "from payments.models import WebhookEvent\n"
        "from tests.polling import eventually\n"
        "def processed():\n"
        "    try:\n"
        "        return WebhookEvent.objects.filter(\n"
        f"            payload__data__object__metadata__order_id={order['id']!r},\n"
        "            type='payment_intent.succeeded',\n"
        "            processed_at__isnull=False,\n"
        "        ).count()\n"
        "    except DatabaseError as exc:  # a busy database: look again\n"
        "        raise ValueError(exc) from exc\n"
        "print(eventually(processed, what='the signed payment_intent.succeeded webhook'))\n"
    )
    done = shell_waiting(running, script)
    assert done.stdout.strip().splitlines()[-1:] == ["1"], done.stderr + running["log"].read_text()[-3000:]

    # The fan-out: the email, the sheet row and the SNS message, read back from the stand-ins.
    env = running["env"]

    def email() -> list[Any]:
        messages = http("GET", f"{env['SENDGRID_API_BASE']}/_sandbox/messages")[1]
        messages = messages["messages"] if isinstance(messages, dict) else messages
        return [m for m in messages if order["id"] in json.dumps(m)]

    [sent] = eventually(email, what="the confirmation email in the SendGrid sandbox")
    assert "customer@example.com" in json.dumps(sent)

    def sheet_row() -> list[Any]:
        sheet = http("GET", f"{env['SHEETS_API_BASE']}/_sandbox/spreadsheets/demo-orders")[1]
        return [row for row in json.dumps(sheet).split("], [") if order["id"] in row]

    assert len(eventually(sheet_row, what="the order's row in the Sheets sandbox")) == 1

    sqs = aws_client(env, "sqs")
    queue = aws_call(lambda: sqs.get_queue_url(QueueName=DEMO_QUEUE))["QueueUrl"]

    def sns_message() -> list[Any]:
        got = aws_call(
            lambda: sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        ).get("Messages", [])
        return [m for m in got if order["id"] in m["Body"]]

    [notified] = eventually(sns_message, what="the SNS message in the subscribed SQS queue")
    assert json.loads(notified["Body"])["event_type"] == "order.paid"

    # The same message in the SNS inbox that `make run`'s banner links (`sandbox_aws`, /_inbox/).
    inbox = http("GET", f"{env['AWS_ENDPOINT_URL']}/_inbox/messages?topic=cis-order-events")[1]["messages"]
    [listed] = [m for m in inbox if order["id"] in m["message"]]
    assert listed["message_attributes"]["event_type"]["value"] == "order.paid"
    with urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/_inbox/", timeout=HANG_SECONDS) as page:  # noqa: S310
        assert listed["message_id"] in page.read().decode()


def test_figures_and_logs_are_shared_by_every_web_process(running: dict[str, Any]) -> None:
    """Two gunicorn workers answer; /metrics (whichever answers) counts every request, and their
    JSON lines reach CloudWatch Logs with the request id."""
    base = running["base"]
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    # Anonymous reads of the orders list (401): the login endpoint would soon be rate limited.
    series = 'cis_http_request_duration_seconds_count{endpoint="GET /api/orders",status="4xx"} '

    def counted() -> float:
        request = urllib.request.Request(f"{base}/metrics", headers=auth)  # noqa: S310
        with urllib.request.urlopen(request, timeout=HANG_SECONDS) as answer:  # noqa: S310
            found = [line for line in answer.read().decode().splitlines() if line.startswith(series)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    before = counted()  # (a database shared with an earlier run may hold some already)
    ids = [f"run-{uuid.uuid4().hex[:12]}" for _ in range(20)]
    for request_id in ids:
        status, _ = http("GET", f"{base}/api/orders", headers={"X-Request-ID": request_id})
        assert status == 401
    eventually(lambda: counted() == before + len(ids), what=f"{len(ids)} more requests in /metrics")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/metrics", timeout=HANG_SECONDS)  # noqa: S310
    assert refused.value.code == 401

    logs = aws_client(running["env"], "logs")

    def shipped() -> set[str]:
        pages = aws_call(
            lambda: list(logs.get_paginator("filter_log_events").paginate(logGroupName="cis-app"))
        )
        events = [event for page in pages for event in page["events"]]
        lines = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
        return {line.get("request_id", "") for line in lines if line.get("logger") == "django.request"}

    eventually(lambda: set(ids) <= shipped(), what="the requests' log lines in CloudWatch Logs")
