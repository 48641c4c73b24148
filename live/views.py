"""The streams: `/live/orders/<uuid>/` for whoever may see the order page, `/live/ops/` for
whoever may see /ops/. Async views (no worker thread is held while a stream is open); the
permission checks are the pages' own, run in a thread as they read the session and the orders.
"""

from __future__ import annotations

import uuid

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, StreamingHttpResponse
from django.views.decorators.http import require_GET

from live import services, streams
from monitoring.permissions import can_read_monitoring
from orders.views import _visible_order_or_404 as visible_order_or_404  # the order page's own rule


def _since(request: HttpRequest) -> str | None:
    """The token the page was rendered with, or (a reconnect) the last one this stream sent."""
    since = request.headers.get("Last-Event-ID") or request.GET.get("since")
    if since is None:
        return None
    return "" if since == "-" else since[:64] or None


def _stream(request: HttpRequest, channel: str) -> StreamingHttpResponse:
    since = _since(request)
    if isinstance(request, ASGIRequest):
        events = streams.event_stream(channel, since=since)
    else:  # runserver, the tests' live server: WSGI cannot stream an async generator
        events = streams.sync_event_stream(channel, since=since)
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


@require_GET
async def order_stream(request: HttpRequest, order_id: uuid.UUID) -> HttpResponse:
    order = await sync_to_async(visible_order_or_404)(request, order_id)  # 404 like the page
    return _stream(request, services.order_channel(order.id))


def _ops_allowed(request: HttpRequest) -> bool:
    """/ops/'s rule (staff, or "monitoring.view_monitoring")."""
    return request.user.is_authenticated and can_read_monitoring(request.user)


@require_GET
async def ops_stream(request: HttpRequest) -> HttpResponse:
    # Where the page sends a signed-out visitor to the login page, the stream, which a browser
    # cannot follow there, answers 403 (a plain one: nothing to log, no page to style).
    if not await sync_to_async(_ops_allowed)(request):
        return HttpResponseForbidden("The operators' page is for staff.", content_type="text/plain")
    return _stream(request, services.OPS)
