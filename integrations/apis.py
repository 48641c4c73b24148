"""The integrations API for staff: the delivery ledger and retrying dead letters. Thin views over
the selectors and services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import HasScopes
from core.serializers import ErrorSerializer
from integrations import selectors, services
from integrations.models import DeliveryState
from orders import services as order_services


class DeliveryOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    integration = serializers.CharField()
    order_id = serializers.UUIDField()
    event_type = serializers.CharField()
    order_version = serializers.IntegerField()
    idempotency_key = serializers.CharField()
    state = serializers.ChoiceField(choices=DeliveryState.choices)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField()
    last_error_class = serializers.CharField()
    last_error_message = serializers.CharField()
    last_provider_status = serializers.IntegerField(allow_null=True)
    external_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    succeeded_at = serializers.DateTimeField(allow_null=True)


class DeliveryListQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=DeliveryState.choices, required=False)
    integration = serializers.CharField(required=False, max_length=32)
    order_id = serializers.UUIDField(required=False)
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)


class DeliveryListApi(APIView):
    permission_classes = [HasScopes, permissions.IsAdminUser]
    required_scopes = {"GET": "monitoring:read"}  # reading the ledger is operations' view

    @extend_schema(
        operation_id="integrations_deliveries_list",
        parameters=[DeliveryListQuerySerializer],
        responses={200: DeliveryOutputSerializer(many=True), 400: ErrorSerializer, 403: ErrorSerializer},
        description="The delivery ledger, newest first (staff only).",
    )
    def get(self, request: Request) -> Response:
        query = DeliveryListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.delivery_list(**query.validated_data)
        return Response(DeliveryOutputSerializer(rows, many=True).data)


class DeliveryRetryApi(APIView):
    permission_classes = [HasScopes, permissions.IsAdminUser]
    required_scopes = {"POST": "integrations:write"}

    @extend_schema(
        operation_id="integrations_deliveries_retry",
        request=None,
        responses={
            200: DeliveryOutputSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="Only dead or retrying deliveries are retried."
            ),
        },
        description="Send a dead (or retrying) delivery again now, with a fresh set of attempts.",
    )
    def post(self, request: Request, delivery_id: str) -> Response:
        found = selectors.delivery_get(delivery_id=delivery_id)
        if found is None:
            raise NotFound(f"No delivery {delivery_id}.")
        delivery = services.delivery_retry(delivery_id=found.id, actor=order_services.actor_for(request.user))
        return Response(DeliveryOutputSerializer(delivery).data)
