"""Per request: an id (taken from X-Request-ID or made), the timing, and 5xx bookkeeping.

The id is bound for everything the request logs or records and returned in X-Request-ID. The
timing goes to the "http.request" metric under "<METHOD> <route pattern>|<status class>", the
route being the URL pattern (``/api/orders/<uuid:order_id>``), never the raw path, so an order id
does not make a metric of its own. A 5xx is recorded as an error with its request id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from monitoring import context, recorder
from monitoring.services import error_record, http_5xx_seen

logger = logging.getLogger("monitoring.requests")

HEADER = "X-Request-ID"
UNMATCHED = "(unmatched)"


def endpoint(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    route = f"/{match.route}" if match is not None and match.route else UNMATCHED
    return f"{request.method} {route.replace('^', '').replace('$', '')}"


class RequestMonitoringMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = context.request_id_from(request.headers.get(HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        started = time.perf_counter()
        context.start_request(request_id)
        response = self.get_response(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        response[HEADER] = request_id
        if settings.MONITORING_ENABLED and not request.path.startswith(settings.STATIC_URL):
            status_class = f"{response.status_code // 100}xx"
            recorder.observe("http.request", elapsed_ms, label=f"{endpoint(request)}|{status_class}")
            if response.status_code >= 500:
                self._server_error(request, response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        # Kept for the 5xx record; Django's handler still answers with the 500 page.
        request._monitoring_exception = exception  # type: ignore[attr-defined]

    @staticmethod
    def _server_error(request: HttpRequest, response: HttpResponse) -> None:
        exception = getattr(request, "_monitoring_exception", None)
        error_record(
            source="request",
            error_class=type(exception).__name__ if exception else f"HTTP {response.status_code}",
            message=(str(exception) if exception else "")
            or f"{endpoint(request)} answered {response.status_code}",
        )
        http_5xx_seen()
