from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    """Stripe payments, refunds and webhooks (built in the payments issue)."""

    name = "payments"
