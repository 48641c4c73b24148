from django.urls import path

from orders import apis

urlpatterns = [
    path("products", apis.ProductListApi.as_view(), name="api-products"),
    path("products/<str:sku>", apis.ProductDetailApi.as_view(), name="api-product"),
    path("orders", apis.OrderCollectionApi.as_view(), name="api-orders"),
    path("orders/<str:order_id>", apis.OrderDetailApi.as_view(), name="api-order"),
]
