"""How gunicorn serves the pages and the API: gthread (WSGI) against uvicorn workers (ASGI).

    .venv/bin/python bench/live_serving.py --seconds 20 --clients 8

The live-status streams need an ASGI server (an open stream must hold no thread), and there are
two ways to serve the rest of the site under it (config/asgi.py):

- gthread:  gunicorn's threaded WSGI worker, config.wsgi (what served everything before /live/);
- asgi:     uvicorn workers, Django's own ASGI handler for every request (config.asgi:django_asgi):
            each sync view runs in a new thread per request, so a new database connection too;
- router:   uvicorn workers, config.asgi:application: /live/ to Django's ASGI handler, the rest to
            the WSGI handler through a2wsgi's fixed thread pool (persistent connections).

For each: a fresh SQLite database (migrated, demo catalog), gunicorn with --workers workers
(GUNICORN_THREADS=--threads) on a free port, then --clients threads with keep-alive connections
asking in turn for GET /api/products and GET / (the shop page) for --seconds seconds. Printed:
requests per second, p50 and p95 latency, and non-200 answers; JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SERVERS = {
    "gthread": ["-k", "gthread", "config.wsgi"],
    "asgi": ["config.asgi:django_asgi"],
    "router": ["config.asgi:application"],
}
PATHS = ["/api/products", "/"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("gunicorn exited")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/monitoring/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)  # a benchmark's start-up wait, not a test
    raise SystemExit("gunicorn did not answer")


def load(port: int, clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, bad, n = [], 0, offset
        while time.monotonic() < stop:
            path = PATHS[n % len(PATHS)]
            n += 1
            started = time.perf_counter()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            mine.append((time.perf_counter() - started) * 1000)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(len(latencies) * 0.95)],
        "errors": errors[0],
    }


def run(name: str, args: argparse.Namespace) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-live-{name}-"))
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "DJANGO_ENV": "development",
        "SQLITE_PATH": str(folder / "db.sqlite3"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(args.workers),
        "GUNICORN_THREADS": str(args.threads),
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ANON": "off",  # one client address asking hundreds of times a second
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run(  # noqa: S603 - our own manage.py
            [sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
        )
    command = [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", *SERVERS[name]]
    process = subprocess.Popen(  # noqa: S603 - our own web server
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_up(port, process)
        load(port, args.clients, min(3.0, args.seconds))  # warm-up: connections, caches
        return load(port, args.clients, args.seconds)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "live-serving.json"))
    args = parser.parse_args()
    results = {name: run(name, args) for name in args.servers.split(",")}
    print(f"{'server':<8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'non-200':>8}")
    for name, r in results.items():
        print(f"{name:<8} {r['rps']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['errors']:>8}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "results": results}, indent=2
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
