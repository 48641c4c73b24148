"""The operators' page (namespace "monitoring"), mounted at /ops/."""

from django.urls import path

from monitoring import views

app_name = "monitoring"

urlpatterns = [
    path("", views.ops, name="ops"),
    path("deliveries/<uuid:delivery_id>/retry", views.delivery_retry, name="delivery_retry"),
    path("integrations/<str:name>/retry-dead", views.integration_retry_dead, name="integration_retry_dead"),
    path("probes/<str:name>", views.probe_run, name="probe_run"),
]
