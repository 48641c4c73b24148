"""The ASGI entry point gunicorn serves (config/gunicorn.py runs uvicorn workers).

Two doors into one Django project:
- `/live/` (server-sent events) goes to Django's ASGI handler: its views are async, so an open
  stream holds no thread, only a coroutine in the worker's event loop.
- Everything else goes to Django's WSGI handler through a2wsgi's fixed thread pool
  (GUNICORN_THREADS threads per worker, as gthread had), which keeps each thread's database
  connection from one request to the next. Django's own ASGI handler would run each sync view in
  a new thread per request (asgiref's ThreadSensitiveContext) and so open a database connection
  per request: two to three times slower (bench/live_serving.py, figures in bench/README.md).
"""

import os
from collections.abc import Awaitable, Callable
from typing import Any

from a2wsgi import WSGIMiddleware
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

LIVE_PREFIX = "/live/"
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

django_asgi = get_asgi_application()
django_wsgi = WSGIMiddleware(get_wsgi_application(), workers=int(os.environ.get("GUNICORN_THREADS", "4")))


async def application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"].startswith(LIVE_PREFIX):
        await django_asgi(scope, receive, send)
    elif scope["type"] == "http":
        await django_wsgi(scope, receive, send)
    elif scope["type"] == "lifespan":
        # Nothing to start or stop: say so, so the server does not wait or warn.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    else:
        raise ValueError(f"No {scope['type']} connections here: HTTP only.")
