from django.urls import path

from monitoring import apis

urlpatterns = [
    path("health", apis.HealthApi.as_view(), name="api-health"),
]
