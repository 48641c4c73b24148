"""What `make run` starts, started for real: the Procfile's gunicorn web server and django-q2 cluster.

The processes use their own database (a temporary SQLite file, or the PostgreSQL database named by
DATABASE_URL) and broker, exactly as configured by the environment, and are stopped afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.polling import eventually

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow
METRICS_TOKEN = "run-test-metrics-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - a local URL this test built
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module", params=["orm", "dynamodb"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """`make run`'s processes, with orders in the database, then (ORDER_REPOSITORY=dynamodb) in
    DynamoDB on the Procfile's moto server."""
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
        "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}",
        "SENDGRID_API_BASE": f"http://127.0.0.1:{free_port()}",
        "SHEETS_API_BASE": f"http://127.0.0.1:{free_port()}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
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
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run([*manage, *command], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    log = tmp_path_factory.mktemp("logs") / "honcho.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "honcho"), "start", "-f", "Procfile"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(
            lambda: http("GET", f"{base}/api/monitoring/health")[0] == 200, seconds=30, what="the web server"
        )
        yield {"base": base, "env": env, "log": log}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Stopping honcho stops the web server too: nothing is left listening.
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_shop_and_the_api_answer(running: dict[str, Any]) -> None:
    base = running["base"]
    with urllib.request.urlopen(f"{base}/", timeout=10) as page:  # noqa: S310
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
    with urllib.request.urlopen(f"{base}/static/css/site.css", timeout=10) as css:  # noqa: S310
        assert css.status == 200


def test_the_worker_runs_tasks_from_the_broker(running: dict[str, Any]) -> None:
    """A task queued by another process comes back done: the cluster is up and reads the broker."""
    # django-q2's result() polls the result store itself, for up to `wait` milliseconds.
    script = (
        "from django_q.tasks import async_task, result\n"
        "print(result(async_task('math.factorial', 10), wait=30000))\n"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=ROOT,
        env=running["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
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

    def webhook_processed() -> bool:
        done = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "shell",
                "--no-imports",
                "-c",
                "from payments.models import WebhookEvent as E; "
                f"print(E.objects.filter(payload__data__object__metadata__order_id='{order['id']}',"
                " type='payment_intent.succeeded', processed_at__isnull=False).count())",
            ],
            cwd=ROOT,
            env=running["env"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.strip().splitlines()[-1:] == ["1"]

    eventually(webhook_processed, seconds=30, what="the signed payment_intent.succeeded webhook")

    # The fan-out: the email, the sheet row and the SNS message, read back from the stand-ins.
    env = running["env"]

    def email() -> list[Any]:
        messages = http("GET", f"{env['SENDGRID_API_BASE']}/_sandbox/messages")[1]
        messages = messages["messages"] if isinstance(messages, dict) else messages
        return [m for m in messages if order["id"] in json.dumps(m)]

    [sent] = eventually(email, seconds=30, what="the confirmation email in the SendGrid sandbox")
    assert "customer@example.com" in json.dumps(sent)

    def sheet_row() -> list[Any]:
        sheet = http("GET", f"{env['SHEETS_API_BASE']}/_sandbox/spreadsheets/demo-orders")[1]
        return [row for row in json.dumps(sheet).split("], [") if order["id"] in row]

    assert len(eventually(sheet_row, seconds=30, what="the order's row in the Sheets sandbox")) == 1

    import boto3

    sqs = boto3.client(
        "sqs",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    queue = sqs.get_queue_url(QueueName="cis-order-events-demo")["QueueUrl"]

    def sns_message() -> list[Any]:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        )
        return [m for m in got if order["id"] in m["Body"]]

    [notified] = eventually(sns_message, seconds=30, what="the SNS message in the subscribed SQS queue")
    assert json.loads(notified["Body"])["event_type"] == "order.paid"


def test_figures_and_logs_are_shared_by_every_web_process(running: dict[str, Any]) -> None:
    """Two gunicorn workers answer; /metrics (whichever answers) counts every request, and their
    JSON lines reach CloudWatch Logs with the request id."""
    import boto3

    base = running["base"]
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    series = 'cis_http_request_duration_seconds_count{endpoint="POST /api/auth/token",status="4xx"} '

    def counted() -> float:
        request = urllib.request.Request(f"{base}/metrics", headers=auth)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            found = [line for line in answer.read().decode().splitlines() if line.startswith(series)]
        return float(found[0].rsplit(" ", 1)[1]) if found else 0.0

    before = counted()  # (a database shared with an earlier run may hold some already)
    ids = [f"run-{uuid.uuid4().hex[:12]}" for _ in range(20)]
    for request_id in ids:
        status, _ = http(
            "POST",
            f"{base}/api/auth/token",
            {"username": "nobody", "password": "wrong"},
            headers={"X-Request-ID": request_id},
        )
        assert status == 401
    eventually(
        lambda: counted() == before + len(ids), seconds=90, what=f"{len(ids)} more requests in /metrics"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/metrics", timeout=10)  # noqa: S310
    assert refused.value.code == 401

    logs = boto3.client(
        "logs",
        endpoint_url=running["env"]["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )

    def shipped() -> set[str]:
        events = logs.filter_log_events(logGroupName="cis-app")["events"]
        lines = [json.loads(e["message"]) for e in events if e["message"].startswith("{")]
        return {line.get("request_id", "") for line in lines if line.get("logger") == "django.request"}

    eventually(lambda: set(ids) <= shipped(), seconds=90, what="the requests' log lines in CloudWatch Logs")
