"""Who may read monitoring: staff, or a client whose user holds `monitoring.view_monitoring`
(a service account for a dashboard or a scraper, with no other rights)."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions

PERMISSION = "monitoring.view_monitoring"


def can_read_monitoring(user: Any) -> bool:
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(PERMISSION)))


class CanReadMonitoring(permissions.BasePermission):
    def has_permission(self, request: Any, view: Any) -> bool:
        return can_read_monitoring(request.user)
