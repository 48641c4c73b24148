from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    """Outbox relay, delivery ledger and the SendGrid, Sheets, SNS and CloudWatch adapters."""

    name = "integrations"
