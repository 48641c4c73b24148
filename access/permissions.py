"""Scopes enforced per operation, for requests made with an API key or an OAuth 2.0 token."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.exceptions import PermissionDenied

from access.scopes import NoScopeDeclared, granted_scopes, required_scope


class HasScopes(permissions.BasePermission):
    """Refuses a scoped credential (API key, OAuth token) without the scope the operation needs.

    It only narrows: requests by JWT or session pass (their user's rights decide), and the view's
    other permission classes (staff only, customers see their own orders...) still apply to the
    key's or token's user. Put it first in `permission_classes`, next to the user checks.
    """

    def has_permission(self, request: Any, view: Any) -> bool:
        granted = granted_scopes(request.auth)
        if granted is None or request.method == "OPTIONS":
            return True
        try:
            needed = required_scope(view, request.method)
        except NoScopeDeclared:
            raise PermissionDenied(
                "This operation cannot be called with an API key or an OAuth token.",
                code="insufficient_scope",
            ) from None
        if needed is not None and needed not in granted:
            raise PermissionDenied(f"This operation needs the scope {needed}.", code="insufficient_scope")
        return True
