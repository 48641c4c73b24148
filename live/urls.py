from django.urls import path

from live import views

app_name = "live"

urlpatterns = [
    path("orders/<uuid:order_id>/", views.order_stream, name="order"),
    path("ops/", views.ops_stream, name="ops"),
]
