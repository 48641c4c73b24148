"""Starting and stopping the project's own processes (`manage.py` commands, the Procfile through
honcho, gunicorn alone) on free loopback ports, for dev tooling and for the tests that start them
for real (tests/test_run.py, tests/live/test_live_browser.py, tools/screenshots.py).

Only the standard library: it runs before and outside Django. tools/ never imports tests/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def standins_on_free_ports() -> dict[str, str]:
    """The settings that place the Procfile's stand-ins (Stripe, SendGrid, Sheets, AWS): each on a
    free port of its own, so they run beside a `make run` and beside each other."""
    return {
        name: f"http://127.0.0.1:{free_port()}"
        for name in ("STRIPE_API_BASE", "SENDGRID_API_BASE", "SHEETS_API_BASE", "AWS_ENDPOINT_URL")
    }


def port_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def http_bytes(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, *, timeout: float
) -> tuple[int, bytes]:
    """One JSON request to a loopback URL: (status, raw body), error statuses included."""
    data = json.dumps(body).encode() if body is not None else None
    outgoing = urllib.request.Request(  # noqa: S310 - a loopback URL the caller built
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def manage(env: dict[str, str], *args: str, timeout: float | None = None) -> None:
    """`manage.py <args>` with `env`, its output kept unless it fails."""
    subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=timeout,
    )


def start(command: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`command` in the project's folder, its output (stderr too) written to `log`, in a session
    of its own so that stopping it never signals the caller."""
    with log.open("w") as out:
        return subprocess.Popen(  # noqa: S603 - our own Procfile's commands
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def logged(log: Path, process: str, *texts: str) -> bool:
    """Whether honcho's log has a line of `process` (such as "worker.1") containing every text."""
    for line in log.read_text(errors="replace").splitlines():
        name, _, message = line.partition(" | ")  # "06:24:51 worker.1   | the process's line"
        if name.split()[-1:] == [process] and all(text in message for text in texts):
            return True
    return False


def descendants(pid: int) -> list[int]:
    """The processes under `pid`, read from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": the command may hold spaces and parentheses.
            children[int(stat.read_text().rpartition(")")[2].split()[1])].append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and all it started. honcho starts each Procfile process in a session (and
    process group) of its own, so killing honcho's group leaves them, and gunicorn's and the
    cluster's workers, running: kill every group and every process under `pid`."""
    victims = [pid, *descendants(pid)]
    groups = set()
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(victim))
    groups.discard(os.getpgrp())  # never the caller's own group
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def stop(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM (honcho and gunicorn pass it on, honcho with a SIGKILL a few seconds later to what
    has not stopped); if `process` has not ended within `timeout`, SIGKILL to all it started."""
    process.send_signal(signal.SIGTERM)  # nothing if it has already ended
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process.pid)
        process.wait()


def procfile_command(name: str) -> list[str]:
    """The Procfile's command for process `name`, as an argument list."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        process, _, command = line.partition(":")
        if process.strip() == name:
            return shlex.split(command)
    raise LookupError(f"No {name} process in the Procfile")


def web_server_env(*, folder: Path, port: int, stripe_url: str, workers: int = 2) -> dict[str, str]:
    """The environment for the Procfile's `web` line run alone: its own SQLite database in
    `folder` (orders included, whatever the caller's ORDER_REPOSITORY), no PostgreSQL or Redis,
    `workers` gunicorn workers on 127.0.0.1:`port`, and the Stripe stand-in at `stripe_url`."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "DJANGO_ENV": "development",
        "SQLITE_PATH": str(folder / "db.sqlite3"),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "STRIPE_API_BASE": stripe_url,
        # A caller's DynamoDB (CI's third pass) is configured in its own settings, which a
        # subprocess does not inherit: orders stay in this server's database.
        "ORDER_REPOSITORY": "orm",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


@contextlib.contextmanager
def throwaway_database(url: str | None, workdir: Path, *, prefix: str) -> Any:
    """Settings for a fresh database, and its kind: a SQLite file in `workdir`, or with `url` (a
    postgres:// URL whose database exists) a new PostgreSQL database `<prefix>_<random>`, dropped
    afterwards. For the benchmarks; psycopg is imported only when PostgreSQL is asked for."""
    if not url:
        yield {"SQLITE_PATH": str(workdir / "bench.sqlite3")}, "sqlite"
        return
    import secrets
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise SystemExit("--database-url must be a postgres:// URL")
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = psycopg.connect(url.replace(f"{parts.scheme}://", "postgresql://", 1), autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}"))}, "postgresql"
    finally:
        if "django" in sys.modules:  # this process's own connections, if it opened any
            from django.db import connections

            connections.close_all()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
