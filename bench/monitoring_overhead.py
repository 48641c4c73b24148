"""Monitoring overhead benchmark: the real web server's throughput with monitoring on and off.

    .venv/bin/python bench/monitoring_overhead.py
    .venv/bin/python bench/monitoring_overhead.py --rounds 5 --seconds 20 --workers 2 --clients 8
    .venv/bin/python bench/monitoring_overhead.py --same     # A/A: both servers off (the noise floor)
    .venv/bin/python bench/monitoring_overhead.py \\
        --database-url postgres://postgres@127.0.0.1:5432/postgres --redis-url redis://127.0.0.1:6379/14

It builds its own stack, like bench/fanout.py, and takes it down afterwards:

- a fresh database (a temporary SQLite file, or with --database-url a throwaway PostgreSQL
  database `cis_bench_<random>`, dropped at the end), migrated, with a few products, one customer
  and a few of the customer's orders; with --redis-url the cache is Redis (this run's keys are
  deleted at the end);
- moto (`manage.py sandbox_aws --no-setup`) on a free port, as CloudWatch Logs and metrics;
- the web server itself, gunicorn with config/gunicorn.py as the Procfile's `web` line runs it
  (GUNICORN_WORKERS=--workers, GUNICORN_THREADS=--threads), twice per round on free ports, one
  server per mode, both started afresh for every round:

  ``on``:  MONITORING_ENABLED=true, LOG_FORMAT=json, CLOUDWATCH_LOGS_ENABLED=true,
           CLOUDWATCH_METRICS_ENABLED=true, AWS_ENDPOINT_URL=<moto>;
  ``off``: MONITORING_ENABLED=false, LOG_FORMAT=console, CLOUDWATCH_*_ENABLED=false.

  Both at LOG_LEVEL=INFO, with the same processes and threads and the same middleware list (the
  monitoring middleware stays in the stack when off: it still sets the request id, but records
  nothing). With --same the `on` server gets the `off` settings too: an A/A run, whose
  "overhead" is the noise of the machine.

Per round: --clients threads in this process, each with one keep-alive `requests.Session` per
server, load one server at a time. First each server gets --warmup seconds of load (not counted;
six seconds in all by default, so the `on` server's first metrics flush, which builds its
CloudWatch client, falls before the count). Then the two take turns in slices of --slice seconds
(on, off, off, on, on, off, ...: drift and other jobs' bursts fall on both alike) until each has
had --seconds counted. The rounds start with the modes in turn, too.

The mix, per 10 requests of each client: 3 x GET /api/orders (the customer's first page, with a
JWT from POST /api/auth/token), 3 x GET /api/orders/<id> (one of the seeded orders), 3 x GET /
(the product list page, anonymous) and 1 x POST /api/orders (a new order, an Idempotency-Key of
its own). Counted: requests completed inside the slices, their latency (p50/p95/p99), non-2xx
answers, and CPU seconds from /proc: each server's processes from the first counted slice to the
last (its background threads' work included), this process (the load), moto, and anything else
running on the machine meanwhile.

Then one probe request per server with a known X-Request-ID that answers 404 (Django logs a
warning for it), and both servers are stopped gracefully (SIGTERM: their workers flush buffered
metrics and log lines on exit). What monitoring stored in the round is checked: the
"http.request" counts added to `monitoring_metricbucket` must equal the requests the `on`
server answered (so the `off` one recorded none), the probe's log line must reach the CloudWatch
log group (found by its path; whether it carries its request id is reported apart) from the `on`
server only, and the `on` server's output must be JSON lines; the metrics in the CloudWatch
namespace are listed.

Reported: per mode the median over rounds of requests/s, p50/p95/p99 and the server's CPU per
request; the overhead (off_rps - on_rps) / off_rps against the 10 % target, and the same for CPU
per request. A table is printed; the figures go to bench/results/monitoring-overhead-<db>.json
(--out to change). The load generator and moto share the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from fanout import (
    Managed,
    code_version,
    cpu_busy_total,
    cpu_by_command,
    cpu_by_process_group,
    database,
    free_port,
    percentile,
    summarise_profile,
    tear_down,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGET_OVERHEAD = 0.10
PASSWORD = secrets.token_urlsafe(16)  # the bench customer's; never printed
SKUS = [f"BENCH-{i}" for i in range(5)]
ADDRESS = {"name": "Bench", "line1": "1 Load Lane", "city": "Leeds", "postal_code": "LS1", "country": "GB"}
# The fixed mix, per 10 requests; each client starts at a different place in it.
MIX = ("list", "detail", "page", "list", "detail", "page", "post", "list", "detail", "page")
MODES = {
    "on": {
        "MONITORING_ENABLED": "true",
        "LOG_FORMAT": "json",
        "CLOUDWATCH_LOGS_ENABLED": "true",
        "CLOUDWATCH_METRICS_ENABLED": "true",
    },
    "off": {
        "MONITORING_ENABLED": "false",
        "LOG_FORMAT": "console",
        "CLOUDWATCH_LOGS_ENABLED": "false",
        "CLOUDWATCH_METRICS_ENABLED": "false",
    },
}
LOAD = "load generator (this process)"
OTHER = "everything else on the machine"
_pause = threading.Event()


class WebServer(Managed):
    """gunicorn as the Procfile's `web` line runs it, in a session of its own."""

    def start(self) -> WebServer:
        from tools.processes import procfile_command

        # The Procfile's own line (gunicorn, config/gunicorn.py's workers, the app it names), with
        # the venv's gunicorn as `make run` finds it.
        command = procfile_command("web")
        script = Path(sys.executable).with_name(command[0])
        command = [str(script), *command[1:]] if script.exists() else [sys.executable, "-m", *command]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own web server
                command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self


# --- the stack ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = secrets.token_hex(4)
    workdir = Path(tempfile.mkdtemp(prefix="cis-bench-monitoring-"))
    cluster, cache_prefix = f"bench-{run_id}", f"bench-{run_id}"
    aws_url = f"http://127.0.0.1:{free_port()}"
    processes: list[Managed] = []
    with database(args.database_url, workdir) as (db_env, db_kind):
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SQLITE_PATH", "REDIS_URL"}}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DJANGO_ENV": "development",
                "DJANGO_DEBUG": "false",
                "LOG_LEVEL": "INFO",
                "Q_CLUSTER_NAME": cluster,
                "CACHE_KEY_PREFIX": cache_prefix,
                "AWS_ENDPOINT_URL": aws_url,
                # A benchmark measures throughput, not the abuse limits (issue 12).
                "RATE_LIMIT_USER": "off",
                "RATE_LIMIT_ANON": "off",
                "RATE_LIMIT_ORDER_CREATE_ANON": "off",
                "RATE_LIMIT_PAYMENT_CONFIRM": "off",
                "RATE_LIMIT_WEBHOOK": "off",
                "ORDER_ANON_HOLD_MAX_UNITS": "0",
                "GUEST_EMAIL_MAX_PER_HOUR": "0",
                "JWT_ACCESS_MINUTES": "120",
                "GUNICORN_WORKERS": str(args.workers),
                "GUNICORN_THREADS": str(args.threads),
                **db_env,
                **({"REDIS_URL": args.redis_url} if args.redis_url else {}),
                **MODES["off"],  # this process's own settings: it only seeds and reads
            }
        )
        os.environ.clear()
        os.environ.update({**env, "LOG_LEVEL": "WARNING"})  # this process's own lines: seeding's
        try:
            processes.append(Managed("sandbox_aws", ["sandbox_aws", "--no-setup"], env, workdir).start())
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput"],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )
            import django

            django.setup()
            from core.aws import aws_client

            wait_for(lambda: "logGroups" in aws_client("logs").describe_log_groups(), seconds=30, what="moto")
            seed = seed_database()
            return measure(args, env, workdir, processes[0], db_kind, seed)
        finally:
            tear_down(args, processes, workdir, cluster, cache_prefix)


def seed_database() -> dict[str, Any]:
    """A few products with plenty of stock, a customer, and a few of the customer's orders."""
    from django.contrib.auth import get_user_model
    from django.db import connections

    from orders.domain import Actor, ShippingAddress
    from orders.models import Product
    from orders.repositories import get_order_repository
    from orders.services import LineRequest, order_place

    Product.objects.bulk_create(
        [
            Product(sku=sku, name=f"Bench item {i}", price_minor=500 + 100 * i, currency="USD", stock=10**8)
            for i, sku in enumerate(SKUS)
        ]
    )
    user = get_user_model().objects.create_user("bench-customer", "bench@example.com", PASSWORD)
    repository = get_order_repository()
    order_ids = []
    for n in range(5):
        order, _ = order_place(
            repository=repository,
            actor=Actor(kind="customer", label="bench-customer"),
            customer_id=user.pk,
            email=user.email,
            lines=[LineRequest(sku=SKUS[n % 5], quantity=1), LineRequest(sku=SKUS[(n + 1) % 5], quantity=2)],
            shipping_address=ShippingAddress(**ADDRESS),
        )
        order_ids.append(str(order.id))
    connections.close_all()  # no lock or connection held while the servers run
    return {"username": user.username, "order_ids": order_ids}


# --- the load ------------------------------------------------------------------------------------
class Target:
    """One server under test: its base URL, token, and each client's session and place in the mix."""

    def __init__(self, mode: str, server: WebServer, base: str, clients: int) -> None:
        self.mode, self.server, self.base = mode, server, base
        self.token = ""
        self.sessions = [requests.Session() for _ in range(clients)]
        self.position = [n * 3 for n in range(clients)]  # each client starts elsewhere in the mix
        self.answered = 0  # every answer this server gave (setup, warm-up, slices, probe)
        self.counted: list[tuple[float, str, int]] = []
        self.counted_seconds = 0.0
        self.failures: list[str] = []

    def close(self) -> None:
        for session in self.sessions:
            session.close()


def drive(target: Target, seconds: float, order_ids: list[str], *, count: bool) -> None:
    """All clients on `target` for `seconds`; the requests completed inside them are counted."""
    clients = len(target.sessions)
    results: list[list[tuple[float, float, str, int]]] = [[] for _ in range(clients)]
    answered = [0] * clients
    barrier = threading.Barrier(clients + 1)
    auth = {"Authorization": f"Bearer {target.token}"}
    window: list[float] = []

    def client(n: int) -> None:
        session, out = target.sessions[n], results[n]
        barrier.wait()
        start, until = window
        _pause.wait(max(0.0, start - time.monotonic()))
        try:
            while time.monotonic() < until:
                i = target.position[n]
                target.position[n] += 1
                kind, order_id, sku = MIX[i % len(MIX)], order_ids[i % len(order_ids)], i % len(SKUS)
                began = time.monotonic()
                if kind == "list":
                    response = session.get(f"{target.base}/api/orders", headers=auth, timeout=30)
                elif kind == "detail":
                    response = session.get(f"{target.base}/api/orders/{order_id}", headers=auth, timeout=30)
                elif kind == "page":
                    response = session.get(f"{target.base}/", timeout=30)
                else:
                    body = {
                        "lines": [
                            {"sku": SKUS[sku], "quantity": 1},
                            {"sku": SKUS[(sku + 2) % len(SKUS)], "quantity": 2},
                        ],
                        "shipping_address": ADDRESS,
                        "notes": "bench",
                    }
                    headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
                    response = session.post(
                        f"{target.base}/api/orders", json=body, headers=headers, timeout=30
                    )
                response.content  # noqa: B018 - read the whole body
                ended = time.monotonic()
                answered[n] += 1
                out.append((ended, ended - began, kind, response.status_code))
        except Exception as exc:  # noqa: BLE001 - reported; the other clients go on
            target.failures.append(f"{target.mode} client {n}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    start = time.monotonic() + 0.05
    window.extend((start, start + seconds))
    barrier.wait()
    for thread in threads:
        thread.join(timeout=60)
    target.answered += sum(answered)
    if count:
        target.counted += [
            (latency, kind, status)
            for out in results
            for ended, latency, kind, status in out
            if start <= ended <= start + seconds
        ]
        target.counted_seconds += seconds


def cpu_snapshot() -> dict[str, Any]:
    return {
        "at": time.monotonic(),
        "groups": cpu_by_process_group(),
        "self": sum(os.times()[:2]),
        "machine": cpu_busy_total(),
        "postgres": cpu_by_command("postgres"),
        "redis": cpu_by_command("redis-server"),
    }


def summarize(counted: list[tuple[float, str, int]], seconds: float) -> dict[str, Any]:
    latencies = sorted(latency * 1000 for latency, _, _ in counted)
    per_kind: dict[str, Any] = {}
    for kind in dict.fromkeys(MIX):
        values = sorted(latency * 1000 for latency, k, _ in counted if k == kind)
        per_kind[kind] = {
            "requests": len(values),
            "per_s": round(len(values) / seconds, 1),
            "p50_ms": round(percentile(values, 50), 2),
            "p95_ms": round(percentile(values, 95), 2),
        }
    statuses = Counter(status for _, _, status in counted)
    return {
        "requests": len(counted),
        "seconds": round(seconds, 2),
        "per_s": round(len(counted) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "non_2xx": sum(n for status, n in statuses.items() if not 200 <= status < 300),
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "by_kind": per_kind,
    }


# --- what monitoring stored ---------------------------------------------------------------------
def monitoring_state() -> dict[str, Any]:
    """What monitoring has stored so far: metric rows, CloudWatch log events and metrics."""
    from django.conf import settings
    from django.db import connections
    from django.db.models import Count, Sum

    from core.aws import aws_client

    state: dict[str, Any] = {}
    try:
        from monitoring.models import MetricBucket

        rows = MetricBucket.objects.filter(name="http.request").aggregate(
            rows=Count("id"), count=Sum("count")
        )
        state["http_request_rows"] = rows["rows"]
        state["http_request_count"] = rows["count"] or 0
        state["metric_names"] = sorted(set(MetricBucket.objects.values_list("name", flat=True)))
    except Exception as exc:  # noqa: BLE001 - monitoring may be half-written: report what is seen
        state["metricbucket_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        connections.close_all()
    logs = aws_client("logs")
    group = settings.CLOUDWATCH_LOG_GROUP
    try:
        messages = []
        for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group):
            messages += [event["message"] for event in page["events"]]
        state["log_events"] = len(messages)
        state["log_messages"] = messages
        streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
        state["log_streams"] = len(streams)
        state["log_stream_names"] = [stream["logStreamName"] for stream in streams]
    except logs.exceptions.ResourceNotFoundException:
        state["log_events"], state["log_messages"], state["log_streams"] = 0, [], 0
        state["log_group_missing"] = True
    except Exception as exc:  # noqa: BLE001
        state["log_events"], state["log_messages"] = 0, []
        state["log_error"] = f"{type(exc).__name__}: {exc}"
    try:
        metrics = aws_client("cloudwatch").list_metrics(Namespace=settings.CLOUDWATCH_NAMESPACE)["Metrics"]
        state["cloudwatch_metrics"] = len(metrics)
        state["cloudwatch_metric_names"] = sorted({m["MetricName"] for m in metrics})
    except Exception as exc:  # noqa: BLE001
        state["cloudwatch_metrics"] = 0
        state["cloudwatch_error"] = f"{type(exc).__name__}: {exc}"
    return state


def first_traceback(text: str, chars: int = 2000) -> str:
    """The first traceback in a server's output (its last line names the exception), if any."""
    start = text.find("Traceback (most recent call last)")
    if start < 0:
        return ""
    lines = text[start : start + 20000].splitlines()
    end = next(
        (i for i, line in enumerate(lines[1:], 1) if line and not line.startswith(" ")), len(lines) - 1
    )
    return "\n".join(lines[: end + 1])[-chars:]


def json_lines(text: str) -> int:
    found = 0
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                json.loads(line)
                found += 1
    return found


# --- one round: two servers, alternating slices --------------------------------------------------
def one_round(
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    moto: Managed,
    seed: dict[str, Any],
    round_no: int,
) -> dict[str, Any]:
    order = ("on", "off") if round_no % 2 else ("off", "on")
    extra = dict(item.split("=", 1) for item in args.env)
    before = monitoring_state()
    targets: dict[str, Target] = {}
    profilers: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    profiles: dict[str, Any] = {}
    probes: dict[str, tuple[str, str, bool]] = {}
    try:
        for mode in order:
            port = free_port()
            settings_mode = "off" if args.same else mode
            server_env = {**env, **MODES[settings_mode], "GUNICORN_BIND": f"127.0.0.1:{port}", **extra}
            server = WebServer(f"web-{round_no}-{mode}", [], server_env, workdir).start()
            targets[mode] = Target(mode, server, f"http://127.0.0.1:{port}", args.clients)
        for target in targets.values():
            wait_for(
                lambda t=target: (
                    (t.server.check_alive(), requests.get(f"{t.base}/api/products", timeout=5))[1].ok
                ),
                seconds=60,
                what=f"gunicorn ({target.mode})\n{target.server.tail()}",
                interval=0.2,
            )
            response = requests.post(
                f"{target.base}/api/auth/token",
                json={"username": seed["username"], "password": PASSWORD},
                timeout=30,
            )
            target.answered += 2
            if response.status_code != 200:
                raise SystemExit(f"POST /api/auth/token answered {response.status_code} ({target.mode})")
            target.token = response.json()["access"]
        if args.profile:
            for mode, target in targets.items():
                profilers[mode] = start_profiler(args.profile, target.server, f"web-{round_no}-{mode}")
        slices = max(1, math.ceil(args.seconds / args.slice))
        print(
            f"  round {round_no}: {' / '.join(order)}: {args.warmup:g} s warm-up each,"
            f" then {slices} alternating slices of {args.seconds / slices:.2f} s each...",
            flush=True,
        )
        for mode in order:
            drive(targets[mode], args.warmup, seed["order_ids"], count=False)
        cpu_before = cpu_snapshot()
        for n in range(slices):
            for mode in order if n % 2 == 0 else order[::-1]:  # on, off, off, on, ...: ABBA
                drive(targets[mode], args.seconds / slices, seed["order_ids"], count=True)
        cpu_after = cpu_snapshot()
        for mode, profiler in profilers.items():
            profiles[mode] = stop_profiler(profiler)
        # A probe per server with a known request id; Django logs a warning for the 404.
        for mode, target in targets.items():
            probe_id, probe_path = (
                f"bench-probe-{round_no}-{mode}-{secrets.token_hex(4)}",
                f"/api/orders/{uuid.uuid4()}",
            )
            probe = requests.get(
                f"{target.base}{probe_path}",
                headers={"Authorization": f"Bearer {target.token}", "X-Request-ID": probe_id},
                timeout=30,
            )
            target.answered += 1
            probes[mode] = (probe_id, probe_path, probe.headers.get("X-Request-ID") == probe_id)
    finally:
        for target in targets.values():
            target.close()
            target.server.stop(seconds=30)
    after = monitoring_state()
    new_messages = after["log_messages"][len(before["log_messages"]) :]
    groups = {mode: t.server.process.pid for mode, t in targets.items() if t.server.process}
    cpu = cpu_window(
        cpu_before,
        cpu_after,
        {**{f"web {m}": pid for m, pid in groups.items()}, "moto": moto.process.pid},
        args,
    )
    modes = {}
    for mode, target in targets.items():
        output = target.server.log.read_text(errors="replace")
        probe_id, probe_path, echoed = probes[mode]
        summary = summarize(target.counted, target.counted_seconds)
        modes[mode] = {
            **summary,
            "server_cpu_s": cpu[f"web {mode}"],
            "server_cpu_ms_per_request": round(1000 * cpu[f"web {mode}"] / max(1, summary["requests"]), 3),
            "client_failures": target.failures,
            "server_exit_code": target.server.process.returncode if target.server.process else None,
            "answered": target.answered,
            "probe": {
                "request_id_echoed": echoed,
                "line_in_cloudwatch": any(probe_path in m for m in new_messages),
                "cloudwatch_line_has_request_id": any(
                    probe_path in m and probe_id in m for m in new_messages
                ),
                "line_in_output": probe_path in output,
                "output_line_has_request_id": any(
                    probe_path in line and probe_id in line for line in output.splitlines()
                ),
            },
            "json_lines_in_output": json_lines(output),
            "tracebacks_in_output": output.count("Traceback (most recent call last)"),
            "first_traceback": first_traceback(output),
            **({"profile": profiles[mode]} if profiles.get(mode) else {}),
        }
    recorded = after.get("http_request_count", 0) - before.get("http_request_count", 0)
    return {
        "round": round_no,
        "order": list(order),
        "slices_per_mode": slices,
        "modes": modes,
        "cpu_s": cpu,
        "monitoring": {
            "http_request_recorded": recorded,
            "on_server_answered": targets["on"].answered,
            "log_events_added": after["log_events"] - before["log_events"],
            "cloudwatch_metrics_total": after.get("cloudwatch_metrics", 0),
        },
        "_state": after,
    }


def start_profiler(directory: str, server: Managed, name: str) -> tuple[Path, subprocess.Popen[bytes]]:
    """py-spy record (raw collapsed stacks) of a server and its workers."""
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.txt"
    assert server.process is not None
    command = [spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--format", "raw"]
    command += ["--rate", "100", "-o", str(path)]
    return path, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def stop_profiler(profiler: tuple[Path, subprocess.Popen[bytes]]) -> dict[str, Any] | None:
    path, process = profiler
    process.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    return summarise_profile(path, top=25) if path.exists() else None


def cpu_window(
    before: dict[str, Any], after: dict[str, Any], groups: dict[str, int], args: argparse.Namespace
) -> dict[str, float]:
    cpu = {LOAD: after["self"] - before["self"]}
    for name, pgid in groups.items():
        cpu[name] = after["groups"].get(pgid, 0.0) - before["groups"].get(pgid, 0.0)
    if args.database_url:
        cpu["postgres (all backends)"] = after["postgres"] - before["postgres"]
    if args.redis_url:
        cpu["redis-server"] = after["redis"] - before["redis"]
    ours = sum(cpu.values())
    cpu[OTHER] = max(0.0, after["machine"] - before["machine"] - ours)
    cpu["window_s"] = after["at"] - before["at"]
    return {name: round(seconds, 2) for name, seconds in cpu.items()}


# --- the whole run ------------------------------------------------------------------------------
def measure(
    args: argparse.Namespace,
    env: dict[str, str],
    workdir: Path,
    moto: Managed,
    db_kind: str,
    seed: dict[str, Any],
) -> dict[str, Any]:
    from django.conf import settings

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = os.getloadavg()[0]
    wall = time.monotonic()
    rounds = []
    for round_no in range(1, args.rounds + 1):
        rounds.append(one_round(args, env, workdir, moto, seed, round_no))
        moto.check_alive()
    final_state = rounds[-1].pop("_state")
    for round_result in rounds:
        round_result.pop("_state", None)

    def median(mode: str, key: str) -> float:
        return round(statistics.median(r["modes"][mode][key] for r in rounds), 3)

    keys = ("per_s", "p50_ms", "p95_ms", "p99_ms", "server_cpu_ms_per_request")
    medians = {mode: {key: median(mode, key) for key in keys} for mode in ("on", "off")}
    on, off = medians["on"], medians["off"]
    overhead = (off["per_s"] - on["per_s"]) / off["per_s"]
    per_round = [
        round(100 * (r["modes"]["off"]["per_s"] - r["modes"]["on"]["per_s"]) / r["modes"]["off"]["per_s"], 1)
        for r in rounds
    ]
    cpu_overhead = (on["server_cpu_ms_per_request"] - off["server_cpu_ms_per_request"]) / off[
        "server_cpu_ms_per_request"
    ]
    cpu_per_round = [
        round(
            100
            * (r["modes"]["on"]["server_cpu_ms_per_request"] - r["modes"]["off"]["server_cpu_ms_per_request"])
            / r["modes"]["off"]["server_cpu_ms_per_request"],
            1,
        )
        for r in rounds
    ]

    def total(mode: str, *path: str) -> int:
        count = 0
        for r in rounds:
            value: Any = r["modes"][mode]
            for key in path:
                value = value[key]
            count += int(value)
        return count

    verification: dict[str, Any] = {
        "http_request_recorded": sum(r["monitoring"]["http_request_recorded"] for r in rounds),
        "on_server_answered": sum(r["monitoring"]["on_server_answered"] for r in rounds),
        "off_server_answered": total("off", "answered"),
        "log_events_added": sum(r["monitoring"]["log_events_added"] for r in rounds),
        **{
            f"{mode}_{name}": total(mode, "probe", key)
            for mode in ("on", "off")
            for name, key in (
                ("probe_lines_in_cloudwatch", "line_in_cloudwatch"),
                ("probe_cloudwatch_lines_with_request_id", "cloudwatch_line_has_request_id"),
                ("probe_output_lines_with_request_id", "output_line_has_request_id"),
            )
        },
        "on_json_lines_in_output": total("on", "json_lines_in_output"),
        "off_json_lines_in_output": total("off", "json_lines_in_output"),
        "tracebacks_in_output": total("on", "tracebacks_in_output") + total("off", "tracebacks_in_output"),
        "rounds": len(rounds),
        "cloudwatch_metrics_in_namespace": final_state.get("cloudwatch_metrics", 0),
        "cloudwatch_metric_names": final_state.get("cloudwatch_metric_names", []),
        "metric_names_in_database": final_state.get("metric_names", []),
        "log_streams": final_state.get("log_streams", 0),
        "log_stream_names_first": final_state.get("log_stream_names", [])[:2],
    }
    for key in ("metricbucket_error", "log_error", "cloudwatch_error", "log_group_missing"):
        if key in final_state:
            verification[key] = final_state[key]
    v = verification
    v["monitoring_was_on"] = v["http_request_recorded"] >= v["on_server_answered"] and v[
        "on_probe_lines_in_cloudwatch"
    ] == len(rounds)
    v["monitoring_was_off"] = (
        v["http_request_recorded"] <= v["on_server_answered"] and v["off_probe_lines_in_cloudwatch"] == 0
    )
    return {
        "when": started,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "wall_s": round(time.monotonic() - wall, 1),
        },
        "config": {
            "database": db_kind,
            "cache": "redis" if args.redis_url else "locmem + database",
            "gunicorn_workers": args.workers,
            "gunicorn_threads": args.threads,
            "clients": args.clients,
            "rounds": args.rounds,
            "seconds_per_mode": args.seconds,
            "slice_s": args.slice,
            "warmup_s": args.warmup,
            "same_settings_a_a": args.same,
            "mix_per_10": dict(Counter(MIX)),
            "modes": MODES,
            "log_level": "INFO",
            "monitoring_flush_s": settings.MONITORING_FLUSH_SECONDS,
            "extra_env": args.env,
        },
        "code": code_version(),
        "median": medians,
        "overhead_pct": round(100 * overhead, 1),
        "overhead_pct_per_round": per_round,
        "overhead_pct_median_of_rounds": round(statistics.median(per_round), 1),
        "target_pct": 100 * TARGET_OVERHEAD,
        "meets_target": overhead <= TARGET_OVERHEAD,
        # On a CPU-bound machine throughput is CPU available / CPU per request: the steadier test.
        "meets_target_by_cpu_per_request": cpu_overhead <= TARGET_OVERHEAD,
        "server_cpu_per_request_overhead_pct": round(100 * cpu_overhead, 1),
        "server_cpu_per_request_overhead_pct_per_round": cpu_per_round,
        "server_cpu_per_request_overhead_pct_median_of_rounds": round(statistics.median(cpu_per_round), 1),
        "verification": verification,
        "rounds": rounds,
    }


# --- output -------------------------------------------------------------------------------------
def print_table(result: dict[str, Any]) -> None:
    c = result["config"]
    print()
    print(
        f"monitoring overhead{' (A/A: both servers off)' if c['same_settings_a_a'] else ''}: {c['database']}"
        f" · gunicorn {c['gunicorn_workers']} workers x {c['gunicorn_threads']} threads · {c['clients']} clients"
        f" · {c['rounds']} rounds x {c['seconds_per_mode']:g} s per mode in {c['slice_s']:g} s slices"
        f" (+{c['warmup_s']:g} s warm-up each)" + (f" · {' '.join(c['extra_env'])}" if c["extra_env"] else "")
    )
    load = result["machine"]["load_average_1min_before_after"]
    print(
        f"  machine: {result['machine']['cpus']} CPUs, load (1 min) {load[0]} before, {load[1]} after;"
        f" {result['machine']['wall_s']:.0f} s in all"
    )
    print()
    print(
        f"  {'round':<11}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
        f"{'web CPU s':>11}{'CPU ms/req':>12}"
    )
    for r in result["rounds"]:
        for mode in ("on", "off"):
            m = r["modes"][mode]
            print(
                f"  {str(r['round']) + ' ' + mode:<11}{m['per_s']:8.1f}{m['p50_ms']:9.1f}{m['p95_ms']:9.1f}"
                f"{m['p99_ms']:9.1f}{m['non_2xx']:9d}{m['server_cpu_s']:11.1f}{m['server_cpu_ms_per_request']:12.2f}"
            )
        cpu = r["cpu_s"]
        print(
            f"  {'':<11}cpu s in the round: load {cpu[LOAD]:.1f} · moto {cpu['moto']:.1f} · other {cpu[OTHER]:.1f}"
            + "".join(f" · {k} {v:.1f}" for k, v in cpu.items() if k.startswith(("postgres", "redis")))
        )
    for mode in ("on", "off"):
        m = result["median"][mode]
        print(
            f"  {'median ' + mode:<11}{m['per_s']:8.1f}{m['p50_ms']:9.1f}{m['p95_ms']:9.1f}{m['p99_ms']:9.1f}"
            f"{'':9}{'':11}{m['server_cpu_ms_per_request']:12.2f}"
        )
    print()
    verdict = "met" if result["meets_target"] else "NOT met"
    print(
        f"  overhead: {result['overhead_pct']:.1f} % of throughput (per round:"
        f" {', '.join(f'{p:.1f}' for p in result['overhead_pct_per_round'])};"
        f" their median {result['overhead_pct_median_of_rounds']:.1f});"
        f" target ≤ {result['target_pct']:.0f} %: {verdict}"
    )
    print(
        f"  web server CPU per request: {result['server_cpu_per_request_overhead_pct']:+.1f} % with monitoring on"
        f" (per round: {', '.join(f'{p:+.1f}' for p in result['server_cpu_per_request_overhead_pct_per_round'])};"
        f" their median {result['server_cpu_per_request_overhead_pct_median_of_rounds']:+.1f});"
        f" target ≤ {result['target_pct']:.0f} %: {'met' if result['meets_target_by_cpu_per_request'] else 'NOT met'}"
    )
    v = result["verification"]
    print(
        f"  recorded as http.request: {v['http_request_recorded']}; answered by the 'on' servers:"
        f" {v['on_server_answered']}, by the 'off' ones: {v['off_server_answered']}"
    )
    print(
        f"  CloudWatch Logs: {v['log_events_added']} events in {v['log_streams']} streams"
        f" ({', '.join(v['log_stream_names_first'])}, ...); probe line from 'on'"
        f" {v['on_probe_lines_in_cloudwatch']}/{v['rounds']} (with its request id"
        f" {v['on_probe_cloudwatch_lines_with_request_id']}), from 'off' {v['off_probe_lines_in_cloudwatch']};"
        f" JSON lines in the output: on {v['on_json_lines_in_output']}, off {v['off_json_lines_in_output']};"
        f" request id on the probe's output line: on {v['on_probe_output_lines_with_request_id']},"
        f" off {v['off_probe_output_lines_with_request_id']}; {v['tracebacks_in_output']} tracebacks"
    )
    print(
        f"  CloudWatch metrics: {v['cloudwatch_metrics_in_namespace']} in the namespace"
        f" ({', '.join(v['cloudwatch_metric_names']) or 'none'}); metric names in the database:"
        f" {', '.join(v['metric_names_in_database']) or 'none'}"
    )
    for key in ("metricbucket_error", "log_error", "cloudwatch_error", "log_group_missing"):
        if key in v:
            print(f"  ! {key}: {v[key]}")
    print(
        f"  monitoring was on in the 'on' servers: {'yes' if v['monitoring_was_on'] else 'NO'};"
        f" off in the 'off' ones: {'yes' if v['monitoring_was_off'] else 'NO'}"
    )
    others = [r["cpu_s"][OTHER] for r in result["rounds"]]
    available = 2 * c["seconds_per_mode"] * (result["machine"]["cpus"] or 1)
    if max(others) > 0.05 * available:
        print(
            f"  ! other processes took {min(others):.1f}-{max(others):.1f} CPU-s per round (of about"
            f" {available:.0f} available): the figures are noisy"
        )
    for r in result["rounds"]:
        for mode, m in r["modes"].items():
            if m["first_traceback"]:
                last = m["first_traceback"].splitlines()[-1]
                print(
                    f"  ! round {r['round']} {mode}: {m['tracebacks_in_output']} tracebacks, the first ends: {last[:200]}"
                )
    failures = [f for r in result["rounds"] for m in r["modes"].values() for f in m["client_failures"]]
    if failures:
        print(f"  ! {len(failures)} client threads failed, first: {failures[0]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with both servers (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=15, help="counted seconds per mode and round (default 15)"
    )
    parser.add_argument("--slice", type=float, default=2.5, help="seconds of load per turn (default 2.5)")
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of load per server not counted (default 3)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="GUNICORN_WORKERS (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="GUNICORN_THREADS (default 4)")
    parser.add_argument(
        "--same", action="store_true", help="A/A: the 'on' server runs with monitoring off too"
    )
    parser.add_argument("--database-url", default="", help="PostgreSQL server (a throwaway database is made)")
    parser.add_argument("--redis-url", default="", help="Redis cache (with its db number)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra settings for both servers"
    )
    parser.add_argument(
        "--profile",
        default="",
        metavar="DIR",
        help="py-spy raw profiles of the servers into DIR (PY_SPY: its path)",
    )
    parser.add_argument(
        "--out", default="", help="JSON output (default bench/results/monitoring-overhead-<db>.json)"
    )
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, logs)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.clients < 1 or args.seconds <= 0 or args.slice <= 0:
        parser.error("--rounds, --clients, --seconds and --slice must be positive")
    sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    result = run(args)
    print_table(result)
    if not args.no_save:
        suffix = "-aa" if args.same else ""
        default = RESULTS / f"monitoring-overhead-{result['config']['database']}{suffix}.json"
        out = Path(args.out) if args.out else default
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
