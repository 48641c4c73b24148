"""The payments API: confirm a payment, refund one, read one. Thin views over the services."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from access.permissions import HasScopes
from core.serializers import ErrorSerializer
from orders import selectors as order_selectors
from orders import services as order_services
from orders.repositories import get_order_repository
from payments import selectors, services
from payments.models import PaymentStatus
from payments.serializers import (
    PaymentConfirmInputSerializer,
    PaymentErrorSerializer,
    PaymentOutputSerializer,
    RefundInputSerializer,
    RefundOutputSerializer,
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


class PaymentConfirmApi(APIView):
    permission_classes = [HasScopes, permissions.IsAuthenticated]
    required_scopes = {"POST": "payments:write"}

    @extend_schema(
        operation_id="payments_confirm",
        request=PaymentConfirmInputSerializer,
        responses={
            200: PaymentOutputSerializer,
            402: OpenApiResponse(PaymentErrorSerializer, description="The card was declined; try another."),
            400: _error("Invalid input."),
            404: _error("No such order, or not yours."),
            409: _error("The order cannot be paid in its status."),
            503: _error("The payment provider could not be reached; try again."),
        },
        description=(
            "Pay an order with a payment method. Repeating the call while a payment is under way,"
            " or after it succeeded, returns that payment: an order is never charged twice."
        ),
    )
    def post(self, request: Request) -> Response:
        data = PaymentConfirmInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order = order_selectors.order_get(
            repository=get_order_repository(), order_id=data.validated_data["order_id"], user=request.user
        )
        payment = services.payment_confirm(
            order_id=order.id,
            payment_method=data.validated_data["payment_method"],
            actor=order_services.actor_for(request.user),
        )
        body = PaymentOutputSerializer(payment).data
        if payment.status == PaymentStatus.FAILED:
            return Response(
                {
                    "code": payment.failure_code or "payment_failed",
                    "message": payment.failure_message or "The payment failed.",
                    "payment": body,
                },
                status=status.HTTP_402_PAYMENT_REQUIRED,
            )
        return Response(body)


class PaymentRefundApi(APIView):
    permission_classes = [HasScopes, permissions.IsAdminUser]
    required_scopes = {"POST": "payments:refund"}

    @extend_schema(
        operation_id="payments_refund",
        request=RefundInputSerializer,
        responses={
            201: RefundOutputSerializer,
            400: _error("Invalid input, or more than is left to refund."),
            403: _error("Staff only."),
            404: _error("No such order."),
            409: _error("The order cannot be refunded in its status."),
            503: _error("The payment provider could not be reached; try again."),
        },
        description="Refund all that is left of an order's payment, or `amount_minor` of it.",
    )
    def post(self, request: Request) -> Response:
        data = RefundInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order = order_selectors.order_get(
            repository=get_order_repository(), order_id=data.validated_data["order_id"], user=request.user
        )
        refund = services.payment_refund(
            order_id=order.id,
            amount_minor=data.validated_data.get("amount_minor"),
            reason=data.validated_data["reason"],
            actor=order_services.actor_for(request.user),
            requested_by=request.user,
        )
        return Response(RefundOutputSerializer(refund).data, status=status.HTTP_201_CREATED)


class PaymentDetailApi(APIView):
    permission_classes = [HasScopes, permissions.IsAuthenticated]
    required_scopes = {"GET": "orders:read"}  # a payment is read as part of its order

    @extend_schema(
        operation_id="payments_retrieve",
        responses={200: PaymentOutputSerializer, 404: _error("No such payment, or not yours.")},
    )
    def get(self, request: Request, payment_id: str) -> Response:
        payment = selectors.payment_get(payment_id=payment_id, user=request.user)
        return Response(PaymentOutputSerializer(payment).data)
