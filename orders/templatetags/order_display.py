"""Small display helpers for the order pages."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

_KIND_LABELS = {"customer": "Customer", "staff": "Shop staff", "guest": "Guest", "system": "System"}


@register.filter
def actor_label(actor: str, viewer: Any = None) -> str:
    """An audit-trail actor ("customer:7", "guest:a@b.c", "system:stripe") in words for `viewer`.

    The viewer's own actions read "You"; a guest's email and staff ids are not repeated.
    """
    kind, _, detail = str(actor).partition(":")
    if (
        kind in {"customer", "staff"}
        and viewer is not None
        and getattr(viewer, "is_authenticated", False)
        and detail == str(viewer.pk)
    ):
        return "You"
    label = _KIND_LABELS.get(kind, kind.capitalize() or "Unknown")
    if kind == "system" and detail:
        return f"{label} ({detail})"
    return label
