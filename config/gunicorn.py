"""gunicorn settings, the same for `make run` and the container: only the environment differs.

gunicorn manages uvicorn workers serving config/asgi.py: the live-status streams (/live/) are
async and hold no thread while open; every other request runs in a fixed pool of
GUNICORN_THREADS threads per worker (see config/asgi.py).
"""

import os
import signal
import sys

from uvicorn_worker import UvicornWorker

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))  # read by config/asgi.py's thread pool
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")


def _exit(signum: int, frame: object) -> None:
    sys.exit(0)


class Worker(UvicornWorker):
    """uvicorn under gunicorn. On a stop it waits at most a few seconds for open requests: a
    live stream never ends by itself soon, and the browser reconnects to another worker.

    Once shut down, uvicorn raises the stop signal again under the handler it found; left at the
    default action, that kills the process on the spot, skipping `atexit`: the last batch of log
    lines for CloudWatch and the monitoring figures not yet flushed were lost at every stop. The
    handler here exits the normal way instead, so they are flushed.
    """

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGTERM, _exit)
        signal.signal(signal.SIGINT, _exit)

    CONFIG_KWARGS = {
        **UvicornWorker.CONFIG_KWARGS,
        "timeout_graceful_shutdown": int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "10")),
    }


worker_class = Worker
