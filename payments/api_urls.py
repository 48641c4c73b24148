from django.urls import path

from payments import apis

urlpatterns = [
    path("confirm", apis.PaymentConfirmApi.as_view(), name="api-payment-confirm"),
    path("refund", apis.PaymentRefundApi.as_view(), name="api-payment-refund"),
    path("<str:payment_id>", apis.PaymentDetailApi.as_view(), name="api-payment"),
]
