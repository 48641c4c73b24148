"""Reads for API keys."""

from __future__ import annotations

from django.db.models import QuerySet

from access.models import ApiKey


def api_key_list(*, include_revoked: bool = True) -> QuerySet[ApiKey]:
    rows = ApiKey.objects.select_related("user").order_by("-created")
    return rows if include_revoked else rows.filter(revoked=False)
