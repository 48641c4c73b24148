"""The order API against its floors: `POST /api/orders` next to a bare Django view and a DRF view
that only validates the same body, served by the same server in the same run (issue 15, goal 1).

    .venv/bin/python bench/api.py                       # SQLite (a temporary file)
    .venv/bin/python bench/api.py --database-url postgres://postgres@127.0.0.1:5432/postgres \\
        --redis-url redis://127.0.0.1:6379/10           # PostgreSQL (a throwaway database) + Redis
    .venv/bin/python bench/api.py --seconds 15 --clients 10 50

The server is the Procfile's `web` line (gunicorn -c config/gunicorn.py config.asgi:application,
tools.processes.procfile_command), 2 workers x 4 threads as config/gunicorn.py sets them, on a
fresh database (migrated; two products with 10^9 units of stock each), DEBUG off, monitoring on
as deployed (MONITORING_ENABLED=true, LOG_FORMAT=json, LOG_LEVEL=INFO, access log on), with
DJANGO_SETTINGS_MODULE=bench.settings: the product's settings and URLs plus the two floors of
bench/floors.py.

The load is `wrk` (/usr/bin/wrk, 2 threads, keep-alive connections): every request is the same
guest order of 2 lines (JSON), POSTed to each of the three targets for --seconds at each
--clients, after --warmup seconds not counted. Each order request carries an Idempotency-Key of
its own, and an X-Forwarded-For address of its own, the server trusting one proxy
(RATE_LIMIT_TRUSTED_PROXY_COUNT=1): every order is a different guest behind the site's proxy, so
the rate limits (RATE_LIMIT_ANON, RATE_LIMIT_ORDER_CREATE_ANON) and the anonymous hold limit
(ORDER_ANON_HOLD_MAX_UNITS) keep their defaults and their code runs on every request, without
turning the load into 429s. Any answer other than 200/201 is counted and reported.

Printed: the issue's table (req/s, p99 per target; share of validate-only = orders / DRF floor)
plus the server's CPU-ms per request (utime + stime of the gunicorn processes, from /proc). At
the end the database is checked: orders == 201 answers, units taken from stock == units in
order lines, no stock below zero (no oversell). JSON in bench/results/api-<sqlite|postgresql>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.processes import free_port, procfile_command, start  # noqa: E402 - after the path above

WRK = "/usr/bin/wrk"
SKUS = ("BENCH-A", "BENCH-B")
STOCK = 10**9
BODY = {
    "email": "guest@example.com",
    "lines": [{"sku": SKUS[0], "quantity": 1}, {"sku": SKUS[1], "quantity": 2}],
    "shipping_address": {
        "name": "Ada Guest",
        "line1": "12 Row",
        "city": "London",
        "postal_code": "N1 1AA",
        "country": "GB",
    },
}
TARGETS = {
    "django": "/bench/floor/django",
    "drf": "/bench/floor/drf",
    "orders": "/api/orders",
}
# Each wrk thread numbers its requests; the key and the client address are unique per request.
LUA = r"""
local counter = 0
local threads = {}
tid = 0  -- a global: each thread's own is set by setup()
local run = "%(run)s"
local body = [[%(body)s]]

function setup(thread)
  tid = tid + 1
  thread:set("tid", tid)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  local n = counter
  local address = string.format(
    "%%d.%%d.%%d.%%d", 10 + tid, math.floor(n / 65536) %% 256, math.floor(n / 256) %% 256, n %% 256)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("%%s-%%d-%%d", run, tid, n),
    ["X-Forwarded-For"] = address,
  }
  return wrk.format("POST", nil, headers, body)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, string.format('"%%d": %%d', code, n)) end
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d,'
    .. ' "socket_errors": %%d, "statuses": {%%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ", ")))
end
"""


def code_version() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)  # noqa: S603, S607
        return done.stdout.strip() if done.returncode == 0 else ""

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "modified": [line.split(maxsplit=1)[-1] for line in status.splitlines() if line.strip()],
    }


def database(url: str | None, workdir: Path) -> Iterator[tuple[dict[str, str], str]]:
    """Variables pointing at a fresh database, and its kind; a PostgreSQL one is dropped after."""
    from tools.processes import throwaway_database

    return throwaway_database(url, workdir, prefix="cis_bench_api")


def redis_cleanup(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


SEED = f"""
import django, json
django.setup()
from orders.models import Product
Product.objects.bulk_create([
    Product(sku=sku, name="Bench " + sku, price_minor=1000 + i, currency="USD", stock={STOCK})
    for i, sku in enumerate({list(SKUS)!r})
])
"""
CHECK = f"""
import django, json
django.setup()
from django.db.models import Sum
from orders.models import Order, OrderLine, Product
stock = dict(Product.objects.values_list("sku", "stock"))
taken = {{sku: {STOCK} - left for sku, left in stock.items()}}
in_lines = dict(OrderLine.objects.values("sku").annotate(n=Sum("quantity")).values_list("sku", "n"))
keys = Order.objects.exclude(idempotency_key="").values("idempotency_key").distinct().count()
print(json.dumps({{"orders": Order.objects.count(), "distinct_keys": keys, "stock": stock,
                  "taken": taken, "in_lines": in_lines}}))
"""


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def wrk(port: int, path: str, clients: int, seconds: float, script: Path) -> dict[str, Any]:
    command = [
        WRK,
        "-t",
        str(min(2, clients)),
        "-c",
        str(clients),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    line = next((line for line in done.stdout.splitlines() if line.startswith("WRKJSON ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    result = json.loads(line.removeprefix("WRKJSON "))
    seconds_run = result["duration_us"] / 1e6
    ok = sum(n for code, n in result["statuses"].items() if code in {"200", "201"})
    return {
        "requests": result["requests"],
        "ok": ok,
        "statuses": result["statuses"],
        "socket_errors": result["socket_errors"],
        "req_per_s": result["requests"] / seconds_run,
        "ok_per_s": ok / seconds_run,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
        "seconds": seconds_run,
    }


def wait_up(port: int, deadline: float = 60.0) -> None:
    stop = time.monotonic() + deadline
    while time.monotonic() < stop:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/products", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("The server did not come up")


def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    workdir = Path(tempfile.mkdtemp(prefix="cis-bench-api-"))
    prefix = f"benchapi{run_id}"
    with database(args.database_url, workdir) as (db_env, kind):
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SQLITE_PATH", "REDIS_URL"}}
        port = free_port()
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "DJANGO_ENV": "development",
                "DJANGO_DEBUG": "false",
                "ORDER_REPOSITORY": "orm",
                "MONITORING_ENABLED": "true",
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
                "GUNICORN_BIND": f"127.0.0.1:{port}",
                "GUNICORN_WORKERS": "2",
                "GUNICORN_THREADS": "4",
                # Every guest comes through one proxy (see the docstring): limits at their defaults.
                "RATE_LIMIT_TRUSTED_PROXY_COUNT": "1",
                "Q_CLUSTER_NAME": prefix,
                "CACHE_KEY_PREFIX": prefix,
                **db_env,
                **({"REDIS_URL": args.redis_url} if args.redis_url else {}),
            }
        )
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)  # noqa: S603
        subprocess.run([sys.executable, "-c", SEED], cwd=ROOT, env=env, check=True)  # noqa: S603
        server = start(procfile_command("web"), env=env, log=workdir / "server.log")
        results: dict[str, Any] = {}
        try:
            wait_up(port)
            pids = [server.pid, *children(server.pid)]
            body = json.dumps(BODY)
            for clients in args.clients:
                for target, path in TARGETS.items():
                    if target not in args.targets:
                        continue
                    script = workdir / f"{target}-{clients}.lua"
                    script.write_text(LUA % {"run": f"{run_id}-{target}-{clients}", "body": body})
                    if args.warmup > 0:
                        warm = script.with_name("w-" + script.name)
                        warm.write_text(LUA % {"run": f"{run_id}-w-{target}-{clients}", "body": body})
                        wrk(port, path, clients, args.warmup, warm)
                    before = cpu_seconds(pids)
                    measured = wrk(port, path, clients, args.seconds, script)
                    cpu = cpu_seconds(pids) - before
                    measured["server_cpu_ms_per_request"] = 1000 * cpu / max(1, measured["requests"])
                    results[f"{target}@{clients}"] = measured
                    print(
                        f"  {target:7} {clients:3} clients: {measured['req_per_s']:8.1f} req/s,"
                        f" p99 {measured['p99_ms']:7.1f} ms, {measured['server_cpu_ms_per_request']:.2f} CPU-ms/req,"
                        f" statuses {measured['statuses']}",
                        flush=True,
                    )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=20)
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        checked = json.loads(
            subprocess.run(  # noqa: S603
                [sys.executable, "-c", CHECK], cwd=ROOT, env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        if args.redis_url:
            redis_cleanup(args.redis_url, prefix)
    created = sum(int(r["statuses"].get("201", 0)) for k, r in results.items() if k.startswith("orders@"))
    # Warm-up orders are orders too: count them from the database rather than from wrk.
    checked["oversold"] = any(left < 0 for left in checked["stock"].values()) or checked["taken"] != {
        sku: checked["in_lines"].get(sku, 0) for sku in checked["taken"]
    }
    checked["created_201_measured"] = created
    return {"database": kind, "results": results, "check": checked}


def table(outcome: dict[str, Any], clients: list[int]) -> str:
    stack = "SQLite" if outcome["database"] == "sqlite" else "PostgreSQL + Redis"
    rows = [
        "| stack | clients | bare Django | DRF validate-only | `POST /api/orders` | share of validate-only"
        " | p99 of orders | server CPU-ms per order (validate-only) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in clients:
        r = {t: outcome["results"][f"{t}@{n}"] for t in TARGETS}
        share = r["orders"]["ok_per_s"] / r["drf"]["ok_per_s"] if r["drf"]["ok_per_s"] else 0.0
        rows.append(
            f"| {stack} | {n} | {r['django']['req_per_s']:,.0f} req/s | {r['drf']['req_per_s']:,.0f}"
            f" | {r['orders']['ok_per_s']:,.0f} | {share:.0%} | {r['orders']['p99_ms']:.0f} ms"
            f" | {r['orders']['server_cpu_ms_per_request']:.2f} ({r['drf']['server_cpu_ms_per_request']:.2f}) |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="counted seconds per target and load")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--database-url", help="a PostgreSQL server (a throwaway database is made)")
    parser.add_argument("--redis-url", help="Redis for the cache (this run's keys are deleted)")
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=list(TARGETS),
        default=list(TARGETS),
        help="for profiling: fewer targets",
    )
    parser.add_argument("--output", help="JSON file (default bench/results/api-<database>.json)")
    args = parser.parse_args()
    if not Path(WRK).exists():
        raise SystemExit(f"{WRK} is missing: apt-get install wrk")
    started = time.time()
    outcome = run(args)
    print()
    if set(args.targets) == set(TARGETS):
        print(table(outcome, args.clients))
    check = outcome["check"]
    print(
        f"\nDatabase after the run: {check['orders']} orders ({check['distinct_keys']} idempotency keys),"
        f" stock taken {check['taken']}, units in order lines {check['in_lines']},"
        f" oversold: {'YES' if check['oversold'] else 'no'}"
    )
    report = {
        "benchmark": "api",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "code": code_version(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "clients": args.clients},
        **outcome,
    }
    path = (
        Path(args.output) if args.output else ROOT / "bench" / "results" / f"api-{outcome['database']}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if check["oversold"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
