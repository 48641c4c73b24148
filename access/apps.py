from django.apps import AppConfig


class AccessConfig(AppConfig):
    """Who may call the API and how often: API keys, OAuth 2.0 scopes, JWT revocation, rate
    limits and login lockout."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "access"
