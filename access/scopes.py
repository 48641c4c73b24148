"""Which scopes a request's credential carries, and which an operation needs.

API keys and OAuth 2.0 access tokens carry scopes; JWTs and browser sessions do not: they act
with all of their user's rights, as before scopes existed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from oauth2_provider.models import AbstractAccessToken

from access.models import ApiKey

# The HTTP methods that read: HEAD is answered by the GET handler, so it needs GET's scope.
_SAME_AS = {"HEAD": "GET"}


def granted_scopes(auth: Any) -> frozenset[str] | None:
    """The scopes `request.auth` carries, or None when it is not a scoped credential."""
    if isinstance(auth, ApiKey):
        return auth.scope_set()
    if isinstance(auth, AbstractAccessToken):
        return frozenset(auth.scope.split())
    return None


class NoScopeDeclared(LookupError):
    """The view declares no scope for the method: scoped credentials may not call it."""


def required_scope(view: Any, method: str) -> str | None:
    """The scope `view` needs for `method`; None when the operation is open to every caller.

    Views declare `required_scopes = {"GET": "orders:read", "POST": "orders:write", ...}`.
    A method the view does not list raises NoScopeDeclared: a new operation is closed to keys
    and tokens until someone decides which scope it needs.
    """
    declared: dict[str, str | None] = getattr(view, "required_scopes", {}) or {}
    method = _SAME_AS.get(method.upper(), method.upper())
    if method not in declared:
        raise NoScopeDeclared(method)
    return declared[method]


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    return sorted(set(scopes) - set(settings.API_SCOPES))
