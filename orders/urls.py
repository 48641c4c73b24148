"""The shop's pages (namespace "orders")."""

from django.urls import path

from orders import views

app_name = "orders"

urlpatterns = [
    path("", views.product_list, name="product_list"),
    path("products/<str:sku>/", views.product_detail, name="product_detail"),
    path("cart/", views.cart_detail, name="cart"),
    path("cart/add/<str:sku>/", views.cart_add, name="cart_add"),
    path("cart/update/<str:sku>/", views.cart_update, name="cart_update"),
    path("cart/remove/<str:sku>/", views.cart_remove, name="cart_remove"),
    path("checkout/", views.checkout, name="checkout"),
    path("orders/", views.order_list, name="order_list"),
    path("orders/<uuid:order_id>/", views.order_detail, name="order_detail"),
    path("orders/<uuid:order_id>/cancel/", views.order_cancel, name="order_cancel"),
]
