from django.urls import path

from monitoring import apis

urlpatterns = [
    path("health", apis.HealthApi.as_view(), name="api-health"),
    path("metrics", apis.MetricsApi.as_view(), name="api-monitoring-metrics"),
    path("integrations", apis.IntegrationsApi.as_view(), name="api-monitoring-integrations"),
    path("errors", apis.ErrorsApi.as_view(), name="api-monitoring-errors"),
    path("alerts", apis.AlertsApi.as_view(), name="api-monitoring-alerts"),
]
