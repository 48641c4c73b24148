"""Cost as the data grows: each operation on an empty PostgreSQL database, then with N paid orders.

    .venv/bin/python bench/scale.py --size 100000          # quick
    .venv/bin/python bench/scale.py                         # 1,000,000 orders (the issue's size)
    .venv/bin/python bench/scale.py --database-url postgres://postgres@127.0.0.1:5432/postgres \
        --redis-url redis://127.0.0.1:6379/12

Creates a throwaway database `cis_scale_<random>` through --database-url (whose database must
exist), migrates it, and in one worker process:

1. measures every operation on the empty database (median of --repeats runs after a warm-up);
2. bulk-loads --size paid orders (2 lines, their events, one relayed outbox entry, a succeeded
   payment and its stored Stripe webhook event each) and 3 x --size succeeded deliveries, all
   older than a day (spread over the 60 days before), with `INSERT ... SELECT generate_series`
   cloned from one order placed, paid and relayed through the services (so every column holds
   what the app writes), then ANALYZE;
3. measures the same operations again, and runs EXPLAIN (ANALYZE, BUFFERS) on every statement
   each operation sent (captured with CaptureQueriesContext), flagging a `Seq Scan` on a table
   that grows with the orders.

Operations: placing an order (`order_place`), paying it (`order_transition` to paid, with its
outbox entry), relaying the outbox (`outbox_relay`), claiming due deliveries (the dispatcher's
claim), getting an order and listing orders (the API, a customer's first page and the staff's),
the monitoring API (everything under /api/monitoring/), the operators' page /ops/ and the fragment
it refreshes every 15 s (1h and 24h windows), and /metrics (Prometheus). Writes go through the
services in-process, reads through Django's test client. Prints operation | empty | loaded |
ratio (goal <= 1.20) and writes bench/results/scale.json.

--keep keeps the database (its name is printed); --loaded NAME measures an already loaded,
kept database again (migrating it first), e.g. after adding an index.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import re
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GOAL = 1.20
SPREAD_DAYS = 60
CUSTOMERS = 1000
SMALL_TABLE_ROWS = 10_000
# Read only tables the load leaves alone (recorded errors, alerts): the ratio of their costs is
# how much busier the machine was during the loaded measurement.
CONTROLS = ("/api/monitoring/errors", "/api/monitoring/alerts")
PROFILED = (
    "place an order",
    "list orders, staff (API)",
    "/api/monitoring/metrics?window=24h",
    "/api/monitoring/integrations",
    "/ops/?fragment=1 (15 s refresh)",
    "/metrics",
)
PAGE = 21
# Tables that grow with orders or with time: a Seq Scan on one of these is a finding.
GROWING = (
    "orders_order",
    "orders_orderline",
    "orders_orderevent",
    "orders_outboxentry",
    "integrations_delivery",
    "payments_payment",
    "payments_webhookevent",
    "payments_refund",
    "monitoring_metricbucket",
    "monitoring_errorrecord",
    "monitoring_proberesult",
)


def no_hook(order_ids: list[Any]) -> None:
    """The outbox commit hook, off: the benchmark relays by itself, as an operation."""


# --- the worker (one process, Django set up on the throwaway database) -----------------------
def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    logging.disable(logging.INFO)  # no line per order placed
    settings.OUTBOX_COMMIT_HOOK = "__main__.no_hook"
    bench = Bench(args.repeats, args.metric_days, args.profile)
    result: dict[str, Any] = {"size": args.size, "repeats": args.repeats}
    if not args.loaded:
        bench.setup()
        print("measuring on the empty database ...", flush=True)
        result["empty"] = bench.measure(explain=False)
        started = time.perf_counter()
        result["rows"] = bench.load(args.size)
        result["load_seconds"] = round(time.perf_counter() - started, 1)
    else:
        bench.attach()
    print("measuring on the loaded database ...", flush=True)
    result["loaded"] = bench.measure(explain=True)
    if bench.profiles:
        result["profile_loaded"] = bench.profiles
    Path(args.out).write_text(json.dumps(result, default=str))


class Bench:
    def __init__(self, repeats: int, metric_days: int = 0, profile: bool = False) -> None:
        self.repeats = repeats
        self.metric_days = metric_days
        self.profile = profile
        self.profiles: dict[str, list[str]] = {}

    # fixtures ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from django.contrib.auth import get_user_model

        from orders.models import Product

        users = get_user_model()
        users.objects.create_superuser(username="scale-staff", email="staff@example.com", password=None)
        users.objects.bulk_create(
            users(username=f"scale{i}", email=f"scale{i}@example.com", password="!")  # noqa: S106
            for i in range(CUSTOMERS)
        )
        for i in range(5):
            Product.objects.create(
                sku=f"SCALE-{i}", name=f"Scale {i}", price_minor=500 + 100 * i, stock=10**9
            )
        self.attach()
        self.template = self._template_order()
        # A full first page for the customer and the staff lists on the empty database too, so
        # both measure the same page (21 orders read, 20 shown) and only the data around differs.
        for _ in range(PAGE):
            self._pay(self._place())
        self._relay()

    def attach(self) -> None:
        from django.contrib.auth import get_user_model

        from orders.repositories import get_order_repository

        users = get_user_model()
        self.staff = users.objects.get(username="scale-staff")
        self.customer = users.objects.get(username="scale0")
        self.repository = get_order_repository()
        self.counter = 0

    def _place(self) -> Any:
        from orders.domain import Actor, ShippingAddress
        from orders.services import LineRequest, idempotency_scope_for, order_place

        self.counter += 1
        i = self.counter
        order, _ = order_place(
            repository=self.repository,
            actor=Actor(kind="customer", user_id=self.customer.pk),
            customer_id=self.customer.pk,
            email=self.customer.email,
            lines=[
                LineRequest(sku=f"SCALE-{i % 5}", quantity=1 + i % 3),
                LineRequest(sku=f"SCALE-{(i + 1) % 5}", quantity=1),
            ],
            shipping_address=ShippingAddress(
                name="Ada Lovelace",
                line1="12 Analytical Row",
                city="London",
                postal_code="N1 9GU",
                country="GB",
            ),
            idempotency_scope=idempotency_scope_for(self.customer),
            idempotency_key=f"scale-{secrets.token_hex(8)}",
        )
        return order.id

    def _pay(self, order_id: Any) -> None:
        from orders.domain import Actor, OrderStatus
        from orders.services import order_transition

        order_transition(
            repository=self.repository,
            order_id=order_id,
            to_status=OrderStatus.PAID,
            actor=Actor.system("bench"),
            data={"payment_intent": f"pi_scale_{order_id.hex[:12]}"},
        )

    def _relay(self) -> int:
        from integrations.services import outbox_relay

        return outbox_relay(repository=self.repository, dispatch=False)

    def _claim(self) -> int:
        """The dispatcher's claim: integrations.services._claim(name, size), a private function;
        if a rewrite renames it or changes its signature, the same query ("unfinished state +
        due time, ordered by due time", locked, skipping locked rows) is claimed here instead."""
        from django.db import transaction
        from django.utils import timezone

        from integrations import services
        from integrations.models import CLAIMABLE_STATES, Delivery, DeliveryState

        claimed = 0
        for name in services.integration_names():
            try:
                claimed += len(services._claim(name, 25))
                continue
            except (AttributeError, TypeError):
                pass
            with transaction.atomic():
                due = list(
                    Delivery.objects.filter(
                        integration=name, state__in=CLAIMABLE_STATES, next_attempt_at__lte=timezone.now()
                    )
                    .order_by("next_attempt_at")
                    .select_for_update(skip_locked=True)
                    .values_list("id", flat=True)[:25]
                )
                claimed += Delivery.objects.filter(id__in=due).update(state=DeliveryState.IN_FLIGHT)
        return claimed

    def _template_order(self) -> dict[str, Any]:
        """One order placed, paid and relayed through the services; its deliveries succeeded, a
        payment and a webhook event: the rows every bulk-loaded order is a copy of."""
        from django.utils import timezone

        from integrations.models import Delivery, DeliveryState
        from payments.models import Payment, PaymentStatus, WebhookEvent, WebhookResult

        order_id = self._place()
        self._pay(order_id)
        self._relay()
        now = timezone.now()
        Delivery.objects.filter(order_id=order_id).update(
            state=DeliveryState.SUCCEEDED, attempts=1, succeeded_at=now, latency_ms=20.0
        )
        order = self.repository.get(order_id)
        Payment.objects.create(
            order_id=order_id,
            attempt=1,
            intent_id="pi_scale_template",
            amount_minor=order.total_minor,
            amount_received_minor=order.total_minor,
            currency=order.currency,
            status=PaymentStatus.SUCCEEDED,
            card_brand="visa",
            card_last4="4242",
        )
        WebhookEvent.objects.create(
            event_id="evt_scale_template",
            type="payment_intent.succeeded",
            created=int(now.timestamp()),
            payload={
                "id": "evt_scale_template",
                "type": "payment_intent.succeeded",
                "data": {
                    "object": {"id": "pi_scale_template", "object": "payment_intent", "status": "succeeded"}
                },
            },
            processed_at=now,
            result=WebhookResult.PROCESSED,
            attempts=1,
        )
        return {"order_id": str(order_id)}

    # bulk load --------------------------------------------------------------------------------
    def load(self, size: int) -> dict[str, int]:
        from django.contrib.auth import get_user_model
        from django.db import connection

        order_id = self.template["order_id"]
        ids = list(
            get_user_model()
            .objects.filter(username__startswith="scale")
            .order_by("id")
            .values_list("id", flat=True)
        )
        step = SPREAD_DAYS * 86400 / size
        ts = f"(now() - interval '1 day' - g.i * interval '{step:.6f} seconds')"
        oid = "md5('o' || g.i)::uuid"
        customer = f"(ARRAY{ids[:CUSTOMERS]})[1 + mod(g.i, {min(len(ids), CUSTOMERS)})]"
        with connection.cursor() as cursor:

            def templates(table: str, where: str) -> list[dict[str, Any]]:
                cursor.execute(f"SELECT * FROM {table} WHERE {where}", [order_id])  # noqa: S608
                names = [c.name for c in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

            plan: list[tuple[str, str, dict[str, str]]] = [
                (
                    "orders_order",
                    "id = %s",
                    {
                        "id": oid,
                        "email": "'bulk' || mod(g.i, 5000) || '@example.com'",
                        "customer_id": customer,
                        "idempotency_key": "'bulk-' || g.i",
                        "created_at": ts,
                        "updated_at": ts,
                    },
                ),
            ]
            for line in templates("orders_orderline", "order_id = %s"):
                plan.append(
                    (
                        "orders_orderline",
                        f"order_id = %s AND position = {line['position']}",
                        {"id": "", "order_id": oid},
                    )
                )
            for event in templates("orders_orderevent", "order_id = %s"):
                plan.append(
                    (
                        "orders_orderevent",
                        f"order_id = %s AND sequence = {event['sequence']}",
                        {
                            "id": f"md5('e{event['sequence']}-' || g.i)::uuid",
                            "order_id": oid,
                            "created_at": ts,
                        },
                    )
                )
            plan.append(
                (
                    "orders_outboxentry",
                    "order_id = %s",
                    {"id": "md5('x' || g.i)::uuid", "order_id": oid, "created_at": ts, "relayed_at": ts},
                )
            )
            deliveries = templates("integrations_delivery", "order_id = %s")
            for delivery in deliveries:
                name = delivery["integration"]
                plan.append(
                    (
                        "integrations_delivery",
                        f"order_id = %s AND integration = '{name}'",
                        {
                            "id": f"md5('d{name}-' || g.i)::uuid",
                            "idempotency_key": f"t.integration || ':' || {oid} || ':' || t.event_type || ':v' || t.order_version",
                            "order_id": oid,
                            "outbox_id": "md5('x' || g.i)::uuid",
                            "next_attempt_at": ts,
                            "created_at": ts,
                            "updated_at": ts,
                            "succeeded_at": ts,
                        },
                    )
                )
            plan.append(
                (
                    "payments_payment",
                    "order_id = %s",
                    {
                        "id": "md5('p' || g.i)::uuid",
                        "order_id": oid,
                        "intent_id": "'pi_bulk_' || g.i",
                        "created_at": ts,
                        "updated_at": ts,
                    },
                )
            )
            plan.append(
                (
                    "payments_webhookevent",
                    "event_id = 'evt_scale_template' AND %s IS NOT NULL",
                    {
                        "id": "",
                        "event_id": "'evt_bulk_' || g.i",
                        "received_at": ts,
                        "processed_at": ts,
                        "created": f"extract(epoch from {ts})::bigint",
                    },
                )
            )
            rows: dict[str, int] = {}
            chunk = 100_000
            for table, where, overrides in plan:
                cursor.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
                    [table],
                )
                columns = [c for (c,) in cursor.fetchall() if overrides.get(c) != ""]
                select = ", ".join(overrides.get(c, f't."{c}"') for c in columns)
                names = ", ".join(f'"{c}"' for c in columns)
                started = time.perf_counter()
                for low in range(1, size + 1, chunk):
                    high = min(size, low + chunk - 1)
                    cursor.execute(
                        f"INSERT INTO {table} ({names}) SELECT {select} "  # noqa: S608 - our own names
                        f"FROM (SELECT * FROM {table} WHERE {where} LIMIT 1) t "
                        f"CROSS JOIN generate_series({low}, {high}) AS g(i)",
                        [order_id],
                    )
                rows[table] = rows.get(table, 0) + size
                print(f"  {table}: {size:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
            # Per-minute figures for the retained days before the last one: each (name, label)
            # the measuring traffic recorded, once a minute, as a system running that long has.
            days = min(self.metric_days, SPREAD_DAYS)
            if days:
                started = time.perf_counter()
                b = [f"b{i}" for i in range(14)]
                columns = ["minute", "name", "label", "count", "total", "maximum", *b]
                values = ["date_trunc('minute', now() - interval '1 day') - g.i * interval '1 minute'"]
                values += [f"t.{c}" for c in columns[1:]]
                sql = (
                    f"INSERT INTO monitoring_metricbucket ({', '.join(columns)}) SELECT {', '.join(values)} "  # noqa: S608 - our own names
                    "FROM (SELECT DISTINCT ON (name, label) * FROM monitoring_metricbucket) t "
                    f"CROSS JOIN generate_series(1, {(days - 1) * 1440}) AS g(i)"
                )
                cursor.execute(sql)
                rows["monitoring_metricbucket"] = cursor.rowcount
                print(
                    f"  monitoring_metricbucket: {cursor.rowcount:,} rows ({days - 1} days of minutes)"
                    f" in {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
            cursor.execute("ANALYZE")
        if len(deliveries) < 3:
            print(f"  note: the template order has {len(deliveries)} deliveries (integrations configured)")
        return rows

    # measuring --------------------------------------------------------------------------------
    def measure(self, *, explain: bool) -> dict[str, Any]:
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        staff, customer = Client(), Client()
        staff.force_login(self.staff)
        customer.force_login(self.customer)
        results: dict[str, Any] = {}
        samples: dict[str, list[float]] = {}
        captured: dict[str, list[str]] = {}

        def timed(name: str, call: Any) -> Any:
            # The query log is a deque of at most 9,000: once full, CaptureQueriesContext (which
            # slices it by length) would see nothing.
            connection.queries_log.clear()
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                value = call()
                elapsed = time.perf_counter() - started
            samples.setdefault(name, []).append(elapsed * 1000)
            captured[name] = [q["sql"] for q in queries.captured_queries]
            return value

        def get(client: Any, url: str) -> Any:
            def call() -> Any:
                response = client.get(url)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {url}: {response.status_code}")
                return response

            return call

        warmup = 3
        for n in range(warmup + self.repeats):
            order_id = timed("place an order", self._place)
            timed("pay an order", lambda order_id=order_id: self._pay(order_id))
            timed("relay the outbox", self._relay)
            timed("claim due deliveries", self._claim)
            reads = {
                "get an order (API)": get(staff, f"/api/orders/{order_id}"),
                "list orders, customer (API)": get(customer, "/api/orders"),
                "list orders, staff (API)": get(staff, "/api/orders"),
                "/api/monitoring/health": get(staff, "/api/monitoring/health"),
                "/api/monitoring/metrics?window=5m": get(staff, "/api/monitoring/metrics?window=5m"),
                "/api/monitoring/metrics?window=1h": get(staff, "/api/monitoring/metrics?window=1h"),
                "/api/monitoring/metrics?window=24h": get(staff, "/api/monitoring/metrics?window=24h"),
                "/api/monitoring/integrations": get(staff, "/api/monitoring/integrations"),
                "/api/monitoring/errors": get(staff, "/api/monitoring/errors"),
                "/api/monitoring/alerts": get(staff, "/api/monitoring/alerts"),
                "/ops/": get(staff, "/ops/"),
                "/ops/?fragment=1 (15 s refresh)": get(staff, "/ops/?fragment=1"),
                "/ops/?fragment=1&window=24h": get(staff, "/ops/?fragment=1&window=24h"),
                "/ops/?order=<email> (lookup)": get(staff, f"/ops/?order={self.customer.email}"),
                "/metrics": get(staff, "/metrics"),
            }
            for name, call in reads.items():
                timed(name, call)
            if n < warmup:
                samples.clear()
        if self.profile and explain:
            profiles = {}
            for name in PROFILED:
                call = reads.get(name) or {"place an order": self._place}.get(name)
                if call is None:
                    continue
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(5):
                    call()
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
                lines = [x for x in out.getvalue().splitlines() if x.strip()]
                start = next(i for i, x in enumerate(lines) if x.lstrip().startswith("ncalls"))
                profiles[name] = [
                    lines[i] for i in range(len(lines)) if "function calls" in lines[i]
                ] + lines[start:]
            self.profiles = profiles
        for name, values in samples.items():
            results[name] = {
                "median_ms": round(statistics.median(values), 2),
                "statements": len(captured[name]),
            }
            if explain:
                results[name]["explain"] = explain_all(captured[name])
        return results


def explain_all(statements: list[str]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each distinct statement, in a transaction rolled back."""
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)", [list(GROWING)])
        sizes = dict(cursor.fetchall())
    seen: set[str] = set()
    plans = []
    for sql in statements:
        head = sql.lstrip().split(None, 1)[0].upper()
        if head not in {"SELECT", "UPDATE", "DELETE", "WITH"}:
            continue
        shape = re.sub(r"'[^']*'|\b\d+\b", "?", sql)
        if shape in seen:
            continue
        seen.add(shape)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = [row[0] for row in cursor.fetchall()]
                transaction.set_rollback(True)
        except Exception as exc:  # noqa: BLE001 - a statement that cannot be re-run is reported
            plans.append({"sql": sql, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        # A Seq Scan of a table of a few pages is the planner's right choice: only big ones count.
        scanned = set(re.findall(r"Seq Scan on (\w+)", "\n".join(plan)))
        seq = sorted(m for m in scanned if m in GROWING and sizes.get(m, 0) >= SMALL_TABLE_ROWS)
        plans.append({"sql": sql, "plan": plan, "seq_scans_of_growing_tables": seq})
    return plans


# --- the driver ---------------------------------------------------------------------------------
def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def print_report(result: dict[str, Any], verbose: bool) -> None:
    empty, loaded = result.get("empty", {}), result["loaded"]
    width = max(len(n) for n in loaded)
    ratios = {
        name: after["median_ms"] / empty[name]["median_ms"] for name, after in loaded.items() if name in empty
    }
    # Operations that read no table the load grows: their ratio is the machine's, not the data's.
    controls = [ratios[name] for name in CONTROLS if name in ratios]
    control = statistics.median(controls) if controls else None
    print(f"\n{result['size']:,} orders loaded; median of {result['repeats']} after a warm-up (ms)")
    if control:
        print(
            f"control ratio {control:.2f} (operations on tables the load does not grow: {', '.join(CONTROLS)});"
            " '÷ control' is the ratio with the machine's own change taken out\n"
        )
    print(f"| {'operation'.ljust(width)} | empty | loaded | ratio | ÷ control | statements |")
    print(f"|{'-' * (width + 2)}|------:|-------:|------:|----------:|-----------:|")
    for name, after in loaded.items():
        before = empty.get(name)
        ratio = ratios.get(name)
        adjusted = ratio / control if ratio and control else None
        flag = "" if adjusted is None or adjusted <= GOAL else "  <-- over 1.20"
        print(
            f"| {name.ljust(width)} | {before['median_ms'] if before else '-':>5} | {after['median_ms']:>6} |"
            f" {f'{ratio:.2f}' if ratio else '-':>5} | {f'{adjusted:.2f}' if adjusted else '-':>9} |"
            f" {after['statements']:>10} |{flag}"
        )
    result["control_ratio"] = control
    print("\nEXPLAIN (ANALYZE, BUFFERS) of the statements on growing tables, loaded database:")
    found = 0
    for name, after in loaded.items():
        for entry in after.get("explain", []):
            if not any(t in entry["sql"] for t in GROWING):
                continue
            if "error" in entry:
                print(f"\n[{name}] could not EXPLAIN: {entry['error']}\n  {entry['sql'][:300]}")
                continue
            seq = entry["seq_scans_of_growing_tables"]
            found += bool(seq)
            if not verbose and not seq:
                top = entry["plan"][0].strip()
                timing = next((p for p in entry["plan"] if p.startswith("Execution Time")), "")
                print(f"[{name}] {top[:110]} · {timing}")
                continue
            print(f"\n[{name}] {'SEQ SCAN of ' + ', '.join(seq) if seq else ''}\n  {entry['sql'][:400]}")
            for line in entry["plan"]:
                print("    " + line)
    print(f"\nStatements with a Seq Scan of a growing table: {found}")
    for name, lines in result.get("profile_loaded", {}).items():
        print(f"\ncProfile of 5 x {name} (loaded), top functions by own time:")
        for line in lines:
            print("  " + re.sub(r"\S*/(site-packages|lib/python3\.\d+|scale)/", "", line)[:140])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1_000_000, help="paid orders to load (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--metric-days",
        type=int,
        default=8,
        help="days of per-minute figures to load (default 8, MONITORING_RETENTION_DAYS' default; 0: none)",
    )
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    parser.add_argument("--loaded", metavar="NAME", help="measure a kept, loaded database again")
    parser.add_argument("--verbose", action="store_true", help="print every plan in full")
    parser.add_argument("--profile", action="store_true", help="cProfile the slow operations (loaded)")
    parser.add_argument("--out", default=str(RESULTS / "scale.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import psycopg

    database = args.loaded or f"cis_scale_{secrets.token_hex(4)}"
    if not args.loaded:
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
    worker_out = Path(f"/tmp/cis-scale-{database}.json")  # noqa: S108 - the worker's answer
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": with_database(args.database_url, database),
        "REDIS_URL": args.redis_url,
        "CACHE_KEY_PREFIX": f"scale{database[-8:]}",
        "Q_CLUSTER_NAME": f"scale{database[-8:]}",
    }
    command = [sys.executable, __file__, "--worker", "--size", str(args.size), "--repeats", str(args.repeats)]
    command += ["--metric-days", str(args.metric_days)] + (["--profile"] if args.profile else [])
    command += ["--out", str(worker_out)] + (["--loaded", args.loaded] if args.loaded else [])
    started = time.perf_counter()
    try:
        subprocess.run(command, env=env, cwd=ROOT, check=True)  # noqa: S603 - our own script
        result = json.loads(worker_out.read_text())
    finally:
        worker_out.unlink(missing_ok=True)
        if args.keep or args.loaded:
            print(f"database kept: {database}")
        else:
            with psycopg.connect(args.database_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    if args.loaded:
        previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        result["empty"] = previous.get("empty", {})
        result["size"] = previous.get("size", result["size"])
    result |= {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
    }
    print_report(result, args.verbose)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
