"""A stopped web server keeps what it buffered: the Procfile's gunicorn (uvicorn workers), sent
SIGTERM as a deploy or `make run`'s Ctrl-C does, lets each worker exit the normal way, so the
`atexit` flushes run (the monitoring figures not yet written, the last batch of log lines for
CloudWatch). uvicorn raises the stop signal again once it has shut down; under the default
action that killed the worker on the spot and both were lost (config/gunicorn.py `Worker`)."""

from __future__ import annotations

import sqlite3

from tests.polling import DEADLINE_SECONDS, eventually
from tests.test_run import HANG_SECONDS, http
from tools.processes import free_port, manage, port_closed, procfile_command, start, stop, web_server_env

REQUESTS = 5


def test_figures_buffered_in_the_workers_are_written_when_the_server_stops(tmp_path) -> None:
    port = free_port()
    env = {
        **web_server_env(folder=tmp_path, port=port, stripe_url="http://127.0.0.1:9"),
        "MONITORING_ENABLED": "true",
        # Never on a timer while the test runs: only the flush at exit can write them.
        "MONITORING_FLUSH_SECONDS": "3600",
    }
    manage(env, "migrate", "--noinput", timeout=HANG_SECONDS)
    log = tmp_path / "gunicorn.log"
    process = start(procfile_command("web"), env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
            try:
                return http("GET", f"{base}/api/products")[0] == 200
            except OSError:
                return False

        eventually(up, what="the web server")
        for _ in range(REQUESTS):
            assert http("GET", f"{base}/api/products")[0] == 200
        with sqlite3.connect(tmp_path / "db.sqlite3") as db:
            [(before,)] = db.execute(
                "SELECT COALESCE(SUM(count), 0) FROM monitoring_metricbucket WHERE name = 'http.request'"
            ).fetchall()
        assert before == 0  # still in the workers' buffers
    finally:
        stop(process, timeout=DEADLINE_SECONDS)
        eventually(lambda: port_closed(port), what=f"nothing listening on port {port} any more")

    output = log.read_text(errors="replace")
    assert "was sent SIGTERM" not in output, output[-3000:]
    assert "Worker exiting" in output, output[-3000:]
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        [(recorded,)] = db.execute(
            "SELECT COALESCE(SUM(count), 0) FROM monitoring_metricbucket WHERE name = 'http.request'"
        ).fetchall()
    assert recorded >= REQUESTS + 1
