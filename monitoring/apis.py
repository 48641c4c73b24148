from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring.selectors import health_check

HEALTH_STATUSES = ["ok", "unavailable"]


class ComponentHealthSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField()
    detail = serializers.DictField()
    error = serializers.CharField()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=HEALTH_STATUSES)
    components = ComponentHealthSerializer(many=True)


class HealthApi(APIView):
    """Liveness and readiness: 200 when every component answers, 503 naming the ones that don't."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="monitoring_health",
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="A component is down; see its error."),
        },
    )
    def get(self, request: Request) -> Response:
        health = health_check()
        body = {
            "status": "ok" if health.ok else "unavailable",
            "components": ComponentHealthSerializer(health.components, many=True).data,
        }
        return Response(body, status=status.HTTP_200_OK if health.ok else status.HTTP_503_SERVICE_UNAVAILABLE)
