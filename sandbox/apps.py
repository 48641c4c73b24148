"""The sandbox app: stand-ins for Stripe, SendGrid, Google Sheets and AWS, and their commands.

Development and test tooling. `config/settings.py` installs it only outside production and the
image leaves it out (`.dockerignore`); product code never imports it.
"""

from __future__ import annotations

import json

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

GOOGLE_SHEETS_API = "https://sheets.googleapis.com"


class SandboxConfig(AppConfig):
    name = "sandbox"
    verbose_name = "Sandboxes (development only)"

    def ready(self) -> None:
        if settings.PRODUCTION:
            raise ImproperlyConfigured(
                "The sandbox app is for development and tests; never install it in production."
            )
        # `make run` needs no configuration: with no key, and Sheets pointed at a stand-in, a
        # throwaway key whose token_uri is that stand-in's /token (the adapter requires a key).
        api_base = str(settings.SHEETS_API_BASE).rstrip("/")
        if not settings.GOOGLE_SERVICE_ACCOUNT_JSON and api_base != GOOGLE_SHEETS_API:
            from sandbox.sheets import throwaway_service_account

            settings.GOOGLE_SERVICE_ACCOUNT_JSON = json.dumps(throwaway_service_account(api_base))
