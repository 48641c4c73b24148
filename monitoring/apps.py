from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Health checks now; metrics, the operators' page and alerts in the monitoring issue."""

    name = "monitoring"
