"""moto's AWS stand-in server, one request at a time.

moto's DynamoDB is not thread-safe: a transaction deep-copies the table, checks its conditions,
writes, and on failure puts the copy back, all without a lock, so a concurrent request can slip
between check and write or be undone by that restore (two relays at once drew an HTTP 500,
"dictionary changed size during iteration"). Real DynamoDB makes each request atomic;
serialising requests gives that guarantee while the clients still race. Development and test
tooling only.
"""

from __future__ import annotations

import threading
from typing import Any


class SerialMotoServer:
    def __init__(self, *, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer  # a development dependency

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)

    def start(self) -> str:
        self.server.start()
        wsgi_server = self.server._server  # werkzeug's server: each request calls its `app`
        app, lock = wsgi_server.app, threading.Lock()

        def serial_app(environ: Any, start_response: Any) -> list[bytes]:
            with lock:
                return list(app(environ, start_response))

        wsgi_server.app = serial_app
        host, port = self.server.get_host_and_port()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.stop()
