"""The two floors bench/api.py measures `POST /api/orders` against, served by the same server
in the same run (ROOT_URLCONF of bench/settings.py): every product URL, plus

- `/bench/floor/django`: a bare Django view answering a small JSON document;
- `/bench/floor/drf`: a DRF view that only validates `OrderCreateInputSerializer` with the same
  body as the order and answers 200 (the project's default authentication, parser, renderer
  and exception handler; no throttles, no database).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from orders.serializers import OrderCreateInputSerializer


@csrf_exempt
def django_floor(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


class DrfValidateOnly(APIView):
    permission_classes = [permissions.AllowAny]
    throttle_classes: list = []

    def post(self, request: Request) -> Response:
        data = OrderCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"ok": True, "lines": len(data.validated_data["lines"])})


urlpatterns = [
    path("bench/floor/django", django_floor),
    path("bench/floor/drf", DrfValidateOnly.as_view()),
    path("", include("config.urls")),
]

handler404 = "core.exceptions.handler404"
handler500 = "core.exceptions.handler500"
