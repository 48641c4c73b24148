"""Root URLs: the shop pages, the admin, the API with its schema and docs."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.templatetags.static import static as static_url
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from access.jwt_apis import LogoutApi, TokenObtainApi, TokenRefreshApi
from core.exceptions import api_not_found
from monitoring.prometheus import prometheus_metrics
from payments.webhooks import stripe_webhook

api_patterns = [
    path("", include("orders.api_urls")),
    path("payments/", include("payments.api_urls")),
    path("integrations/", include("integrations.api_urls")),
    path("monitoring/", include("monitoring.api_urls")),
    path("auth/token", TokenObtainApi.as_view(), name="token_obtain_pair"),
    path("auth/token/refresh", TokenRefreshApi.as_view(), name="token_refresh"),
    path("auth/logout", LogoutApi.as_view(), name="token_logout"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # No OPTIONS metadata: its HTML-only renderer has no template for it (an OPTIONS was a 500).
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema", metadata_class=None), name="swagger-ui"),
    # Anything else under /api/ answers in JSON too, in every mode.
    re_path(r"^.*$", api_not_found),
]


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on every page whatever the <link rel="icon">: the static one."""
    return redirect(static_url("favicon.ico"))


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("o/", include("access.oauth_urls")),  # OAuth 2.0: authorize, token, revoke_token, introspect
    path("webhooks/stripe", stripe_webhook, name="stripe-webhook"),
    path("accounts/", include("orders.account_urls")),
    path("ops/", include("monitoring.urls")),
    path("live/", include("live.urls")),  # server-sent events: async views (see config/asgi.py)
    path("metrics", prometheus_metrics, name="prometheus-metrics"),
    path("", include("payments.urls")),  # /orders/<id>/pay/...: before the order pages
    path("", include("orders.urls")),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

handler404 = "core.exceptions.handler404"
handler500 = "core.exceptions.handler500"
