"""What happens around logins and password changes, wherever they happen.

- `user_login_failed` (sent by `authenticate()` from the login page, the admin's login, the
  token endpoint and anything else that checks a password): counted towards the lockout and
  written to the audit log. Django masks the password in `credentials` before sending; it is
  never read here.
- `user_logged_in` (a session login): clears the username's failure count.
- A user saved with a new password hash: every outstanding refresh token of the user is
  blacklisted (access tokens are refused by their password stamp, see access.jwt).

Connected by access.apps.AccessConfig.ready.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from access import lockout
from access.jwt import refresh_tokens_revoke
from access.throttling import client_address

PASSWORD_CHANGED = "_access_password_changed"  # noqa: S105 - an attribute name


@receiver(user_login_failed, dispatch_uid="access.login_failed")
def login_failed(sender: str, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    user_model = get_user_model()
    username = credentials.get(user_model.USERNAME_FIELD) or credentials.get("username")
    username = username if isinstance(username, str) else None
    known = (
        user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if username
        else None
    )
    reason = lockout.INACTIVE if known is not None and not known.is_active else lockout.BAD_CREDENTIALS
    address = client_address(request) if request is not None else None
    lockout.login_failure_record(username=username, address=address)
    lockout.login_failure_audit(username=username, request=request, reason=reason)


@receiver(user_logged_in, dispatch_uid="access.logged_in")
def logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    lockout.login_success_record(username=user.get_username())


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="access.password_watch")
def password_watch(
    sender: Any, instance: Any, update_fields: Any = None, raw: bool = False, **kwargs: Any
) -> None:
    """Note on the instance whether this save changes the stored password hash."""
    if raw or instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        setattr(instance, PASSWORD_CHANGED, True)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="access.password_changed")
def password_changed(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if getattr(instance, PASSWORD_CHANGED, False):
        delattr(instance, PASSWORD_CHANGED)
        refresh_tokens_revoke(user_id=instance.pk)
