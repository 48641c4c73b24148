"""One place that turns errors into HTTP answers, for the API and for unknown /api/ URLs.

Every error body has the same shape (`core.serializers.ErrorSerializer`): `{"code": ...,
"message": ..., "fields": {...}}`, with `fields` only for invalid input. An `ApplicationError`
says its own status and code, so this module knows no app.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core.errors import ApplicationError


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK's EXCEPTION_HANDLER: application errors, then DRF's own, in the one shape."""
    if isinstance(exc, ApplicationError):
        body: dict[str, Any] = {"code": exc.code, "message": str(exc)}
        if exc.fields is not None:
            body["fields"] = exc.fields
        return Response(body, status=exc.http_status)

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: Django logs it and answers 500
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = {"code": "invalid", "message": "Invalid input.", "fields": detail}
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {
            "code": codes if isinstance(codes, str) else exc.default_code,
            "message": plain_message(exc.detail),
        }
    return response


def plain_message(detail: Any) -> str:
    """A DRF error detail as one plain sentence: never a Python repr of `ErrorDetail`, lists or
    dicts (simplejwt's invalid-token detail is a dict with a `detail` and a list of `messages`)."""
    if isinstance(detail, dict):
        if "detail" in detail:
            return plain_message(detail["detail"])
        return " ".join(f"{key}: {plain_message(value)}" for key, value in detail.items())
    if isinstance(detail, list | tuple):
        return " ".join(plain_message(item) for item in detail)
    return str(detail)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def api_not_found(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"code": "not_found", "message": "No such endpoint."}, status=404)


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return api_not_found(request)
    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"code": "server_error", "message": "Something went wrong on our side."}, status=500
        )
    return server_error(request)
