"""Scheduled housekeeping of the access app (django-q2)."""

from __future__ import annotations

from django.core.management import call_command


def flush_expired_tokens() -> None:
    """Drop expired refresh tokens and their blacklist entries (simplejwt keeps every one it
    issued until this runs), daily."""
    call_command("flushexpiredtokens", verbosity=0)
