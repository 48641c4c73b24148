"""API keys for service clients: djangorestframework-api-key's hashed, prefixed, expiring and
revocable key, plus the user it acts for, the scopes it carries and when it was last used."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class ApiKey(AbstractAPIKey):
    """A key acts as `user` (a service account or any user), limited to `scopes`.

    The key itself is never stored: only its prefix (to find it) and a hash (to check it).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="The user the key acts for: its rights still apply on top of the scopes.",
    )
    scopes = models.JSONField(
        default=list,
        blank=True,
        help_text="The operations the key may call (names from settings.API_SCOPES).",
    )
    last_used_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the key last authenticated a request (to the minute).",
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def clean(self) -> None:
        super().clean()
        unknown = sorted(set(self.scopes or []) - set(settings.API_SCOPES))
        if unknown:
            raise ValidationError({"scopes": f"Unknown scopes: {', '.join(unknown)}."})

    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes or [])
