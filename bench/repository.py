"""Repository benchmark: place, pay, get and list N orders on each `OrderRepository` backend.

    .venv/bin/python bench/repository.py                 # sqlite, postgres, dynamodb (moto)
    .venv/bin/python bench/repository.py --orders 1000 --backends sqlite,dynamodb-local

Everything goes through the port, the way the app uses it: orders are placed with
`orders.services.order_place` (two lines from products in the database, an idempotency key per
order, as the checkout and the API send one), then each one moves to `paid` with
`order_transition` (which also writes the outbox entry of that notified change, in the same
atomic write), then each is read back with `get`, then listed a page of 20 at a time (every
customer's orders, and the staff listing of all orders, following the cursors, newest first).
Operations run one after another from one thread: the figures are latencies, not a load test.

Backends, each in a fresh process of its own (Django's settings are read once per process):

- ``sqlite``: the ORM repository on a temporary SQLite file, migrated;
- ``postgres``: the ORM repository on a throwaway database ``cis_bench_repo_<random>`` created
  through --postgres-url (whose database must exist) and dropped at the end;
- ``dynamodb``: the DynamoDB repository on moto (sandbox/moto.py's server, one request at a
  time, inside the benchmark's process, so the server shares its GIL); the catalog (products,
  stock) stays in a temporary SQLite file, as it does in the app. moto's TransactWriteItems
  deep-copies the whole table once per action (its rollback), so every write costs time in
  proportion to the table: past about 150 orders a write takes seconds (and full garbage
  collections of those copies stall the process), the adapter's 5 s read timeout fires, botocore
  retries and moto, which ignores ClientRequestToken, turns the retry into a false conflict or
  an HTTP 500. So moto runs --moto-orders orders (100 by default), whatever --orders says: its
  request counts hold at any size, its latencies are moto's and not DynamoDB's;
- ``dynamodb-local``: the DynamoDB repository on DynamoDB Local 1.25 (Java; in memory), in a
  private network namespace (`unshare -n`, as root: it cannot bind to loopback only) with this
  worker; the jar is the one bin/test-dynamodb-local fetches into .cache/dynamodb-local/. A real
  implementation with indexes, so it takes the full --orders; not in the default --backends.

The outbox commit hook (the fan-out's nudge) is replaced by a no-op: only storage is measured.
DynamoDB requests are counted with botocore event hooks on the adapter's own client, per API
operation ("before-call") and per HTTP request sent ("before-send", retries included); the
target is one write request per order placed and one per status change. SQL statements are
counted on every backend (on the DynamoDB one they are the catalog's: stock reservation).

Prints a table (ops/s and p50/p95 latency per operation, requests per operation) and writes
bench/results/repository.json (--out to change); backends not run this time keep their earlier
entry there, so backends can be run one at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "repository.json"
BACKENDS = ("sqlite", "postgres", "dynamodb", "dynamodb-local")
DEFAULT_BACKENDS = ("sqlite", "postgres", "dynamodb")
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_MOTO_ORDERS = 100
DYNAMODB_LOCAL = Path(os.environ.get("DYNAMODB_LOCAL_CACHE", ROOT / ".cache" / "dynamodb-local"))
DYNAMODB_LOCAL_PORT = 8000  # inside a network namespace of its own: always free
MAX_CUSTOMERS = 50  # customers get orders in turn: 100 each (5 pages) at 5,000 orders
PAGE = 20
WARMUP_ORDERS = 20
DYNAMODB_WRITES = {"TransactWriteItems", "PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
OPERATIONS = ("place", "transition", "get", "list_customer", "list_all")


def no_hook(order_ids: list[Any]) -> None:
    """Stands in for settings.OUTBOX_COMMIT_HOOK: the fan-out is not what is measured here."""


# --- statistics -------------------------------------------------------------------------------
def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def summarize(latencies: list[float], wall: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "count": len(ordered),
        "seconds": round(wall, 3),
        "ops_per_second": round(len(ordered) / wall, 1) if wall else 0.0,
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3) if ordered else 0.0,
    }


# --- the worker: one backend, in a process of its own -------------------------------------------
class RequestCounter:
    """DynamoDB API calls (by operation) and HTTP requests sent, from the client's own events."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.sent = 0
        client.meta.events.register("before-call.dynamodb", self._on_call)
        client.meta.events.register("before-send.dynamodb", self._on_send)

    def _on_call(self, model: Any, **kwargs: Any) -> None:
        self.calls[model.name] += 1

    def _on_send(self, **kwargs: Any) -> None:
        self.sent += 1

    def take(self) -> tuple[Counter[str], int]:
        calls, sent = self.calls, self.sent
        self.calls, self.sent = Counter(), 0
        return calls, sent


class SqlCounter:
    def __init__(self) -> None:
        self.statements = 0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.statements += 1
        return execute(sql, params, many, context)

    def take(self) -> int:
        statements, self.statements = self.statements, 0
        return statements


def worker(backend: str, orders: int, out: Path) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from orders.domain import Actor, OrderQuery, OrderStatus, ShippingAddress
    from orders.models import Product
    from orders.repositories import OrderRepository
    from orders.repositories.orm import DjangoOrderRepository
    from orders.services import LineRequest, idempotency_scope_for, order_place, order_transition

    call_command("migrate", verbosity=0, interactive=False)
    settings.OUTBOX_COMMIT_HOOK = "__main__.no_hook"

    stop: Callable[[], None] = lambda: None  # noqa: E731
    requests: RequestCounter | None = None
    repository: OrderRepository
    if backend.startswith("dynamodb"):
        from orders.repositories.dynamodb import DynamoDbOrderRepository, create_tables, dynamodb_client

        if backend == "dynamodb-local":
            settings.DYNAMODB_ENDPOINT_URL = f"http://127.0.0.1:{DYNAMODB_LOCAL_PORT}"
        else:
            import logging

            from sandbox.moto import SerialMotoServer

            logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
            server = SerialMotoServer()
            settings.DYNAMODB_ENDPOINT_URL = server.start()
            stop = server.stop
        settings.AWS_REGION = "us-east-1"
        settings.AWS_ACCESS_KEY_ID = "testing"
        settings.AWS_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - the stand-ins accept any
        settings.DYNAMODB_TABLE = "cis-bench-orders"
        client = dynamodb_client()
        create_tables(client)
        requests = RequestCounter(client)
        repository = DynamoDbOrderRepository(client=client)
    else:
        repository = DjangoOrderRepository()

    user_model = get_user_model()
    customer_count = max(1, min(MAX_CUSTOMERS, orders // 100))
    customers = [
        user_model.objects.create_user(username=f"bench{i}", email=f"bench{i}@example.com", password=None)
        for i in range(customer_count + 1)
    ]
    warmup_customer, customers = customers[0], customers[1:]
    products = [
        Product.objects.create(sku=f"BENCH-{i}", name=f"Bench {i}", price_minor=500 + 100 * i, stock=10**8)
        for i in range(5)
    ]
    address = ShippingAddress(
        name="Ada Lovelace", line1="12 Analytical Row", city="London", postal_code="N1 9GU", country="GB"
    )

    def place(i: int, customer: Any) -> Any:
        order, created = order_place(
            repository=repository,
            actor=Actor(kind="customer", user_id=customer.pk),
            customer_id=customer.pk,
            email=customer.email,
            lines=[
                LineRequest(sku=products[i % 5].sku, quantity=1 + i % 3),
                LineRequest(sku=products[(i + 1) % 5].sku, quantity=1),
            ],
            shipping_address=address,
            idempotency_scope=idempotency_scope_for(customer),
            idempotency_key=f"bench-{customer.pk}-{i}",
        )
        assert created
        return order.id

    def pay(order_id: Any) -> None:
        order_transition(
            repository=repository,
            order_id=order_id,
            to_status=OrderStatus.PAID,
            actor=Actor.system("bench"),
            data={"payment_intent": f"pi_bench_{order_id.hex[:12]}"},
        )

    # Warm-up (not measured): first connections, clients, imports, query plans.
    for i in range(WARMUP_ORDERS):
        order_id = place(-1 - i, warmup_customer)
        pay(order_id)
        repository.get(order_id)
    repository.list(OrderQuery(customer_id=warmup_customer.pk, limit=PAGE))
    repository.list(OrderQuery(limit=PAGE))

    sql = SqlCounter()
    results: dict[str, Any] = {}

    @contextmanager
    def phase(name: str) -> Iterator[list[float]]:
        latencies: list[float] = []
        if requests:
            requests.take()
        sql.take()
        started = time.perf_counter()
        with connection.execute_wrapper(sql):
            yield latencies
        wall = time.perf_counter() - started
        result = summarize(latencies, wall)
        result["sql_statements_per_op"] = round(sql.take() / max(1, len(latencies)), 3)
        if requests:
            calls, sent = requests.take()
            count = max(1, len(latencies))
            writes = sum(n for operation, n in calls.items() if operation in DYNAMODB_WRITES)
            result["dynamodb"] = {
                "calls_per_op": round(sum(calls.values()) / count, 3),
                "writes_per_op": round(writes / count, 3),
                "reads_per_op": round((sum(calls.values()) - writes) / count, 3),
                "http_requests_per_op": round(sent / count, 3),
                "calls_by_operation": dict(sorted(calls.items())),
            }
        results[name] = result
        print(f"  {backend:8} {name:14} {result['ops_per_second']:>9.1f} ops/s", file=sys.stderr, flush=True)

    order_ids: list[Any] = []
    with phase("place") as latencies:
        for i in range(orders):
            t = time.perf_counter()
            order_ids.append(place(i, customers[i % customer_count]))
            latencies.append(time.perf_counter() - t)

    with phase("transition") as latencies:
        for order_id in order_ids:
            t = time.perf_counter()
            pay(order_id)
            latencies.append(time.perf_counter() - t)

    with phase("get") as latencies:
        for order_id in order_ids:
            t = time.perf_counter()
            order = repository.get(order_id)
            latencies.append(time.perf_counter() - t)
            assert order.status == OrderStatus.PAID

    listed = 0
    with phase("list_customer") as latencies:
        for customer in customers:
            cursor = None
            while True:
                t = time.perf_counter()
                page = repository.list(OrderQuery(customer_id=customer.pk, limit=PAGE, cursor=cursor))
                latencies.append(time.perf_counter() - t)
                listed += len(page.orders)
                cursor = page.next_cursor
                if cursor is None:
                    break
    assert listed == orders, f"the customer listings returned {listed} orders, not {orders}"

    with phase("list_all") as latencies:
        cursor = None
        for _ in range(max(1, orders // PAGE)):
            t = time.perf_counter()
            page = repository.list(OrderQuery(limit=PAGE, cursor=cursor))
            latencies.append(time.perf_counter() - t)
            assert len(page.orders) == PAGE
            cursor = page.next_cursor

    stop()
    report = {"backend": backend, "orders": orders, "customers": customer_count, "operations": results}
    out.write_text(json.dumps(report, indent=2))


# --- the driver -------------------------------------------------------------------------------
def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


# Run inside `unshare -n`: loopback up, DynamoDB Local in the background, the worker, then stop it.
IN_NAMESPACE = """
set -eu
ip link set lo up
cd "$DYNAMODB_LOCAL"
java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar -inMemory -port "$PORT" \
    -disableTelemetry >"$LOG" 2>&1 &
java_pid=$!
trap 'kill $java_pid 2>/dev/null || true; wait $java_pid 2>/dev/null || true' EXIT
deadline=$(($(date +%s) + 60))
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    kill -0 $java_pid 2>/dev/null || { cat "$LOG" >&2; echo "DynamoDB Local exited" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { cat "$LOG" >&2; echo "DynamoDB Local not ready" >&2; exit 1; }
    sleep 0.1
done
cd "$ROOT"
"$@"
"""


def dynamodb_local_problem() -> str:
    if os.geteuid() != 0:
        return "needs root: DynamoDB Local runs in a private network namespace (unshare -n)"
    if not (DYNAMODB_LOCAL / "DynamoDBLocal.jar").is_file():
        return f"no DynamoDB Local in {DYNAMODB_LOCAL}: run bin/test-dynamodb-local once to fetch it"
    return ""


def run_backend(backend: str, orders: int, postgres_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"cis-bench-repo-{backend}-") as tmp:
        out = Path(tmp) / "result.json"
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DJANGO_DEBUG="false",  # no query log
            SQLITE_PATH=str(Path(tmp) / "db.sqlite3"),
            ORDER_REPOSITORY="dynamodb" if backend.startswith("dynamodb") else "orm",
        )
        command = [sys.executable, __file__, "--worker", backend, "--orders", str(orders), "--out", str(out)]
        if backend == "dynamodb-local":
            env.update(
                DYNAMODB_LOCAL=str(DYNAMODB_LOCAL),
                PORT=str(DYNAMODB_LOCAL_PORT),
                LOG=str(Path(tmp) / "dynamodb-local.log"),
                ROOT=str(ROOT),
                NO_PROXY="127.0.0.1,localhost",
                no_proxy="127.0.0.1,localhost",
            )
            command = ["unshare", "-n", "--", "bash", "-c", IN_NAMESPACE, "in-namespace", *command]
        database = ""
        if backend == "postgres":
            import psycopg

            database = f"cis_bench_repo_{secrets.token_hex(4)}"
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{database}"')
            env["DATABASE_URL"] = with_database(postgres_url, database)
        try:
            started = time.perf_counter()
            subprocess.run(command, env=env, cwd=ROOT, check=True)  # noqa: S603 - our own script
            result = json.loads(out.read_text())
            result["process_seconds"] = round(time.perf_counter() - started, 1)
            result["when"] = datetime.now(UTC).isoformat(timespec="seconds")
            return result
        finally:
            if database:
                import psycopg

                with psycopg.connect(postgres_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def versions(postgres_url: str, backend: str) -> dict[str, str]:
    from importlib.metadata import version

    found = {"python": platform.python_version(), "django": version("django")}
    if backend == "sqlite":
        found["sqlite"] = __import__("sqlite3").sqlite_version
    elif backend == "postgres":
        import psycopg

        found["psycopg"] = version("psycopg")
        with psycopg.connect(postgres_url) as conn:
            found["postgresql"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    else:
        found["boto3"] = version("boto3")
        if backend == "dynamodb":
            found["moto"] = version("moto")
        else:
            # Its README's release notes start with the newest: "2024-11-06 (1.25.1)".
            notes = (DYNAMODB_LOCAL / "README.txt").read_text(errors="replace")
            release = re.search(r"\((\d+\.\d+\.\d+)\)", notes)
            found["dynamodb_local"] = release.group(1) if release else "?"
    return found


def print_table(results: dict[str, Any]) -> None:
    header = (
        f"{'backend':15} {'orders':>6} {'operation':14} {'ops/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'SQL/op':>6}"
        "  DynamoDB requests/op"
    )
    print(header)
    print("-" * (len(header) + 40))
    for backend, result in results.items():
        for name in OPERATIONS:
            op = result["operations"][name]
            dynamo = op.get("dynamodb")
            requests = ""
            if dynamo:
                by_operation = ", ".join(
                    f"{operation} {calls / op['count']:g}"
                    for operation, calls in dynamo["calls_by_operation"].items()
                )
                requests = (
                    f"{dynamo['writes_per_op']:g} write + {dynamo['reads_per_op']:g} read ({by_operation})"
                )
            print(
                f"{backend:15} {result['orders']:>6} {name:14} {op['ops_per_second']:>8.1f} {op['p50_ms']:>8.2f}"
                f" {op['p95_ms']:>8.2f} {op['sql_statements_per_op']:>6g}  {requests}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000, help="orders to place (default 5000)")
    parser.add_argument(
        "--moto-orders",
        type=int,
        default=DEFAULT_MOTO_ORDERS,
        help=f"orders for the dynamodb (moto) backend, which slows down with its table (default {DEFAULT_MOTO_ORDERS})",
    )
    parser.add_argument(
        "--backends",
        default=",".join(DEFAULT_BACKENDS),
        help=f"comma-separated, from {', '.join(BACKENDS)} (default {','.join(DEFAULT_BACKENDS)})",
    )
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="a PostgreSQL server (its db must exist)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON results file (merged by backend)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.orders, args.moto_orders) < PAGE:
        parser.error(f"--orders and --moto-orders must be at least {PAGE}")
    if args.worker:
        worker(args.worker, args.orders, args.out)
        return

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))} (choose from {', '.join(BACKENDS)})")
    if "dynamodb-local" in backends and (problem := dynamodb_local_problem()):
        parser.error(f"dynamodb-local: {problem}")

    report: dict[str, Any] = {}
    if args.out.exists():
        with contextlib.suppress(ValueError):
            report = json.loads(args.out.read_text())
    if report.get("benchmark") != "repository":
        report = {}
    report.update(
        benchmark="repository",
        page_size=PAGE,
        machine={"platform": platform.platform(), "cpus": os.cpu_count()},
    )
    results = report.setdefault("results", {})
    ran = {}
    for backend in backends:
        orders = args.moto_orders if backend == "dynamodb" else args.orders
        print(f"{backend}: {orders} orders ...", file=sys.stderr, flush=True)
        ran[backend] = run_backend(backend, orders, args.postgres_url) | {
            "versions": versions(args.postgres_url, backend)
        }
    results.update(ran)
    report["results"] = {backend: results[backend] for backend in BACKENDS if backend in results}

    print_table(ran)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
