from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.serializers import ErrorSerializer
from payments.models import PaymentStatus, RefundStatus
from payments.selectors import refunded_minor


class PaymentConfirmInputSerializer(serializers.Serializer):
    order_id = serializers.UUIDField()
    payment_method = serializers.RegexField(
        r"^[A-Za-z0-9_]{3,255}$",
        help_text="A payment method id from Stripe.js (pm_...), or a test one such as pm_card_visa.",
    )


class RefundInputSerializer(serializers.Serializer):
    order_id = serializers.UUIDField()
    amount_minor = serializers.IntegerField(
        min_value=1, required=False, help_text="Minor units; leave out to refund all that is left."
    )
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class RefundOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    payment_id = serializers.UUIDField()
    amount_minor = serializers.IntegerField()
    status = serializers.ChoiceField(choices=RefundStatus.choices)
    reason = serializers.CharField()
    provider_refund_id = serializers.CharField(allow_null=True)
    failure_message = serializers.CharField()
    actor = serializers.CharField()
    created_at = serializers.DateTimeField()


class PaymentOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    order_id = serializers.UUIDField()
    attempt = serializers.IntegerField()
    status = serializers.ChoiceField(choices=PaymentStatus.choices)
    intent_id = serializers.CharField(allow_null=True)
    client_secret = serializers.SerializerMethodField(
        help_text="Only while the customer must act (3-D Secure): pass it to stripe.confirmCardPayment."
    )
    amount_minor = serializers.IntegerField()
    amount_received_minor = serializers.IntegerField()
    refunded_minor = serializers.SerializerMethodField()
    currency = serializers.CharField()
    failure_code = serializers.CharField()
    failure_message = serializers.CharField()
    refunds = RefundOutputSerializer(many=True, source="refunds.all")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_client_secret(self, payment: Any) -> str | None:
        return payment.client_secret if payment.status == PaymentStatus.REQUIRES_ACTION else None

    def get_refunded_minor(self, payment: Any) -> int:
        return refunded_minor(payment)


class PaymentErrorSerializer(ErrorSerializer):
    """The error body of a declined payment, with the failed attempt."""

    payment = PaymentOutputSerializer()
