"""DRF authentication for service clients (`Authorization: Api-Key <key>`) and OAuth 2.0
bearer tokens. JWTs (`Bearer <jwt>`) and sessions keep their own classes."""

from __future__ import annotations

from typing import Any

from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed

from access import services
from access.models import ApiKey

API_KEY_KEYWORD = "Api-Key"


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Api-Key <prefix>.<secret>` → (the key's user, the key).

    A wrong, revoked or expired key is refused (401) with a message that says which, and never
    repeats the key; a request without this header is left to the other classes.
    """

    keyword = API_KEY_KEYWORD

    def authenticate(self, request: Any) -> tuple[Any, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise AuthenticationFailed(
                "Send the key as `Authorization: Api-Key <key>`, with nothing else.", code="invalid_api_key"
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise AuthenticationFailed("The API key is not valid.", code="invalid_api_key") from None
        try:
            key = services.api_key_authenticate(raw_key=raw)
        except services.ApiKeyRefused as refusal:
            raise AuthenticationFailed(refusal.message, code=refusal.code) from None
        return key.user, key

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


class OAuth2TokenAuthentication(OAuth2Authentication):
    """django-oauth-toolkit's bearer tokens, side by side with JWTs on the same `Bearer` header.

    A bearer value shaped like a JWT (three dot-separated parts; ours never contain a dot) is
    left to JWTAuthentication without a database lookup. Any other bearer value is ours: if it
    is not a live access token the request is refused here, with a message about OAuth tokens,
    instead of falling through to a confusing JWT error.
    """

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if len(parts) != 2 or parts[0].lower() != b"bearer" or parts[1].count(b".") == 2:
            return None
        found = super().authenticate(request)
        if found is None:
            raise AuthenticationFailed(
                "The OAuth 2.0 access token is invalid, expired or revoked.", code="invalid_token"
            )
        user, token = found
        if user is None or not user.is_active:
            raise AuthenticationFailed(
                "The OAuth 2.0 application has no active user to act for.", code="invalid_token"
            )
        return user, token
