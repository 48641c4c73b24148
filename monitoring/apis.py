"""The monitoring API: health (open to all), and for staff or monitoring clients the figures,
the integrations, recent errors and alerts."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import HasScopes
from core.serializers import ErrorSerializer
from monitoring import selectors
from monitoring.models import ErrorSource
from monitoring.permissions import CanReadMonitoring
from monitoring.scrub import scrub_value

HEALTH_STATUSES = ["ok", "degraded", "unavailable"]


class ComponentHealthSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    required = serializers.BooleanField(help_text="Readiness needs it: when it fails, the answer is 503.")
    latency_ms = serializers.FloatField()
    detail = serializers.DictField()
    error = serializers.CharField()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=HEALTH_STATUSES)
    reason = serializers.CharField(help_text="Why it is not ok: the failing components.")
    components = ComponentHealthSerializer(many=True)


class HealthApi(APIView):
    """Liveness and readiness: 200 when every required component answers (status "degraded" when
    an integration is failing), 503 naming the required ones that don't."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list[type] = []

    @extend_schema(
        operation_id="monitoring_health",
        responses={
            200: HealthSerializer,
            503: OpenApiResponse(HealthSerializer, description="A required component is down; see reason."),
        },
    )
    def get(self, request: Request) -> Response:
        health = selectors.health_check()
        failing = [c for c in health.components if not c.ok]
        body = {
            "status": health.status,
            "reason": "; ".join(f"{c.name}: {c.error}" for c in failing),
            "components": ComponentHealthSerializer(health.components, many=True).data,
        }
        return Response(
            scrub_value(body), status=status.HTTP_200_OK if health.ok else status.HTTP_503_SERVICE_UNAVAILABLE
        )


class WindowQuerySerializer(serializers.Serializer):
    window = serializers.ChoiceField(choices=list(selectors.WINDOWS), default="1h")


class MetricsSerializer(serializers.Serializer):
    window = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    requests = serializers.DictField(
        help_text="total, errors_5xx, endpoints: count, by_status, p50/p95/p99_ms"
    )
    orders = serializers.DictField(help_text="created, paid, payment_failed, cancelled, refunded, per_minute")
    payments = serializers.DictField(help_text="succeeded, failed, success_ratio, failure_codes")
    webhooks = serializers.DictField(help_text="received, failed, deliveries")
    integrations = serializers.DictField(
        help_text="per integration: succeeded, dead, retrying, pending, in_flight, dead_now, attempts,"
        " latency and lag percentiles (ms)"
    )
    queue = serializers.DictField(help_text="broker_depth, deliveries_due, oldest_due_age_s")


class MetricsApi(APIView):
    permission_classes = [HasScopes, CanReadMonitoring]
    required_scopes = {"GET": "monitoring:read"}

    @extend_schema(
        operation_id="monitoring_metrics",
        parameters=[WindowQuerySerializer],
        responses={200: MetricsSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 403: ErrorSerializer},
        description="Figures over the last 5 minutes, hour or day, from the shared stores.",
    )
    def get(self, request: Request) -> Response:
        query = WindowQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.metrics_summary(query.validated_data["window"]))


class IntegrationSerializer(serializers.Serializer):
    name = serializers.CharField()
    configuration = serializers.DictField(help_text="adapter, endpoint (no secrets), events, retry, batch")
    circuit = serializers.CharField()
    consecutive_failures = serializers.IntegerField()
    calls_in_window = serializers.IntegerField()
    failure_ratio = serializers.FloatField()
    window_s = serializers.IntegerField()
    retry_in_s = serializers.FloatField()
    counts = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Deliveries by state in the ledger; `succeeded`: those that succeeded in the last 24 h.",
    )
    success_ratio_24h = serializers.FloatField(allow_null=True)
    latency_24h = serializers.DictField()
    last_error = serializers.DictField(allow_null=True)
    last_success_at = serializers.DateTimeField(allow_null=True)
    probe = serializers.DictField(allow_null=True)
    circuit_events = serializers.ListField(child=serializers.DictField())


class IntegrationsApi(APIView):
    permission_classes = [HasScopes, CanReadMonitoring]
    required_scopes = {"GET": "monitoring:read"}

    @extend_schema(
        operation_id="monitoring_integrations",
        responses={200: IntegrationSerializer(many=True), 401: ErrorSerializer, 403: ErrorSerializer},
        description="Each integration: configuration in use, circuit, ledger counts, last error, last probe.",
    )
    def get(self, request: Request) -> Response:
        return Response(scrub_value(IntegrationSerializer(selectors.integrations_overview(), many=True).data))


class ErrorRecordSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    source = serializers.ChoiceField(choices=ErrorSource.choices)
    integration = serializers.CharField()
    order_id = serializers.UUIDField(allow_null=True)
    request_id = serializers.CharField()
    error_class = serializers.CharField()
    message = serializers.CharField()


class ErrorQuerySerializer(serializers.Serializer):
    source = serializers.ChoiceField(choices=ErrorSource.choices, required=False)
    integration = serializers.CharField(required=False, max_length=32)


class ErrorPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    max_page_size = 200
    page_size_query_param = "limit"


class ErrorsApi(APIView):
    permission_classes = [HasScopes, CanReadMonitoring]
    required_scopes = {"GET": "monitoring:read"}

    @extend_schema(
        operation_id="monitoring_errors",
        parameters=[ErrorQuerySerializer],
        responses={
            200: ErrorRecordSerializer(many=True),
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
        },
        description="Recent errors, newest first; `next` and `previous` are cursors.",
    )
    def get(self, request: Request) -> Response:
        query = ErrorQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.errors_list(
            source=query.validated_data.get("source", ""),
            integration=query.validated_data.get("integration", ""),
        )
        paginator = ErrorPagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(ErrorRecordSerializer(page, many=True).data)


class AlertSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    subject = serializers.CharField()
    kind = serializers.CharField()
    kinds = serializers.DictField(child=serializers.IntegerField())
    message = serializers.CharField()
    first_at = serializers.DateTimeField()
    last_at = serializers.DateTimeField()
    occurrences = serializers.IntegerField()
    published_at = serializers.DateTimeField(allow_null=True)
    publish_error = serializers.CharField()


class AlertsApi(APIView):
    permission_classes = [HasScopes, CanReadMonitoring]
    required_scopes = {"GET": "monitoring:read"}

    @extend_schema(
        operation_id="monitoring_alerts",
        responses={200: AlertSerializer(many=True), 401: ErrorSerializer, 403: ErrorSerializer},
        description="Recent alerts, one per subject and outage, with how often each fired.",
    )
    def get(self, request: Request) -> Response:
        return Response(AlertSerializer(selectors.alerts_recent(50), many=True).data)
