"""OAuth 2.0 endpoints under /o/: only the ones this site offers (no self-service application
registration, no device flow, no OpenID Connect). Applications are registered by staff in the
admin.

The token, revocation and introspection endpoints take client secrets, codes and tokens: their
POSTs draw on the token budget per source address (RATE_LIMIT_TOKEN_REFRESH), like the JWT
refresh endpoint."""

from django.urls import path
from oauth2_provider import views

from access.oauth import ConsentView
from access.throttling import rate_limit

app_name = "oauth2_provider"
token_budget = rate_limit("token_refresh", methods=("POST",), per="address")

urlpatterns = [
    path("authorize/", ConsentView.as_view(), name="authorize"),
    path("token/", token_budget(views.TokenView.as_view()), name="token"),
    path("revoke_token/", token_budget(views.RevokeTokenView.as_view()), name="revoke-token"),
    path("introspect/", token_budget(views.IntrospectTokenView.as_view()), name="introspect"),
]
