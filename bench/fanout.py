"""Fan-out benchmark: pay N orders, measure how fast the email, sheet row and SNS message follow.

    .venv/bin/python bench/fanout.py --orders 1000
    .venv/bin/python bench/fanout.py --orders 1000 \\
        --database-url postgres://postgres@127.0.0.1:5432/postgres --redis-url redis://127.0.0.1:6379/15

It builds its own stack, the way `make run` does, and takes it down afterwards:

- the SendGrid and Sheets sandboxes and moto as subprocesses (`manage.py sandbox_sendgrid`,
  `sandbox_sheets`, `sandbox_aws`) on free ports, so they do not share this process's GIL;
- a fresh database: a temporary SQLite file, or with --database-url a throwaway PostgreSQL
  database `cis_bench_<random>` created through that URL (whose database must exist) and dropped
  at the end; `manage.py migrate` makes the tables;
- the broker and shared cache: the ORM broker and the database cache, or with --redis-url Redis
  (a cluster name and cache key prefix of its own; its keys are deleted at the end, nothing else);
- `manage.py qcluster` (Q_WORKERS=--workers, Q_SAVE_LIMIT=--save-limit: -1 by default, i.e. no
  result rows for successful tasks, which the fan-out never reads) and
  `manage.py deliveries sweep --loop`.

Then it places N orders (not timed), pays a few to warm up (first token, clients, connections),
and pays N orders from this process as fast as it can (or at --rate per second). Each payment is
the real `order_transition` to PAID, whose commit hook relays the outbox entry and queues dispatch.

Measured: wall time from the first payment to the last effect (the latest `succeeded_at`), orders
per second fully delivered through all three sinks, the lag from payment (the outbox entry's
`created_at`, which is the paid event's time) to each delivery's `succeeded_at` per integration
(p50/p95/p99/max), Sheets append calls and the highest writes in any minute (from the sandbox's
counters). A table is printed; the figures go to bench/results/fanout-<db>.json (--out to change).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
INTEGRATIONS = ("email", "sheets", "sns")
SPREADSHEET = "bench-orders"
_pause = threading.Event()


# --- small helpers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local stand-ins only
        return json.loads(response.read())


def wait_for(check: Callable[[], Any], *, seconds: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # noqa: BLE001 - a peer not ready yet fails in many ways
            last = exc
        else:
            if value:
                return value
        _pause.wait(interval)
    raise SystemExit(f"timed out after {seconds} s waiting for {what} (last error: {last})")


def code_version() -> dict[str, Any]:
    """The commit measured, and the files changed since (the figures belong to that tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)  # noqa: S603, S607
        return done.stdout.strip() if done.returncode == 0 else ""

    status = git("status", "--porcelain", "--untracked-files=no")
    modified = [line.split(maxsplit=1)[-1] for line in status.splitlines() if line.strip()]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "modified": [f for f in modified if f.endswith(".py")],
    }


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


def cpu_by_process_group() -> dict[int, float]:
    """CPU seconds (user + system, reaped children included) of every process group, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    groups: Counter[int] = Counter()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        groups[int(fields[2])] += sum(int(f) for f in fields[11:15]) / ticks
    return dict(groups)


def cpu_busy_total() -> float:
    """CPU seconds the whole machine spent busy since boot (all processes, ours or not)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_by_command(*names: str) -> float:
    """CPU seconds of every process whose command is one of `names` (database servers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command = text[text.index("(") + 1 : text.rindex(")")]
        if command in names or any(command.startswith(f"{name}:") for name in names):
            total += sum(int(f) for f in text.rsplit(")", 1)[1].split()[11:15]) / ticks
    return total


class Managed:
    """A `manage.py` subprocess in a session of its own; its output goes to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Managed:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own manage.py
                [sys.executable, "manage.py", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise SystemExit(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def stop(self, seconds: float = 20) -> None:
        """SIGTERM to the main process (django-q2 stops its own children), then the whole group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=seconds)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds (user + system) of each PostgreSQL backend serving `database` (its process
    title names it): other databases on the same server, other benchmarks', are left out."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().decode(errors="replace")
            if not title.startswith("postgres:") or f" {database} " not in title:
                continue
            fields = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[int(cmdline.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return found


class BackendMeter:
    """The CPU our database's backends spend from `start()` on: sampled with the queue (a
    backend that exits between two samples loses what it spent since the last one; the
    connections here are persistent, CONN_MAX_AGE)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def start(self) -> BackendMeter:
        self.first = backend_cpu(self.database)
        self.last = dict(self.first)
        return self

    def sample(self) -> None:
        self.last.update(backend_cpu(self.database))

    def seconds(self) -> float:
        self.sample()
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


class QueueSampler:
    """Samples, every `interval` seconds on a thread of its own, how much work is waiting: the
    ledger's unfinished deliveries of the measured orders (pending, retrying or in flight), the
    outbox entries not relayed yet, and the broker's queued tasks. Its own CPU time is kept apart
    (`cpu_s`) so that it is not counted as the payer's."""

    def __init__(
        self, order_ids: list[Any], interval: float = 0.5, backends: BackendMeter | None = None
    ) -> None:
        self.order_ids, self.interval, self.backends = order_ids, interval, backends
        self.samples: list[dict[str, Any]] = []
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-sampler", daemon=True)

    def start(self) -> QueueSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples

    def _run(self) -> None:
        from django.db import connection
        from django_q.brokers import get_broker

        from integrations.models import Delivery, DeliveryState
        from orders.models import OutboxEntry

        unfinished = (DeliveryState.PENDING, DeliveryState.RETRYING, DeliveryState.IN_FLIGHT)
        broker = get_broker()
        try:
            while not self._stop.is_set():
                cpu = time.thread_time()
                self.samples.append(
                    {
                        "t_s": round(time.monotonic() - self._started, 2),
                        "deliveries_unfinished": Delivery.objects.filter(state__in=unfinished).count(),
                        "outbox_unrelayed": OutboxEntry.objects.filter(relayed_at__isnull=True).count(),
                        "broker_tasks": broker.queue_size(),
                    }
                )
                if self.backends is not None:
                    self.backends.sample()
                self.cpu_s += time.thread_time() - cpu
                self._stop.wait(self.interval)
        finally:
            connection.close()


# --- the database -------------------------------------------------------------------------------
def database(url: str | None, workdir: Path) -> Iterator[tuple[dict[str, str], str]]:
    """Variables pointing at a fresh database, and its kind; a PostgreSQL one is dropped after."""
    from tools.processes import throwaway_database

    return throwaway_database(url, workdir, prefix="cis_bench")


def redis_cleanup(url: str, cluster: str, prefix: str) -> int:
    """Delete this run's keys (django-q2's queue and stats, the shared cache's), nothing else."""
    import redis

    client = redis.Redis.from_url(url)
    deleted = 0
    for pattern in (f"django_q:{cluster}:*", f"{prefix}:*", f"{cluster}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            deleted += client.delete(*keys)
    return deleted


# --- the run ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    workdir = Path(tempfile.mkdtemp(prefix="cis-bench-"))
    cluster, cache_prefix = f"bench-{run_id}", f"bench-{run_id}"
    urls = {
        "SENDGRID_API_BASE": f"http://127.0.0.1:{free_port()}",
        "SHEETS_API_BASE": f"http://127.0.0.1:{free_port()}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
    }
    processes: list[Managed] = []
    with database(args.database_url, workdir) as (db_env, db_kind):
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SQLITE_PATH", "REDIS_URL"}}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DJANGO_ENV": "development",
                "DJANGO_DEBUG": "false",
                "LOG_LEVEL": "WARNING",
                "Q_CLUSTER_NAME": cluster,
                "Q_SAVE_LIMIT": str(args.save_limit),
                "CACHE_KEY_PREFIX": cache_prefix,
                "SHEETS_SPREADSHEET_ID": SPREADSHEET,
                # A benchmark measures throughput, not the abuse limits (issue 12).
                "RATE_LIMIT_USER": "off",
                "RATE_LIMIT_ANON": "off",
                "RATE_LIMIT_ORDER_CREATE_ANON": "off",
                "RATE_LIMIT_PAYMENT_CONFIRM": "off",
                "RATE_LIMIT_WEBHOOK": "off",
                "ORDER_ANON_HOLD_MAX_UNITS": "0",
                "GUEST_EMAIL_MAX_PER_HOUR": "0",
                **urls,
                **db_env,
                **({"REDIS_URL": args.redis_url} if args.redis_url else {}),
                **({"Q_WORKERS": str(args.workers)} if args.workers else {}),
                **dict(item.split("=", 1) for item in args.env),
            }
        )
        os.environ.clear()
        os.environ.update(env)
        try:
            for name in ("sandbox_sendgrid", "sandbox_sheets"):
                processes.append(Managed(name, [name], env, workdir).start())
            # The topic (and the demo queue, if asked for) are made below, once moto listens.
            processes.append(Managed("sandbox_aws", ["sandbox_aws", "--no-setup"], env, workdir).start())
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )
            wait_for(
                lambda: get_json(f"{urls['SENDGRID_API_BASE']}/_sandbox/stats"), seconds=30, what="SendGrid"
            )
            wait_for(lambda: get_json(f"{urls['SHEETS_API_BASE']}/_sandbox/stats"), seconds=30, what="Sheets")

            import django

            django.setup()
            from core.aws import aws_client
            from integrations.aws import aws_setup

            wait_for(lambda: "Topics" in aws_client("sns").list_topics(), seconds=30, what="moto")
            aws = aws_setup(demo_queue=args.sns_demo_queue)
            return measure(args, env, workdir, processes, db_kind, urls, aws)
        finally:
            tear_down(args, processes, workdir, cluster, cache_prefix)


def tear_down(
    args: argparse.Namespace, processes: list[Managed], workdir: Path, cluster: str, cache_prefix: str
) -> None:
    """Stop the stack's processes, clear its Redis keys, and remove its files (unless --keep)."""
    for process in reversed(processes):
        process.stop()
    if args.redis_url:
        redis_cleanup(args.redis_url, cluster, cache_prefix)
    if args.keep or args.keep_logs:
        print(f"kept in {workdir}: the logs{' and the SQLite database' if args.keep else ''}")
    if not args.keep:
        for path in sorted(workdir.glob("*")):
            if path.suffix != ".log" or not args.keep_logs:
                path.unlink()
        with contextlib.suppress(OSError):
            workdir.rmdir()


def measure(
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    processes: list[Managed],
    db_kind: str,
    urls: dict[str, str],
    aws: dict[str, Any],
) -> dict[str, Any]:
    from django.conf import settings
    from django.db.models import Max, Min

    from core.aws import aws_client
    from integrations.models import Delivery, DeliveryState
    from integrations.services import get_adapter, integration_config
    from orders.domain import Actor, OrderStatus, ShippingAddress
    from orders.models import OutboxEntry, Product
    from orders.repositories import get_order_repository
    from orders.services import LineRequest, order_place, order_transition

    repository = get_order_repository()
    address = ShippingAddress(
        name="Bench", line1="1 Load Lane", city="Leeds", postal_code="LS1", country="GB"
    )
    skus = [f"BENCH-{i}" for i in range(5)]
    Product.objects.bulk_create(
        [
            Product(sku=sku, name=f"Bench item {i}", price_minor=500 + 100 * i, currency="USD", stock=10**7)
            for i, sku in enumerate(skus)
        ]
    )
    total = args.warmup + args.orders
    print(f"placing {total} orders (not timed)...", flush=True)
    order_ids = []
    for n in range(total):
        order, _ = order_place(
            repository=repository,
            actor=Actor(kind="guest", label="bench"),
            customer_id=None,
            email=f"buyer{n}@example.com",
            lines=[LineRequest(sku=skus[n % 5], quantity=1), LineRequest(sku=skus[(n + 1) % 5], quantity=2)],
            shipping_address=address,
        )
        order_ids.append(order.id)
    warmup, measured = order_ids[: args.warmup], order_ids[args.warmup :]

    def pay(order_id: Any, n: int) -> None:
        order_transition(
            repository=repository,
            order_id=order_id,
            to_status=OrderStatus.PAID,
            actor=Actor.system("bench"),
            data={"intent_id": f"pi_bench_{n}"},
        )

    def succeeded(ids: list[Any]) -> int:
        return Delivery.objects.filter(order_id__in=ids, state=DeliveryState.SUCCEEDED).count()

    qcluster = Managed("qcluster", ["qcluster"], env, workdir).start()
    sweeper = Managed(
        "sweeper", ["deliveries", "sweep", "--loop", "--interval", str(args.sweep_interval)], env, workdir
    ).start()
    processes += [qcluster, sweeper]

    # Warm-up: the first token, clients and connections of each worker; also proves the stack works.
    for n, order_id in enumerate(warmup):
        pay(order_id, n)
    if warmup:
        wait_for(
            lambda: succeeded(warmup) == len(warmup) * len(INTEGRATIONS),
            seconds=120,
            what=f"the warm-up deliveries\n{qcluster.tail()}\n{sweeper.tail()}",
            interval=0.25,
        )
    sheets_before = get_json(f"{urls['SHEETS_API_BASE']}/_sandbox/stats")
    sendgrid_before = get_json(f"{urls['SENDGRID_API_BASE']}/_sandbox/stats")

    by_name = {process.name: process for process in processes}
    profilers = start_profilers(args.profile, by_name) if args.profile else []
    cpu_before = cpu_by_process_group()
    self_before = sum(os.times()[:2])
    servers_before = {"postgres": cpu_by_command("postgres"), "redis": cpu_by_command("redis-server")}
    machine_before, load_before = cpu_busy_total(), os.getloadavg()[0]

    backends = (
        BackendMeter(settings.DATABASES["default"]["NAME"]).start() if db_kind == "postgresql" else None
    )
    sampler = QueueSampler(measured, backends=backends).start()
    print(
        f"paying {len(measured)} orders {'as fast as possible' if not args.rate else f'at {args.rate}/s'}..."
    )
    start_wall = datetime.now(UTC)
    start = time.monotonic()
    for n, order_id in enumerate(measured):
        if args.rate:
            wait = start + n / args.rate - time.monotonic()
            if wait > 0:
                _pause.wait(wait)
        pay(order_id, args.warmup + n)
    paid_in = time.monotonic() - start
    print(
        f"paid in {paid_in:.1f} s ({len(measured) / paid_in:.0f}/s); waiting for every effect...", flush=True
    )

    expected = len(measured) * len(INTEGRATIONS)
    last_report = 0.0

    def all_done() -> bool:
        nonlocal last_report
        qcluster.check_alive()
        sweeper.check_alive()
        done = succeeded(measured)
        if time.monotonic() - last_report > 5:
            last_report = time.monotonic()
            print(f"  {done}/{expected} deliveries succeeded", flush=True)
        return done == expected

    wait_for(all_done, seconds=args.deadline, what="every delivery", interval=0.25)
    elapsed = time.monotonic() - start
    cpu_after = cpu_by_process_group()
    samples = sampler.stop()
    cpu = {"bench (payer)": sum(os.times()[:2]) - self_before - sampler.cpu_s}
    for name, process in by_name.items():
        assert process.process is not None
        pgid = process.process.pid
        cpu[name] = cpu_after.get(pgid, 0.0) - cpu_before.get(pgid, 0.0)
    server_pg = None
    if db_kind == "postgresql":
        assert backends is not None
        cpu["postgres (this database's backends)"] = backends.seconds()
        # The whole server (other databases' backends, other benchmarks', and its own writers):
        # for reference only, not in the sum.
        server_pg = cpu_by_command("postgres") - servers_before["postgres"]
    if args.redis_url:
        # Shared with whatever else uses this Redis server: an upper bound of ours.
        cpu["redis-server"] = cpu_by_command("redis-server") - servers_before["redis"]
    # Anything else that ran on the machine meanwhile (another benchmark, a test suite) skews the
    # figures: say how much CPU it took.
    ours = sum(cpu.values())
    cpu["everything else on the machine"] = max(0.0, cpu_busy_total() - machine_before - ours)
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    profiles = stop_profilers(profilers)

    # --- figures, from the ledger and the stand-ins' own counters ---
    paid_at = dict(
        OutboxEntry.objects.filter(order_id__in=measured, event_type="order.paid").values_list(
            "id", "created_at"
        )
    )
    rows = list(
        Delivery.objects.filter(order_id__in=measured).values_list(
            "integration", "order_id", "outbox_id", "succeeded_at", "attempts"
        )
    )
    lags: dict[str, list[float]] = {name: [] for name in INTEGRATIONS}
    done_at: dict[Any, datetime] = {}
    attempts = Counter()
    for integration, order_id, outbox_id, succeeded_at, tries in rows:
        lags[integration].append((succeeded_at - paid_at[outbox_id]).total_seconds())
        done_at[order_id] = max(done_at.get(order_id, succeeded_at), succeeded_at)
        attempts[integration] += tries
    first_payment = min(paid_at.values())
    span = Delivery.objects.filter(order_id__in=measured).aggregate(
        first=Min("succeeded_at"), last=Max("succeeded_at")
    )
    wall = (span["last"] - first_payment).total_seconds()
    per_integration = {}
    for name in INTEGRATIONS:
        values = sorted(lags[name])
        last = max(s for i, _, _, s, _ in rows if i == name)
        per_integration[name] = {
            "p50_s": round(percentile(values, 50), 3),
            "p95_s": round(percentile(values, 95), 3),
            "p99_s": round(percentile(values, 99), 3),
            "max_s": round(values[-1], 3),
            "mean_s": round(sum(values) / len(values), 3),
            "done_after_s": round((last - first_payment).total_seconds(), 3),
            "attempts": attempts[name],
        }
    sheets = get_json(f"{urls['SHEETS_API_BASE']}/_sandbox/stats")
    sendgrid = get_json(f"{urls['SENDGRID_API_BASE']}/_sandbox/stats")
    sheet_rows = get_json(f"{urls['SHEETS_API_BASE']}/_sandbox/spreadsheets/{SPREADSHEET}")["sheets"]
    sheet_rows = len(next(iter(sheet_rows.values()))) - 1  # the header
    sns_ids = set(
        Delivery.objects.filter(order_id__in=measured, integration="sns").values_list(
            "external_id", flat=True
        )
    )
    sns: dict[str, Any] = {"distinct_message_ids": len(sns_ids - {""})}
    if aws.get("queue_url"):
        queue = aws_client("sqs").get_queue_attributes(
            QueueUrl=aws["queue_url"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        sns["demo_queue_messages"] = sum(int(v) for v in queue.values())
    broker = "redis" if args.redis_url else "orm"
    return {
        "when": start_wall.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
            "load_average_1min_before_after": load,
        },
        "config": {
            "database": db_kind,
            "broker": broker,
            "orders": len(measured),
            "warmup_orders": len(warmup),
            "rate_target_per_s": args.rate or None,
            "q_workers": settings.Q_CLUSTER["workers"],
            "q_save_limit": args.save_limit,
            "q_poll_s": settings.Q_CLUSTER.get("poll"),
            "sweep_interval_s": args.sweep_interval,
            "sns_demo_queue": args.sns_demo_queue,
            "sheets_flush_s": settings.SHEETS_FLUSH_SECONDS,
            "sheets_max_writes_per_minute": settings.SHEETS_MAX_WRITES_PER_MINUTE,
            "extra_env": args.env,
            "batch": {
                name: min(get_adapter(name).max_batch, integration_config(name).get("batch", 10**6))
                for name in INTEGRATIONS
            },
        },
        "code": code_version(),
        "payments": {"seconds": round(paid_in, 3), "per_s": round(len(measured) / paid_in, 1)},
        "wall_s": round(wall, 3),
        "orders_per_s_fully_delivered": round(len(measured) / wall, 1),
        "lag": per_integration,
        "sheets": {
            "append_calls": sheets["append"] - sheets_before["append"],
            "write_requests": sheets["total_writes"] - sheets_before["total_writes"],
            "requests": sheets["requests"] - sheets_before["requests"],
            "writes_per_minute_max": sheets["writes_per_minute_max"],
            "rows": sheet_rows,
        },
        "sendgrid": {"calls": sendgrid["calls"] - sendgrid_before["calls"], "messages": sendgrid["messages"]},
        "postgres_server_cpu_s_all_databases": None if server_pg is None else round(server_pg, 2),
        "cpu_s": {
            "window_s": round(elapsed, 2),
            "available": round(elapsed * (os.cpu_count() or 1), 1),
            **{name: round(seconds, 2) for name, seconds in cpu.items()},
        },
        # What one order costs the whole stack in CPU, and the rate that would fill every core.
        "cpu_ms_per_order": round(1000 * ours / len(measured), 1),
        "cpu_ms_per_order_by_process": {
            name: round(1000 * seconds / len(measured), 2)
            for name, seconds in cpu.items()
            if name != "everything else on the machine"
        },
        "p95_paid_to_email_s": per_integration["email"]["p95_s"],
        "queue": {
            "interval_s": sampler.interval,
            "max_deliveries_unfinished": max((q["deliveries_unfinished"] for q in samples), default=0),
            "max_broker_tasks": max((q["broker_tasks"] for q in samples), default=0),
            "samples": samples,
        },
        "cpu_bound_ceiling_orders_per_s": round((os.cpu_count() or 1) * len(measured) / ours, 0),
        "profile": profiles,
        "sns": sns,
    }


# --- optional profiling (py-spy, measuring only: `pip install py-spy` into the venv) --------
def start_profilers(directory: str, by_name: dict[str, Managed]) -> list[tuple[str, Path, Any]]:
    """py-spy record (raw collapsed stacks) of this process, the cluster and its workers, the sweeper."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    targets = {"bench": os.getpid()}
    for name in ("qcluster", "sweeper", "sandbox_sendgrid", "sandbox_aws"):
        process = by_name[name].process
        assert process is not None
        targets[name] = process.pid
    profilers = []
    for name, pid in targets.items():
        path = out / f"{name}.txt"
        command = [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "100",
            "--idle",
            "-o",
            str(path),
        ]
        if name == "qcluster":
            command.append("--subprocesses")
        profilers.append(
            (name, path, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # noqa: S603
        )
    return profilers


def stop_profilers(profilers: list[tuple[str, Path, Any]]) -> dict[str, Any]:
    for _, _, process in profilers:
        process.send_signal(signal.SIGINT)
    summaries = {}
    for name, path, process in profilers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        if path.exists():
            summaries[name] = summarise_profile(path)
    return summaries


OUR_CODE = ("integrations/", "orders/", "payments/", "monitoring/", "config/")
_LINE = re.compile(r":\d+\)$")


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Where the wall time goes (py-spy --idle samples): the share of samples in which each
    function of our code is on the stack, and the functions on top of the stack (self), both as a
    percentage of the samples of the threads doing the work (django-q2 workers for the cluster)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_LINE.sub(")", f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if path.stem == "qcluster" and not any(f.startswith("worker (django_q/worker.py") for f in frames):
            continue  # the sentinel, pusher and monitor: bookkeeping, mostly asleep
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            if any(f"({prefix}" in frame for prefix in OUR_CODE):
                inclusive[frame] += n

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(100 * n / total, 1)] for frame, n in counter.most_common(top)] if total else []

    return {"samples": total, "our_code_inclusive_pct": share(inclusive), "self_pct": share(own)}


def print_table(result: dict[str, Any]) -> None:
    c = result["config"]
    print()
    print(
        f"fan-out: {c['orders']} orders · {c['database']} + {c['broker']} broker · Q_WORKERS={c['q_workers']}"
        f" · Q_SAVE_LIMIT={c['q_save_limit']} · poll {c['q_poll_s']} s"
        + (f" · target {c['rate_target_per_s']}/s" if c["rate_target_per_s"] else "")
        + (f" · {' '.join(c['extra_env'])}" if c["extra_env"] else "")
    )
    load = result["machine"]["load_average_1min_before_after"]
    print(f"  machine load (1 min): {load[0]} before, {load[1]} after")
    print(
        f"  payments          {result['payments']['seconds']:8.2f} s   ({result['payments']['per_s']:.0f}/s)"
    )
    print(f"  first pay → last  {result['wall_s']:8.2f} s")
    print(f"  fully delivered   {result['orders_per_s_fully_delivered']:8.1f} orders/s")
    print()
    print(f"  {'lag (s)':<10}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'done at':>10}{'attempts':>10}")
    for name, lag in result["lag"].items():
        print(
            f"  {name:<10}{lag['p50_s']:8.2f}{lag['p95_s']:8.2f}{lag['p99_s']:8.2f}{lag['max_s']:8.2f}"
            f"{lag['done_after_s']:10.2f}{lag['attempts']:10d}"
        )
    print(f"  p95 paid → email  {result['p95_paid_to_email_s']:8.3f} s")
    queue = result["queue"]
    series = queue["samples"][:: max(1, len(queue["samples"]) // 20)]
    print(
        f"  queue (unfinished deliveries / broker tasks, every {queue['interval_s'] * max(1, len(queue['samples']) // 20):.1f} s):"
        f" max {queue['max_deliveries_unfinished']} / {queue['max_broker_tasks']}"
    )
    print("    " + " ".join(f"{q['deliveries_unfinished']}/{q['broker_tasks']}" for q in series))
    s = result["sheets"]
    print()
    print(
        f"  sheets: {s['append_calls']} append calls, {s['write_requests']} write requests,"
        f" {s['requests']} requests, max {s['writes_per_minute_max']} writes/min, {s['rows']} rows"
    )
    cpu = dict(result["cpu_s"])
    window, available = cpu.pop("window_s"), cpu.pop("available")
    print(f"  cpu seconds over the {window:.1f} s window ({available:.0f} available):")
    print("    " + " · ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items()))
    print(
        "  CPU-ms per order: "
        + " · ".join(f"{name} {ms:.2f}" for name, ms in result["cpu_ms_per_order_by_process"].items())
    )
    print(
        f"  {result['cpu_ms_per_order']} CPU-ms per order for the whole stack:"
        f" all cores busy at {result['cpu_bound_ceiling_orders_per_s']:.0f} orders/s"
    )
    print(
        f"  sendgrid: {result['sendgrid']['calls']} calls ({result['sendgrid']['messages']} messages in all);"
        f" sns: {result['sns']['distinct_message_ids']} message ids"
        + (
            f", demo queue {result['sns']['demo_queue_messages']} messages"
            if "demo_queue_messages" in result["sns"]
            else " (no queue subscribed)"
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=10, help="orders paid and delivered before timing")
    parser.add_argument("--rate", type=float, default=0, help="payments per second (0: as fast as possible)")
    parser.add_argument("--database-url", default="", help="PostgreSQL server (a throwaway database is made)")
    parser.add_argument("--redis-url", default="", help="Redis broker and shared cache (with its db number)")
    parser.add_argument("--workers", type=int, default=0, help="Q_WORKERS (default: the settings' default)")
    parser.add_argument("--save-limit", type=int, default=-1, help="Q_SAVE_LIMIT (-1: keep no results)")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="seconds between sweeps")
    parser.add_argument("--deadline", type=float, default=600, help="seconds to wait for the last effect")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra settings")
    parser.add_argument(
        "--sns-demo-queue",
        action="store_true",
        help="subscribe the demo SQS queue (moto then spends ~10 ms of CPU per message on it)",
    )
    parser.add_argument("--profile", default="", metavar="DIR", help="py-spy raw profiles into DIR")
    parser.add_argument("--out", default="", help="JSON output (default bench/results/fanout-<db>.json)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the subprocesses' logs")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    result = run(args)
    print_table(result)
    if not args.no_save:
        out = Path(args.out) if args.out else RESULTS / f"fanout-{result['config']['database']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
