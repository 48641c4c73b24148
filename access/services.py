"""Writes for API keys: create (the key is returned once, never stored), revoke, and the checks
and bookkeeping done when a key authenticates a request."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from access.models import ApiKey
from access.scopes import unknown_scopes

logger = logging.getLogger(__name__)

# last_used_at is written at most this often per key: a busy key costs one UPDATE a minute,
# not one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(ValueError):
    """A key cannot be created or revoked as asked (unknown user, scope or prefix)."""


@dataclass
class ApiKeyRefused(Exception):
    """A request's key is not usable; `message` is safe to show (it never contains the key)."""

    code: str
    message: str


def api_key_create(
    *, name: str, user: Any, scopes: Iterable[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key for `user`; returns the row and the key, which is shown once and never again."""
    scopes = sorted(set(scopes))
    if unknown := unknown_scopes(scopes):
        raise ApiKeyError(f"Unknown scopes: {', '.join(unknown)}.")
    if isinstance(user, str):
        try:
            user = get_user_model().objects.get_by_natural_key(user)
        except get_user_model().DoesNotExist:
            raise ApiKeyError(f"No user {user!r}.") from None
    key, raw = ApiKey.objects.create_key(name=name, user=user, scopes=scopes, expiry_date=expires_at)
    logger.info(
        "API key %s created for %s",
        key.prefix,
        user.get_username(),
        extra={"event": "access.api_key_created", "prefix": key.prefix},
    )
    return key, raw


def api_key_revoke(*, prefix: str) -> ApiKey:
    """Revoke the key with this prefix; revoking twice is harmless. Revocation cannot be undone."""
    try:
        key = ApiKey.objects.get(prefix=prefix)
    except ApiKey.DoesNotExist:
        raise ApiKeyError(f"No API key with prefix {prefix!r}.") from None
    if not key.revoked:
        key.revoked = True
        key.save(update_fields=["revoked"])
        logger.info(
            "API key %s revoked", key.prefix, extra={"event": "access.api_key_revoked", "prefix": key.prefix}
        )
    return key


def api_key_authenticate(*, raw_key: str) -> ApiKey:
    """The usable key matching `raw_key` (with its user), or ApiKeyRefused saying why not."""
    prefix, dot, _secret = raw_key.partition(".")
    if not dot or not prefix:
        raise ApiKeyRefused("invalid_api_key", "The API key is not valid.")
    key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    # Same answer for an unknown prefix and a wrong secret: no probing for prefixes.
    if key is None or not key.is_valid(raw_key):
        raise ApiKeyRefused("invalid_api_key", "The API key is not valid.")
    if key.revoked:
        raise ApiKeyRefused("api_key_revoked", "This API key has been revoked.")
    if key.has_expired:
        raise ApiKeyRefused("api_key_expired", "This API key has expired.")
    if not key.user.is_active:
        raise ApiKeyRefused("invalid_api_key", "The API key's user is inactive.")
    api_key_mark_used(key=key)
    return key


def api_key_mark_used(*, key: ApiKey, now: datetime | None = None) -> None:
    """Set last_used_at, at most once per LAST_USED_RESOLUTION and without a read: the UPDATE's
    condition makes concurrent requests of the same key write once."""
    now = now or timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    key.last_used_at = now
