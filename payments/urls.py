"""The payment page of an order and the JSON endpoints its script calls (namespace "payments")."""

from django.urls import path

from payments import views

app_name = "payments"

urlpatterns = [
    path("orders/<uuid:order_id>/pay/", views.pay_page, name="pay"),
    path("orders/<uuid:order_id>/pay/setup", views.pay_setup, name="pay_setup"),
    path("orders/<uuid:order_id>/pay/confirm", views.pay_confirm, name="pay_confirm"),
    path("orders/<uuid:order_id>/pay/sync", views.pay_sync, name="pay_sync"),
]
