"""Login lockout and the failed-login audit line.

A rate limit slows a password guesser down; the lockout stops one. After LOGIN_LOCKOUT_FAILURES
failed logins for one username, or LOGIN_LOCKOUT_ADDRESS_FAILURES from one address, within
LOGIN_LOCKOUT_WINDOW_SECONDS, every login for that username or from that address is refused
for LOGIN_LOCKOUT_SECONDS, even with the right password (otherwise the lockout would tell the
guesser when they got it right). A success clears the username's count, not the address's: an
attacker with one account of their own must not be able to reset their address's count.

Counters and locks live in the shared cache, so the limit holds across processes and hosts.
Each lock stores its end time and is compared with `time.time()`, whatever the cache's expiry
does. Failures are counted where Django reports them (`user_login_failed`, see access.signals):
the login page, the admin's login and the token endpoint all call `authenticate()`. The refusal
is checked before `authenticate()` by the login forms here and by access.jwt's token view.

The audit line (logger `access.audit`) names the username, the source address and the reason;
never the password (Django hands the signal its credentials with the password masked, and
nothing here reads it).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from access.throttling import client_address, shared_cache, window_count

audit = logging.getLogger("access.audit")

KEY_PREFIX = "lockout"
# A failed login's reasons, as the audit line names them.
BAD_CREDENTIALS = "bad_credentials"
INACTIVE = "inactive"
LOCKED_OUT = "locked_out"
# Longest username written to the log; a "username" can be anything a client sends.
LOGGED_USERNAME_CHARS = 150


def _subject_key(kind: str, value: str) -> str:
    # Hashed: usernames and addresses can hold anything, cache keys cannot.
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{KEY_PREFIX}:{kind}:{digest}"


def _subjects(*, username: str | None, address: str | None) -> list[tuple[str, int]]:
    """(cache key, failures allowed) of each subject a login attempt counts against."""
    subjects = []
    if username:
        # Case-folded: "Admin" and "admin" share one count, whatever the backend makes of case.
        subjects.append((_subject_key("user", username.casefold()), settings.LOGIN_LOCKOUT_FAILURES))
    if address and address != "unknown":
        subjects.append((_subject_key("addr", address), settings.LOGIN_LOCKOUT_ADDRESS_FAILURES))
    return subjects


def login_lockout_remaining(*, username: str | None, address: str | None) -> int | None:
    """Seconds until logins for `username` or from `address` are allowed again; None if they
    are now."""
    cache = shared_cache()
    now = time.time()
    ends = [
        lock["until"]
        for key, _ in _subjects(username=username, address=address)
        if (lock := cache.get(f"{key}:locked")) and lock["until"] > now
    ]
    return max(1, math.ceil(max(ends) - now)) if ends else None


def login_failure_record(*, username: str | None, address: str | None) -> None:
    """Count one failed login against the username and the address; lock whichever reached
    its limit."""
    cache = shared_cache()
    for key, allowed in _subjects(username=username, address=address):
        if allowed <= 0:
            continue  # 0: no lockout for this kind of subject
        window = window_count(f"{key}:failures", period=settings.LOGIN_LOCKOUT_WINDOW_SECONDS)
        if window.count >= allowed:
            until = time.time() + settings.LOGIN_LOCKOUT_SECONDS
            cache.set(f"{key}:locked", {"until": until}, timeout=settings.LOGIN_LOCKOUT_SECONDS + 60)
            cache.delete(f"{key}:failures")  # after the lock, a fresh count


def login_success_record(*, username: str) -> None:
    key, _ = _subjects(username=username, address=None)[0]
    shared_cache().delete(f"{key}:failures")


# --- the audit line ------------------------------------------------------------------------
def channel_of(request: Any) -> str:
    path = getattr(request, "path", "") or ""
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/api/"):
        return "api"
    return "form" if request is not None else "other"


def printable(value: Any) -> str:
    """A value a client chose, safe to put in one log line: no line breaks or control
    characters (each shown as an escape), bounded in length."""
    text = str(value or "")[:LOGGED_USERNAME_CHARS]
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def login_failure_audit(*, username: str | None, request: Any, reason: str) -> None:
    """One line on `access.audit` for a failed login. Takes no password, by design."""
    address = client_address(request) if request is not None else "unknown"
    name = printable(username)
    channel = channel_of(request)
    audit.warning(
        "Login failed for username %r from %s via %s: %s",
        name,
        address,
        channel,
        reason,
        extra={
            "event": "login.failed",
            "username": name,
            "address": address,
            "channel": channel,
            "reason": reason,
        },
    )


# --- the login forms -----------------------------------------------------------------------
def lockout_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return (
        "Too many failed logins for this account or from this address. "
        f"Please try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


class LockoutFormMixin:
    """Refuses the login, before any password is checked, while the username or the address
    is locked out."""

    request: Any
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username:
            address = client_address(self.request) if self.request is not None else None
            remaining = login_lockout_remaining(username=username, address=address)
            if remaining:
                login_failure_audit(username=username, request=self.request, reason=LOCKED_OUT)
                raise forms.ValidationError(lockout_message(remaining), code=LOCKED_OUT)
        return super().clean()  # type: ignore[misc]


class LockoutAuthenticationForm(LockoutFormMixin, AuthenticationForm):
    """The login page's form (/accounts/login/)."""


class LockoutAdminAuthenticationForm(LockoutFormMixin, AdminAuthenticationForm):
    """The admin's login form (installed on the admin site by access.apps)."""
