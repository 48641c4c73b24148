"""OAuth 2.0 endpoints under /o/: only the ones this site offers (no self-service application
registration, no device flow, no OpenID Connect). Applications are registered by staff in the
admin."""

from django.urls import path
from oauth2_provider import views

from access.oauth import ConsentView

app_name = "oauth2_provider"

urlpatterns = [
    path("authorize/", ConsentView.as_view(), name="authorize"),
    path("token/", views.TokenView.as_view(), name="token"),
    path("revoke_token/", views.RevokeTokenView.as_view(), name="revoke-token"),
    path("introspect/", views.IntrospectTokenView.as_view(), name="introspect"),
]
