"""A worker killed mid-fan-out: every order still gets its email, sheet row and SNS message.

Real processes, as in production: `manage.py qcluster` and `manage.py deliveries sweep --loop`
run as subprocesses against this test's database (committed: `transaction=True`) and broker
(the ORM broker by default; Redis when REDIS_URL is set), and talk to the SendGrid and Sheets
sandboxes and moto served from this process. 200 orders are paid, the cluster is SIGKILLed with
its whole process group while deliveries are in flight, then started again.

What must hold afterwards:

- all 600 deliveries succeed: the sweeper takes back the expired leases and asks for dispatch
  again, even when the Redis broker lost the tasks the dead cluster had taken;
- each order has exactly one sheet row (the adapter reads before it appends) and its SNS message,
  published no more often than its delivery was claimed (FIFO topic and queue, deduplicated by the
  delivery's idempotency key within SNS's five-minute window);
- SendGrid has no idempotency keys, so an email whose call was under way at the kill may go out
  twice, and a repeat carries the same idempotency key as the first (no new key is ever made).
  What bounds the repeats is the ledger, not the clock: every send needs a claim, and every claim
  spends an attempt, so no order gets more emails than its delivery has attempts. A lease that
  outlives the broker's time limit (below) is never taken back from a live worker, so the
  deliveries claimed more than once are those in flight at the kill, and any whose outcome the
  restarted cluster could not record (a lock the killed one left behind: see the report printed
  with -s).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django.db.models import F, Sum

from integrations.models import Delivery, DeliveryState
from integrations.resilience import shared_cache
from orders.domain import Actor, OrderStatus, ShippingAddress
from orders.repositories import OrderRepository
from orders.services import LineRequest, order_place, order_transition
from tests.integrations.conftest import SENDGRID_TEST_KEY, SHEETS_TEST_SPREADSHEET
from tests.orders.factories import ProductFactory
from tests.polling import DEADLINE_SECONDS, eventually
from tests.stores import reset_moto, store_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 200
INTEGRATIONS = ("email", "sheets", "sns")
ADDRESS = ShippingAddress(
    name="Crash Test", line1="1 Kill Street", city="Oslo", postal_code="0150", country="NO"
)
# A dispatch task may run for services.DISPATCH_BUDGET_SECONDS (20 s); the broker's time limit
# must stay above it, or the broker itself kills dispatchers mid-call (more repeats than the kill).
Q_TIMEOUT, Q_RETRY = 30, 31
# django-q2 ends a task at Q_TIMEOUT (SIGALRM, wall clock), so a live dispatcher holds its claims
# for less than that: a longer lease is never taken back from a live worker, however slow the
# machine, and nothing but the kill makes an email go out twice. Recovery waits for it, though.
LEASE_SECONDS = Q_TIMEOUT + 15


# --- the database and the processes -----------------------------------------------------------
def database_env() -> dict[str, str]:
    """The variables that point a subprocess at this test's database."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return {"SQLITE_PATH": str(db["NAME"])}
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return {"DATABASE_URL": f"postgres://{credentials}@{host}/{db['NAME']}"}


class Managed:
    """A `manage.py` subprocess in a session of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        if sig == signal.SIGKILL:
            self.process.wait(timeout=10)

    def stop(self, *, seconds: float = 20) -> None:
        """SIGTERM to the main process only (django-q2 stops its own children), then the group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=seconds)
        # Whatever is left of the group (a straggling child, or a main process that did not stop).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def tail(self, chars: int = 3000) -> str:
        return (
            f"--- {self.name} ---\n{self.log.read_text(errors='replace')[-chars:]}"
            if self.log.exists()
            else ""
        )


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
def fifo_aws(moto_server_url: str, settings: Any, request: pytest.FixtureRequest) -> dict[str, Any]:
    """moto, wiped, with a FIFO topic and a FIFO demo queue subscribed to it."""
    from integrations.aws import aws_clear_caches, aws_setup

    reset_moto(moto_server_url, request)
    aws_clear_caches()
    settings.AWS_ENDPOINT_URL = moto_server_url
    settings.AWS_REGION = "us-east-1"
    settings.AWS_ACCESS_KEY_ID = "testing"
    settings.AWS_SECRET_ACCESS_KEY = "testing"
    settings.SNS_TOPIC_NAME = "cis-order-events"
    settings.SNS_TOPIC_ARN = ""
    settings.SNS_FIFO = True
    settings.SNS_DEMO_QUEUE_NAME = "cis-order-events-demo"
    return aws_setup(demo_queue=True)


@pytest.fixture
def cluster_name(settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A queue of this test's own: django-q2 read its name at import, so tell it here too."""
    from django_q.conf import Conf

    name = f"crash-{uuid.uuid4().hex[:8]}"
    # The name is also the salt of the signed task packages: both sides must agree.
    monkeypatch.setattr(Conf, "PREFIX", name)
    monkeypatch.setattr(Conf, "CLUSTER_NAME", name)
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "name": name}
    return name


@pytest.fixture
def clean_shared_state() -> None:
    """Nothing left in the shared cache by an earlier test (Redis outlives the test database)."""
    cache = shared_cache()
    for name in INTEGRATIONS:
        cache.delete_many(
            [
                f"dispatch-queued:{name}",
                f"breaker:{name}",
                f"pause:{name}",
                f"ratelimit:{name}",
                f"exclusive:dispatch:{name}",
            ]
        )


@pytest.fixture
def stack(
    tmp_path: Path,
    sendgrid_sandbox: Any,
    sheets_sandbox: Any,
    fifo_aws: dict[str, Any],
    moto_server_url: str,
    cluster_name: str,
    clean_shared_state: None,
    repository: OrderRepository,
) -> Iterator[dict[str, Any]]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "SQLITE_PATH", "PYTEST_XDIST_WORKER"}
    }
    env.update(
        {
            "DJANGO_ENV": "development",
            "LOG_LEVEL": "WARNING",
            "Q_CLUSTER_NAME": cluster_name,
            "Q_WORKERS": "2",
            "Q_TIMEOUT": str(Q_TIMEOUT),
            "Q_RETRY": str(Q_RETRY),
            "DELIVERY_LEASE_SECONDS": str(LEASE_SECONDS),
            "SENDGRID_API_BASE": sendgrid_sandbox.url,
            "SENDGRID_API_KEY": SENDGRID_TEST_KEY,
            "SHEETS_API_BASE": sheets_sandbox.url,
            "SHEETS_SPREADSHEET_ID": SHEETS_TEST_SPREADSHEET,
            "SHEETS_WORKSHEET": "Orders",
            "SHEETS_FLUSH_SECONDS": "0.5",
            "GOOGLE_SERVICE_ACCOUNT_JSON": "",
            "AWS_ENDPOINT_URL": moto_server_url,
            "AWS_REGION": "us-east-1",
            "SNS_FIFO": "true",
            "SNS_TOPIC_NAME": "cis-order-events",
            "SNS_TOPIC_ARN": fifo_aws["topic_arn"],
            **database_env(),
            **store_env(),
        }
    )
    processes = {
        "qcluster": Managed("qcluster", ["qcluster"], env, tmp_path),
        "sweeper": Managed("sweeper", ["deliveries", "sweep", "--loop", "--interval", "0.5"], env, tmp_path),
    }
    try:
        yield processes
    finally:
        for process in processes.values():
            process.stop()


# --- reading the sinks --------------------------------------------------------------------------
def sqs_messages(queue_url: str) -> list[dict[str, Any]]:
    """Every message in the (FIFO) demo queue, each received once and deleted."""
    from core.aws import aws_client

    sqs = aws_client("sqs")
    bodies: list[dict[str, Any]] = []
    empty = 0
    while empty < 3:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300, WaitTimeSeconds=0
        ).get("Messages", [])
        if not got:
            empty += 1
            continue
        empty = 0
        bodies.extend(json.loads(m["Body"]) for m in got)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
        )
    return bodies


def counts() -> dict[str, Counter[str]]:
    rows = Delivery.objects.values_list("integration", "state")
    result: dict[str, Counter[str]] = {name: Counter() for name in INTEGRATIONS}
    for integration, state in rows:
        result[integration][state] += 1
    return result


# --- the test -----------------------------------------------------------------------------------
def test_a_killed_cluster_loses_nothing_and_repeats_only_what_was_in_flight(
    stack: dict[str, Managed],
    customer: Any,
    sendgrid_sandbox: Any,
    sheets_sandbox: Any,
    fifo_aws: dict[str, Any],
    repository: OrderRepository,
) -> None:
    qcluster, sweeper = stack["qcluster"], stack["sweeper"]

    def logs() -> str:
        return "\n".join(p.tail() for p in stack.values())

    # Emails take a while, so some are under way when the cluster dies.
    sendgrid_sandbox.set_faults(latency_ms=30)

    ProductFactory(sku="CRASH-1", price_minor=1200, stock=ORDERS * 2)
    order_ids: set[str] = set()
    for n in range(ORDERS):
        order, _ = order_place(
            repository=repository,
            actor=Actor(kind="customer", user_id=customer.pk),
            customer_id=customer.pk,
            email=customer.email,
            lines=[LineRequest(sku="CRASH-1", quantity=1)],
            shipping_address=ADDRESS,
        )
        # The commit hook relays the outbox entry and queues dispatch tasks in the broker.
        order_transition(
            repository=repository,
            order_id=order.id,
            to_status=OrderStatus.PAID,
            actor=Actor.system("crash-test"),
            data={"intent_id": f"pi_crash_{n}"},
        )
        order_ids.add(str(order.id))
    assert Delivery.objects.count() == ORDERS * len(INTEGRATIONS)

    started = time.monotonic()
    qcluster.start()
    sweeper.start()

    # Kill once some emails went out and more are under way: freeze the group, count what is in
    # flight, kill.
    def emails_sent_and_sending() -> bool:
        emails = Counter(Delivery.objects.filter(integration="email").values_list("state", flat=True))
        return emails[DeliveryState.SUCCEEDED] >= 40 and emails[DeliveryState.IN_FLIGHT] > 0

    eventually(emails_sent_and_sending, interval=0.02, what=f"emails going out\n{logs()}")
    qcluster.kill_group(signal.SIGSTOP)
    in_flight_rows = list(
        Delivery.objects.filter(state=DeliveryState.IN_FLIGHT).values_list("integration", "id")
    )
    in_flight = Counter(integration for integration, _ in in_flight_rows)
    email_in_flight_ids = {pk for integration, pk in in_flight_rows if integration == "email"}
    before_kill = counts()
    qcluster.kill_group(signal.SIGKILL)
    killed_at = time.monotonic()
    assert sum(c[DeliveryState.SUCCEEDED] for c in before_kill.values()) < ORDERS * len(INTEGRATIONS), (
        "everything was delivered before the kill: nothing was tested"
    )

    queued_at_kill = sorted(
        name for name in INTEGRATIONS if shared_cache().get(f"dispatch-queued:{name}") is not None
    )
    qcluster.start()
    progress: list[tuple[float, dict[str, int]]] = []

    def all_succeeded() -> bool:
        now = {k: v[DeliveryState.SUCCEEDED] for k, v in counts().items()}
        if not progress or progress[-1][1] != now:
            progress.append((round(time.monotonic() - killed_at, 1), now))
        return sum(now.values()) == ORDERS * len(INTEGRATIONS)

    # Recovery waits for timers before any work: the dispatch-queued keys and the ORM broker's
    # retry (30 s), the leases of what was in flight (LEASE_SECONDS), the Sheets dispatcher's
    # exclusive key (DISPATCH_BUDGET_SECONDS + LEASE_SECONDS + 1), and another lease for a batch
    # whose outcome could not be recorded (a lock left by the killed cluster): a longer wait.
    eventually(
        all_succeeded,
        seconds=DEADLINE_SECONDS * 3,
        interval=0.2,
        what=f"every delivery to succeed after the restart ({counts()})\n{logs()}",
    )
    recovered_in = time.monotonic() - killed_at
    assert not Delivery.objects.filter(state=DeliveryState.DEAD).exists()

    # The email: one per order, a repeat only of a delivery claimed again, with the same key.
    messages = sendgrid_sandbox.messages()
    keys_by_order: dict[str, set[str]] = {}
    for message in messages:
        args = message["custom_args"]
        keys_by_order.setdefault(args["order_id"], set()).add(args["idempotency_key"])
    assert set(keys_by_order) == order_ids
    assert all(len(keys) == 1 for keys in keys_by_order.values()), "a repeat came with a new key"
    keys = set().union(*keys_by_order.values())
    assert len(keys) == ORDERS
    assert keys == {f"email:{order_id}:order.paid:v2" for order_id in order_ids}
    email_repeats = len(messages) - ORDERS
    sent = Counter(message["custom_args"]["order_id"] for message in messages)
    emails = {
        str(order_id): (pk, attempts)
        for order_id, pk, attempts in Delivery.objects.filter(integration="email").values_list(
            "order_id", "id", "attempts"
        )
    }
    # Every send needs a claim, and every claim spends an attempt.
    over = {
        order_id: (sent[order_id], emails[order_id][1])
        for order_id in order_ids
        if sent[order_id] > emails[order_id][1]
    }
    assert not over, f"emails sent more often than claimed (sent, attempts): {over}"
    extra_claims = Delivery.objects.filter(integration="email").aggregate(n=Sum(F("attempts") - 1))["n"]
    assert 0 <= email_repeats <= extra_claims, (email_repeats, extra_claims, in_flight)
    # Informational: repeats of deliveries that were not in flight at the kill (claimed again
    # because the restarted cluster could not record their outcome).
    repeated_not_in_flight = sum(
        1 for order_id in order_ids if sent[order_id] > 1 and emails[order_id][0] not in email_in_flight_ids
    )

    # The sheet: exactly one row per order.
    rows = sheets_sandbox.values(SHEETS_TEST_SPREADSHEET)[1:]
    sheet_ids = [row[0] for row in rows]
    assert len(sheet_ids) == ORDERS and set(sheet_ids) == order_ids

    # SNS: every order in the FIFO queue, and never more often than its delivery was claimed
    # (repeats within five minutes are dropped by deduplication id; later ones would not be).
    published = sqs_messages(fifo_aws["queue_url"])
    published_per_order = Counter(body["order_id"] for body in published)
    assert set(published_per_order) == order_ids
    sns_attempts = dict(Delivery.objects.filter(integration="sns").values_list("order_id", "attempts"))
    assert all(published_per_order[str(o)] <= n for o, n in sns_attempts.items()), published_per_order

    attempts = Counter(Delivery.objects.filter(attempts__gt=1).values_list("integration", flat=True))
    # The figures the test is about, shown with -s.
    print(
        f"\ncrash test ({connection.vendor}, broker {'redis' if os.environ.get('REDIS_URL') else 'orm'}):"
        f" in flight at kill {dict(in_flight)}, succeeded before kill"
        f" { {k: v[DeliveryState.SUCCEEDED] for k, v in before_kill.items()} },"
        f" email repeats {email_repeats} (of deliveries not in flight at the kill: {repeated_not_in_flight}),"
        f" deliveries with more than one attempt {dict(attempts)},"
        f" sendgrid calls {sendgrid_sandbox.stats()['calls']},"
        f" sheets appends {sheets_sandbox.stats().get('append')},"
        f" dispatch queued at kill {queued_at_kill}, progress {progress[:3]}...{progress[-2:]},"
        f" recovered {recovered_in:.1f} s after the kill, {time.monotonic() - started:.1f} s in all"
    )
