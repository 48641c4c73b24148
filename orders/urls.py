from django.urls import path

from orders import views

app_name = "orders"

urlpatterns = [
    path("", views.product_list, name="product_list"),
]
