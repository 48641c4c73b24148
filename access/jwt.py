"""JWTs that can be taken back: login with lockout and audit, single-use refresh, logout, and
revocation on a password change. The endpoints are in access.jwt_apis.

- Login (`POST /api/auth/token`) is refused (429) while the username or the address is locked
  out (access.lockout); a wrong password is counted and audited through Django's
  `user_login_failed`, which `authenticate()` sends.
- Each refresh token works once: it is blacklisted as it is used, and of two requests racing
  with the same token only the one that blacklisted it gets new tokens.
- Logout blacklists the refresh token sent, or every outstanding refresh token of its user.
- A password change (anywhere: the account page, the admin, `set_password` and `save()`)
  blacklists the user's outstanding refresh tokens (access.signals) and stops every token
  issued before it: each token carries a stamp of the password hash (a keyed HMAC, like
  Django's session hash, so the token reveals nothing about the hash), and
  `RevocableJWTAuthentication` refuses a token whose stamp no longer matches. The stamp needs
  no storage, so no cache eviction or clock can bring a revoked token back. A token without
  the stamp was not made here and is refused too.

Logout does not stop access tokens already issued: they expire within JWT_ACCESS_MINUTES.

This module is named in DEFAULT_AUTHENTICATION_CLASSES, which rest_framework.views reads when
it is imported: it must not import rest_framework.views itself (hence the separate jwt_apis).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import update_last_login
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework.exceptions import AuthenticationFailed, ErrorDetail, Throttled
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_from_epoch

from access import lockout
from access.throttling import client_address

logger = logging.getLogger(__name__)
audit = logging.getLogger("access.audit")

# The claim that ties a token to the password its user had when it was issued.
PASSWORD_STAMP_CLAIM = "pwd_stamp"  # noqa: S105 - a claim name, not a password
_STAMP_SALT = "access.jwt.password_stamp"
REVOKED_MESSAGE = "This token is no longer valid: the password was changed. Log in again."


class LoginLockedOut(Throttled):
    """429 `locked_out`, with Retry-After."""

    default_code = "locked_out"

    def __init__(self, wait: int) -> None:
        super().__init__(wait=wait)
        self.detail = ErrorDetail(
            f"Too many failed logins for this account or from this address; try again in {wait} s.",
            code=self.default_code,
        )


# --- the password stamp ----------------------------------------------------------------------
def password_stamp(user: Any) -> str:
    """A keyed digest of the user's password hash: changes whenever the password does."""
    return salted_hmac(_STAMP_SALT, user.password, algorithm="sha256").hexdigest()[:32]


def stamp_matches(token: Token, user: Any) -> bool:
    stamp = token.get(PASSWORD_STAMP_CLAIM)
    return isinstance(stamp, str) and constant_time_compare(stamp, password_stamp(user))


class RevocableJWTAuthentication(JWTAuthentication):
    """simplejwt's bearer authentication, refusing tokens issued before the user's password
    last changed (or not stamped by this module)."""

    def get_user(self, validated_token: Token) -> Any:
        user = super().get_user(validated_token)
        if not stamp_matches(validated_token, user):
            raise AuthenticationFailed(REVOKED_MESSAGE, code="token_revoked")
        return user


# --- services --------------------------------------------------------------------------------
def refresh_token_for(user: Any) -> RefreshToken:
    """A new refresh token for `user`, stamped, and listed as outstanding (so that a password
    change or a logout everywhere can blacklist it). Its `access_token` carries the stamp too."""
    token = RefreshToken()
    token[api_settings.USER_ID_CLAIM] = str(getattr(user, api_settings.USER_ID_FIELD))
    token[PASSWORD_STAMP_CLAIM] = password_stamp(user)
    OutstandingToken.objects.create(
        user=user,
        jti=token[api_settings.JTI_CLAIM],
        token=str(token),
        created_at=token.current_time,
        expires_at=datetime_from_epoch(token["exp"]),
    )
    return token


def refresh_tokens_revoke(*, user_id: Any) -> int:
    """Blacklist every outstanding, unexpired refresh token of the user; returns how many."""
    live = OutstandingToken.objects.filter(
        user_id=user_id, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    with transaction.atomic():
        created = BlacklistedToken.objects.bulk_create(
            [BlacklistedToken(token=token) for token in live], ignore_conflicts=True
        )
    return len(created)


def token_login(*, request: Any, username: str, password: str) -> RefreshToken:
    """A refresh token (and through it an access token) for the right password, unless the
    username or the address is locked out (429). A failure is counted and audited by
    access.signals, on the `user_login_failed` that `authenticate()` sends."""
    remaining = lockout.login_lockout_remaining(username=username, address=client_address(request))
    if remaining:
        lockout.login_failure_audit(username=username, request=request, reason=lockout.LOCKED_OUT)
        raise LoginLockedOut(remaining)
    user = authenticate(request=request, username=username, password=password)
    if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
        raise AuthenticationFailed(
            "No active account found with the given credentials.", code="no_active_account"
        )
    lockout.login_success_record(username=username)
    if api_settings.UPDATE_LAST_LOGIN:
        update_last_login(None, user)
    return refresh_token_for(user)


def _refresh_token(raw: str) -> RefreshToken:
    """`raw` decoded and verified (signature, expiry, type, blacklist), else 401."""
    try:
        return RefreshToken(raw)  # type: ignore[arg-type]
    except TokenError as exc:
        raise AuthenticationFailed(str(exc), code="token_not_valid") from None


def _user_of(refresh: RefreshToken) -> Any:
    """The active user a verified refresh token speaks for, with a matching stamp; else 401."""
    user = (
        get_user_model()
        ._default_manager.filter(**{api_settings.USER_ID_FIELD: refresh.get(api_settings.USER_ID_CLAIM)})
        .first()
    )
    if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
        raise AuthenticationFailed("No active account found for the given token.", code="no_active_account")
    if not stamp_matches(refresh, user):
        raise AuthenticationFailed(REVOKED_MESSAGE, code="token_revoked")
    return user


def token_refresh(*, raw_refresh: str) -> tuple[RefreshToken | None, str]:
    """(a new refresh token, a new access token) for a valid refresh token, which is used up.
    Without ROTATE_REFRESH_TOKENS: (None, a new access token), the refresh token staying valid."""
    refresh = _refresh_token(raw_refresh)
    user = _user_of(refresh)
    if not api_settings.ROTATE_REFRESH_TOKENS:
        return None, str(refresh.access_token)
    _, first_use = refresh.blacklist()
    if not first_use:  # another request used this token a moment ago
        raise AuthenticationFailed("Token is blacklisted", code="token_not_valid")
    renewed = refresh_token_for(user)
    return renewed, str(renewed.access_token)


def token_logout(*, request: Any, raw_refresh: str, everywhere: bool) -> int:
    """Blacklist the refresh token, or with `everywhere` every outstanding refresh token of its
    user; returns how many were revoked."""
    refresh = _refresh_token(raw_refresh)
    user = _user_of(refresh)
    if everywhere:
        revoked = refresh_tokens_revoke(user_id=user.pk)
    else:
        _, created = refresh.blacklist()
        revoked = int(created)
    audit.info(
        "Logout of user %s from %s: %d refresh token(s) revoked%s",
        user.pk,
        client_address(request),
        revoked,
        " (everywhere)" if everywhere else "",
        extra={"event": "logout", "user_id": user.pk, "address": client_address(request)},
    )
    return revoked
