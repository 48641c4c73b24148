from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Health, figures, errors, alerts, probes, the operators' page, logs and metrics out."""

    name = "monitoring"

    def ready(self) -> None:
        from monitoring import cloudwatch, recorder

        if cloudwatch.put_metrics not in recorder.sinks:
            recorder.sinks.append(cloudwatch.put_metrics)
