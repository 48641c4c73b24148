"""How soon a change reaches an open page: the live-status streams (/live/) under the real server.

    .venv/bin/python bench/live_latency.py --repetitions 30

Starts what the live browser test starts (tests/live/test_live_browser.py): the Procfile's `web`
line (gunicorn, uvicorn workers, config/asgi.py) with TWO worker processes on a fresh SQLite
database (migrated, demo data) and a Stripe stand-in in this process. Then, --repetitions times:

1. create an order through the API (POST /api/orders, the demo customer's JWT);
2. pay it through the API (POST /api/payments/confirm, pm_card_visa), as the browser test does.

Measured from the moment the API call returns:

(a) `stream`: until `event: change` arrives on raw HTTP streams (http.client) held open by this
    process with the staff session: one `/live/ops/` stream on EACH worker (for step 1) and one
    `/live/orders/<id>/` stream on each worker (for step 2, opened after step 1). Which worker
    answered a connection is read from /proc (the owner of the server side of the TCP socket), so
    each figure is split by "same worker as the API call" and "the other worker" (only the shared
    cache links the two). A negative figure is an event that came before the API call returned.
(b) `browser`: headless Chromium (/usr/bin/chromium) with /ops/ open (staff) and the new order's
    page open (customer), both on their streams: until the "Orders created" tile shows one more
    (step 1) / `#status-title .status` says "Paid" (step 2), polled in the page
    (`wait_for_function`, every --poll-ms).

Before each step it waits until no event has arrived for --quiet seconds, so a late event of the
step before (/ops/ hears of an order twice: at once, then when the order figures are flushed
within a second) is not taken for this one. Printed: p50/p95/max per measure; JSON in
bench/results/live-latency.json. The target is p95 under 2 s for /ops/.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.stripe.server import StripeSandboxThread  # noqa: E402 - after the path above
from tools.processes import free_port, procfile_command, start, web_server_env  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ADDRESS = {"name": "Ada", "line1": "12 Row", "city": "London", "postal_code": "N1", "country": "GB"}
TIMEOUT = 60.0
# Looked at in the page. Functions, not expressions: the pages' CSP forbids eval (script-src 'self').
STREAMING = "() => document.documentElement.dataset.liveMode === 'stream'"
SAYS = "([selector, text]) => (document.querySelector(selector) || {textContent: ''}).textContent.trim() === text"
AT_LEAST = """([selector, n]) => {
  const el = document.querySelector(selector);
  return !!el && parseInt(el.textContent.replace(/\\D/g, ''), 10) >= n;
}"""


def demo_logins() -> tuple[tuple[str, str], tuple[str, str]]:
    """seed_demo's logins, read from its source without setting Django up in this process."""
    text = (ROOT / "orders" / "management" / "commands" / "seed_demo.py").read_text()
    found = dict(re.findall(r'^(DEMO_\w+)\s*=\s*"([^"]*)"', text, flags=re.M))
    return (
        (found["DEMO_CUSTOMER_USERNAME"], found["DEMO_CUSTOMER_PASSWORD"]),
        (found["DEMO_STAFF_USERNAME"], found["DEMO_STAFF_PASSWORD"]),
    )


# Which process answers a connection: the owner of the server side of its TCP socket.


def socket_inode(server_port: int, client_port: int) -> str | None:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return fields[9]
    return None


def worker_of(workers: list[int], server_port: int, client_port: int) -> int | None:
    inode = socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in workers:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return sorted(found)


class Api:
    """JSON calls, each on a new connection (so either worker may answer); notes which did."""

    def __init__(self, port: int, workers: list[int]) -> None:
        self.port, self.workers = port, workers

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, float, float, int | None]:
        """(status, JSON, perf_counter at the call, perf_counter at its return, worker pid)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})}
        connection.connect()
        started = time.perf_counter()
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        returned = time.perf_counter()
        worker = worker_of(self.workers, self.port, connection.sock.getsockname()[1])
        connection.close()
        return response.status, json.loads(raw or b"null"), started, returned, worker


def staff_session(port: int, username: str, password: str) -> str:
    """Log in through the login form; the session cookie."""
    import requests

    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.get(f"{base}/accounts/login/", timeout=TIMEOUT)
    answer = session.post(
        f"{base}/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/accounts/login/"},
        timeout=TIMEOUT,
    )
    if answer.status_code != 200 or "sessionid" not in session.cookies:
        raise SystemExit(f"Could not log in as {username}: {answer.status_code}")
    return session.cookies["sessionid"]


class Stream:
    """One open event stream read by a thread; each `event: change` kept with its arrival time."""

    def __init__(self, port: int, path: str, cookie: str, workers: list[int]) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
        self.connection.connect()
        self.connection.request("GET", path, headers={"Cookie": f"sessionid={cookie}"})
        self.response = self.connection.getresponse()
        if self.response.status != 200:
            raise SystemExit(f"{path}: HTTP {self.response.status}")
        self.worker = worker_of(workers, port, self.connection.sock.getsockname()[1])
        self.changes: list[float] = []
        self.last_any = time.perf_counter()
        self.opened = threading.Event()  # the first bytes (`retry:`) came: the stream runs
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while line := self.response.readline():
                now = time.perf_counter()
                self.opened.set()
                if line.startswith(b"event: change"):
                    with self.lock:
                        self.changes.append(now)
                        self.last_any = now
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # closed by close() (http.client raises AttributeError on a closed chunked read)

    def first_change_after(self, moment: float) -> float | None:
        with self.lock:
            return next((t for t in self.changes if t > moment), None)

    def changes_after(self, moment: float) -> list[float]:
        with self.lock:
            return [t for t in self.changes if t > moment]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()


def open_on_each_worker(port: int, path: str, cookie: str, workers: list[int]) -> dict[int, Stream]:
    """Open streams until one is held by each worker (the kernel picks the worker); close the rest."""
    held: dict[int, Stream] = {}
    for _ in range(40):
        stream = Stream(port, path, cookie, workers)
        if stream.worker in workers and stream.worker not in held:
            held[stream.worker] = stream
            if len(held) == len(workers):
                break
        else:
            stream.close()
    for stream in held.values():
        if not stream.opened.wait(TIMEOUT):
            raise SystemExit(f"{path}: the stream did not start")
    return held


def wait_for(predicate: Any, seconds: float = TIMEOUT, what: str = "the condition") -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)  # a benchmark's own wait, not a test's
    raise SystemExit(f"Timed out waiting for {what}")


def quiet(streams: list[Stream], seconds: float) -> None:
    """Until no stream has had an event for `seconds` (the step before has finished arriving)."""
    wait_for(
        lambda: all(time.perf_counter() - s.last_any >= seconds for s in streams),
        seconds=TIMEOUT,
        what="quiet streams",
    )


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
    }


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for i, v in enumerate(fields) if i not in (3, 4))  # not idle, not iowait
    return busy / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    customer, staff = demo_logins()
    stripe = StripeSandboxThread(webhook_delay=None)
    stripe.start()
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="bench-live-latency-"))
    env = {
        **web_server_env(folder=folder, port=port, stripe_url=stripe.url),
        "RATE_LIMIT_ANON": "off",
        "LOG_LEVEL": "WARNING",
    }
    for pair in args.env:
        name, _, value = pair.partition("=")
        env[name] = value
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run(  # noqa: S603 - our own manage.py
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    process = start(procfile_command("web"), env=env, log=folder / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    streams: list[Stream] = []
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited; see {folder / 'gunicorn.log'}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/api/monitoring/health")
                return connection.getresponse().status == 200
            except OSError:
                return False

        wait_for(up, seconds=120, what="the web server")
        workers = wait_for(lambda: (w := children(process.pid)) and len(w) >= 2 and w, what="two workers")
        api = Api(port, workers)
        status, tokens, *_ = api.call(
            "POST", "/api/auth/token", {"username": customer[0], "password": customer[1]}
        )
        if status != 200:
            raise SystemExit(f"No JWT: {status} {tokens}")
        auth = {"Authorization": f"Bearer {tokens['access']}"}
        cookie = staff_session(port, *staff)
        ops_streams = open_on_each_worker(port, "/live/ops/?since=-", cookie, workers)
        streams.extend(ops_streams.values())

        samples: list[dict[str, Any]] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            ops_context = browser.new_context(viewport={"width": 1366, "height": 900})
            customer_context = browser.new_context(viewport={"width": 1366, "height": 900})
            for context in (ops_context, customer_context):
                context.set_default_timeout(TIMEOUT * 1000)
            ops_page = ops_context.new_page()
            order_page = customer_context.new_page()
            for page, (username, password), then in (
                (ops_page, staff, "/ops/"),
                (order_page, customer, "/orders/"),
            ):
                page.goto(f"{base}/accounts/login/?next={then}")
                page.fill("#id_username", username)
                page.fill("#id_password", password)
                page.locator("main").get_by_role("button", name="Log in").click()
                page.wait_for_url(f"{base}{then}")
            ops_page.wait_for_function(STREAMING)
            tile = "#figure-orders-created .tile-value"
            cpu_workers_before, cpu_machine_before = cpu_seconds(workers), machine_cpu_seconds()
            wall_before = time.perf_counter()

            for repetition in range(args.warmup + args.repetitions):
                # 1. A new order: /ops/ hears of it.
                quiet(streams, args.quiet)
                before = int(re.sub(r"\D", "", ops_page.inner_text(tile)) or 0)
                status, order, started, returned, api_worker = api.call(
                    "POST",
                    "/api/orders",
                    {"lines": [{"sku": "MUG-001", "quantity": 1}], "shipping_address": ADDRESS},
                    {**auth, "Idempotency-Key": uuid.uuid4().hex},
                )
                if status != 201:
                    raise SystemExit(f"POST /api/orders: {status} {order}")
                ops_page.wait_for_function(AT_LEAST, arg=[tile, before + 1], polling=args.poll_ms)
                shown = time.perf_counter()
                arrived = {
                    pid: wait_for(lambda s=stream, t=started: s.first_change_after(t), what="the ops event")
                    for pid, stream in ops_streams.items()
                }
                sample: dict[str, Any] = {
                    "repetition": repetition,
                    "warmup": repetition < args.warmup,
                    "create_api_ms": round((returned - started) * 1000, 1),
                    "create_worker": "a" if api_worker == workers[0] else "b",
                    "ops_tile_s": shown - returned,
                    "ops_event_same_s": next(
                        (t - returned for p, t in arrived.items() if p == api_worker), None
                    ),
                    "ops_event_other_s": next(
                        (t - returned for p, t in arrived.items() if p != api_worker), None
                    ),
                }

                # 2. The order is paid: its page hears of it.
                order_streams = open_on_each_worker(
                    port, f"/live/orders/{order['id']}/?since=-", cookie, workers
                )
                streams.extend(order_streams.values())
                order_page.goto(f"{base}/orders/{order['id']}/")
                order_page.wait_for_function(STREAMING)
                order_page.wait_for_function(SAYS, arg=["#status-title .status", "Pending payment"])
                quiet(streams, args.quiet)  # the order's first token (since=-) has come and gone
                # Every /ops/ event of step 1 has come by now: the order's commit, then the flush
                # of the creating worker's order figures (what the tile shows).
                sample["ops_events_other_ms"] = [
                    round((t - returned) * 1000, 1)
                    for p, stream in ops_streams.items()
                    if p != api_worker
                    for t in stream.changes_after(started)
                ]
                status, payment, started, returned, api_worker = api.call(
                    "POST",
                    "/api/payments/confirm",
                    {"order_id": order["id"], "payment_method": "pm_card_visa"},
                    auth,
                )
                if status != 200 or payment.get("status") != "succeeded":
                    raise SystemExit(f"POST /api/payments/confirm: {status} {payment}")
                order_page.wait_for_function(
                    SAYS, arg=["#status-title .status", "Paid"], polling=args.poll_ms
                )
                shown = time.perf_counter()
                arrived = {
                    pid: wait_for(lambda s=stream, t=started: s.first_change_after(t), what="the order event")
                    for pid, stream in order_streams.items()
                }
                sample.update(
                    pay_api_ms=round((returned - started) * 1000, 1),
                    pay_worker="a" if api_worker == workers[0] else "b",
                    order_page_s=shown - returned,
                    order_event_same_s=next(
                        (t - returned for p, t in arrived.items() if p == api_worker), None
                    ),
                    order_event_other_s=next(
                        (t - returned for p, t in arrived.items() if p != api_worker), None
                    ),
                )
                for stream in order_streams.values():
                    stream.close()
                    streams.remove(stream)
                samples.append(sample)
                print(
                    f"{repetition:>3} ops tile {sample['ops_tile_s']:.2f} s, event same/other"
                    f" {sample['ops_event_same_s']:.2f}/{sample['ops_event_other_s']:.2f} s;"
                    f" order page {sample['order_page_s']:.2f} s, event same/other"
                    f" {sample['order_event_same_s']:.2f}/{sample['order_event_other_s']:.2f} s",
                    flush=True,
                )
            wall = time.perf_counter() - wall_before
            cpu_workers = cpu_seconds(workers) - cpu_workers_before
            cpu_machine = machine_cpu_seconds() - cpu_machine_before
            browser.close()
    finally:
        for stream in streams:
            stream.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        stripe.stop()

    counted = [s for s in samples if not s["warmup"]]
    measures = {
        "ops_event_same": "/ops/ stream, same worker as the API call",
        "ops_event_other": "/ops/ stream, the other worker",
        "ops_tile": "/ops/ 'Orders created' tile in Chromium",
        "order_event_same": "order stream, same worker as the API call",
        "order_event_other": "order stream, the other worker",
        "order_page": "order page '#status-title' says Paid in Chromium",
    }
    results = {
        name: {"what": what, **summary([s[f"{name}_s"] for s in counted if s[f"{name}_s"] is not None])}
        for name, what in measures.items()
    }
    # The figures' flush, seen on the other worker's /ops/ stream: its last event of step 1, when
    # there were two (within one poll of the commit's, the two are one event).
    flushes = [s["ops_events_other_ms"][-1] / 1000 for s in counted if len(s["ops_events_other_ms"]) >= 2]
    results["ops_flush_event_other"] = {
        "what": "/ops/ stream, other worker, figures' flush event",
        **summary(flushes),
    }
    return {
        "settings": {
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "quiet_s": args.quiet,
            "poll_ms": args.poll_ms,
            "env": args.env,
            "workers": 2,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "machine": {
            "wall_s": round(wall, 1),
            "web_workers_cpu_s": round(cpu_workers, 1),
            "machine_busy_cpu_s": round(cpu_machine, 1),
            "machine_busy_share": round(cpu_machine / (wall * (os.cpu_count() or 1)), 3),
        },
        "results": results,
        "samples": [
            {k: (round(v * 1000, 1) if k.endswith("_s") and v is not None else v) for k, v in s.items()}
            for s in samples
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2, help="first repetitions not counted")
    parser.add_argument("--quiet", type=float, default=2.5, help="seconds without events before each step")
    parser.add_argument("--poll-ms", type=int, default=20, help="how often the page is looked at")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the web server")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "live-latency.json"))
    args = parser.parse_args()
    report = run(args)
    print(
        f"\n{'measure (from the API call returning)':<52} {'n':>3} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
    )
    for result in report["results"].values():
        print(
            f"{result['what']:<52} {result['n']:>3} {result.get('p50_ms', 0):>8.0f}"
            f" {result.get('p95_ms', 0):>8.0f} {result.get('max_ms', 0):>8.0f}"
        )
    machine = report["machine"]
    print(
        f"\nwall {machine['wall_s']} s; web workers {machine['web_workers_cpu_s']} CPU-s;"
        f" machine busy {machine['machine_busy_share']:.0%} of {os.cpu_count()} CPUs (other jobs included)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
