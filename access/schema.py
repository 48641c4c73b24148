"""How the OpenAPI schema (drf-spectacular) describes the ways to authenticate: the `oauth2`,
`bearer` (JWT) and `apiKey` security schemes, and per operation the scope a key or token needs
(from each view's `required_scopes`, the same table HasScopes enforces)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from access.scopes import NoScopeDeclared, required_scope


def _scopes_for(auto_schema: Any) -> list[str] | None:
    """[scope], [] for an open operation, None when keys and tokens may not call it."""
    try:
        scope = required_scope(auto_schema.view, auto_schema.method)
    except NoScopeDeclared:
        return None
    return [scope] if scope else []


class OAuth2Scheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.OAuth2TokenAuthentication"
    match_subclasses = True
    priority = 1
    name = "oauth2"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        scopes = dict(settings.API_SCOPES)
        return {
            "type": "oauth2",
            "description": (
                "OAuth 2.0 (django-oauth-toolkit). Third-party apps: authorization code with PKCE"
                " (S256, required), the user consents on /o/authorize/. Machine clients: client"
                " credentials; the token acts as the application's user. Tokens are revoked at"
                " /o/revoke_token/ and introspected at /o/introspect/. Send"
                " `Authorization: Bearer <token>`."
            ),
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": "/o/authorize/",
                    "tokenUrl": "/o/token/",
                    "refreshUrl": "/o/token/",
                    "scopes": scopes,
                },
                "clientCredentials": {"tokenUrl": "/o/token/", "scopes": scopes},
            },
        }

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[str]] | None:
        scopes = _scopes_for(auto_schema)
        return None if scopes is None else {self.name: scopes}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.ApiKeyAuthentication"
    match_subclasses = True
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Api-Key <key>`: a key made by staff (admin or `manage.py api_keys`), acting for"
                " its user within its scopes (see each operation's `x-required-scopes`)."
            ),
        }

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[str]] | None:
        # OpenAPI 3.0 lets only oauth2 requirements list scopes; the key's scope is in the
        # operation's `x-required-scopes` (added by document_scopes).
        return None if _scopes_for(auto_schema) is None else {self.name: []}


class JwtBearerScheme(OpenApiAuthenticationExtension):
    target_class = "rest_framework_simplejwt.authentication.JWTAuthentication"
    match_subclasses = True
    priority = 1
    name = "bearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "A JWT from /api/auth/token (short-lived; renew with /api/auth/token/refresh). It"
                " acts with all of its user's rights: no scopes."
            ),
        }

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[str]]:
        return {self.name: []}


def document_scopes(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: each operation that keys and tokens may call names its scope in
    `x-required-scopes` and in its description, since OpenAPI 3.0 has no place for an API key's
    scopes in `security`; an operation without authentication says so (`security: [{}]`)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            # No authentication class at all (the token endpoints, health): say it is anonymous.
            operation.setdefault("security", [{}])
            for requirement in operation.get("security", []):
                if "oauth2" in requirement:
                    scopes = requirement["oauth2"]
                    operation["x-required-scopes"] = scopes
                    note = (
                        f"API keys and OAuth tokens need the scope `{scopes[0]}`."
                        if scopes
                        else "API keys and OAuth tokens need no scope."
                    )
                    description = operation.get("description", "")
                    operation["description"] = f"{description}\n\n{note}" if description else note
                    break
    return result
