"""django-oauth-toolkit as this site uses it: the consent page, and client-credentials tokens
that act as their application's user."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.views import AuthorizationView


class ScopedOAuth2Validator(OAuth2Validator):
    """A client-credentials token acts as the Application's `user` (a service account, say).

    django-oauth-toolkit leaves such tokens without a user; here every API operation checks its
    user's rights on top of the token's scopes, so an application without a user gets no token.
    """

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        if grant_type == "client_credentials" and (client.user is None or not client.user.is_active):
            return False
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)

    def _create_access_token(
        self, expires: Any, request: Any, token: Any, source_refresh_token: Any = None
    ) -> Any:
        if request.grant_type == "client_credentials":
            request.user = request.client.user
        return super()._create_access_token(expires, request, token, source_refresh_token)


class ConsentView(AuthorizationView):
    """The consent page (templates/oauth2_provider/authorize.html, in the site's layout).

    The page's Content-Security-Policy allows its form to lead to the application's
    redirect URI: browsers apply `form-action` to the redirect that follows the POST, so with
    `form-action 'self'` alone the answer would never reach the application.
    """

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        context = getattr(response, "context_data", None) or {}
        if redirect_uri := context.get("redirect_uri"):
            parts = urlsplit(redirect_uri)
            if parts.scheme in {"http", "https"} and parts.netloc:
                allowed = {"form-action": [f"{parts.scheme}://{parts.netloc}"]}
                response._csp_update = allowed  # type: ignore[attr-defined]
                response._csp_update_ro = allowed  # type: ignore[attr-defined]
        return response
