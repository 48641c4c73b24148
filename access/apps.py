from django.apps import AppConfig


class AccessConfig(AppConfig):
    """Who may call the API and how often: API keys, OAuth 2.0 scopes, JWT revocation, rate
    limits and login lockout."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "access"

    def ready(self) -> None:
        # drf-spectacular finds the security schemes through these registered extensions.
        from access import schema  # noqa: F401

        self._install_login_guards()

    def _install_login_guards(self) -> None:
        # Failed logins counted and audited, refresh tokens revoked on a password change; the
        # admin's login refuses locked-out usernames and addresses like the site's.
        from django.contrib import admin

        from access import signals  # noqa: F401
        from access.lockout import LockoutAdminAuthenticationForm

        admin.site.login_form = LockoutAdminAuthenticationForm
