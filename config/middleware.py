"""Middleware of our own: oversized and unreadable bodies answered in the JSON error shape, and
the Content-Security-Policy with Stripe's origins on the pages that load Stripe.js."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from csp.middleware import CSPMiddleware as BaseCSPMiddleware
from csp.middleware import PolicyParts
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, RawPostDataException
from django.http.multipartparser import MultiPartParserError
from django.utils.deprecation import MiddlewareMixin

from config.parsers import body_limit, too_large_message

# The pages (URL names) that load Stripe.js: only these may run its script, call it and frame it.
STRIPE_PAGES = frozenset({"payments:pay"})
STRIPE_JS_ORIGIN = "https://js.stripe.com"


def body_error_response(exc: Exception) -> JsonResponse | None:
    """The JSON answer to a body Django refused to read, or None for any other error."""
    if isinstance(exc, RequestDataTooBig):
        limit = body_limit()
        message = too_large_message(limit) if limit is not None else "The request body is too large."
        return JsonResponse({"code": "too_large", "message": message}, status=413)
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return JsonResponse({"code": "parse_error", "message": "The form has too many fields."}, status=400)
    if isinstance(exc, MultiPartParserError):
        return JsonResponse(
            {"code": "parse_error", "message": "The multipart body is malformed."}, status=400
        )
    if isinstance(exc, RawPostDataException):
        # A view that reads the raw body (JSON) got a multipart form, already parsed for the CSRF
        # check: the body is gone, and it was not what the view takes anyway.
        return JsonResponse(
            {"code": "unsupported_media_type", "message": "This endpoint takes a JSON body, not a form."},
            status=415,
        )
    return None


class RequestBodyMiddleware(MiddlewareMixin):
    """Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE with `RequestDataTooBig`, which it
    answers with an HTML 400 page; here it is 413 in the JSON error shape, whoever reads the body.

    A view (or DRF's CSRF check) that reads the body raises inside the view: `process_exception`.
    The CSRF middleware reads a form body in its own `process_view`, outside any view, so this one
    (placed before it) reads the form first, exactly where the CSRF check would.
    """

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        if request.method != "POST" or getattr(view, "csrf_exempt", False):
            return None
        try:
            request.POST  # noqa: B018 - parse it now, as CsrfViewMiddleware is about to
        except (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent, MultiPartParserError) as exc:
            return body_error_response(exc)
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return body_error_response(exception)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def stripe_sources() -> dict[str, list[str]]:
    """What Stripe.js at STRIPE_JS_URL needs beyond our own origin, read when the page is served
    (tests point STRIPE_JS_URL at a stand-in on a port chosen at run time)."""
    js = _origin(settings.STRIPE_JS_URL)
    if js == STRIPE_JS_ORIGIN:
        # Stripe's published list for Elements: its scripts, its API, its frames and 3-D Secure.
        return {
            "script-src": [STRIPE_JS_ORIGIN, "https://*.js.stripe.com"],
            "connect-src": ["https://api.stripe.com"],
            "frame-src": [STRIPE_JS_ORIGIN, "https://*.js.stripe.com", "https://hooks.stripe.com"],
        }
    # The stand-in (localstripe's Stripe.js) calls its own origin and draws the card fields in
    # the page itself; its 3-D Secure check is a box in the page too.
    return {"script-src": [js], "connect-src": [js], "frame-src": [js]}


def _merged(update: dict[str, Any] | None, extra: dict[str, list[str]]) -> dict[str, Any]:
    merged = dict(update or {})
    for directive, sources in extra.items():
        merged[directive] = [*(merged.get(directive) or []), *sources]
    return merged


class CSPMiddleware(BaseCSPMiddleware):
    """django-csp's middleware, plus Stripe's origins on the pages in STRIPE_PAGES only."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        match = getattr(request, "resolver_match", None)
        if match is not None and match.view_name in STRIPE_PAGES:
            parts.update = _merged(parts.update, stripe_sources())
        return parts
