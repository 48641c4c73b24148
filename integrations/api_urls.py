from django.urls import path

from integrations import apis

urlpatterns = [
    path("deliveries", apis.DeliveryListApi.as_view(), name="api-deliveries"),
    path("deliveries/<str:delivery_id>/retry", apis.DeliveryRetryApi.as_view(), name="api-delivery-retry"),
]
