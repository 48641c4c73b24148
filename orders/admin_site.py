"""The project's admin site: Django's, with the one order admin (`orders.admin.views`) mounted
at /admin/orders/order/ and listed on the index as "Orders".

`orders.apps.CisAdminConfig` installs it as the default site, so `admin.site` and
`@admin.register` everywhere are this site. Orders are not shown by a ModelAdmin because they are
read through the `OrderRepository`, which may keep them outside the database (DynamoDB).

This module is not inside the `orders.admin` package on purpose: Django imports the default
site's class when `admin.site` is first used, and importing that package registers ModelAdmins on
`admin.site`, which would ask for the site again while it is being made. The order admin's views
are imported when the URLs are first built, after every admin module was imported.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern, URLResolver, reverse


class CisAdminSite(admin.AdminSite):
    # The index's app list again down the left of every page takes 300 px of a 1280 px screen
    # from the lists (the ledger's last error went off-screen); the breadcrumbs lead back.
    enable_nav_sidebar = False

    def get_urls(self) -> list[URLPattern | URLResolver]:
        from orders.admin import views

        # First, so that the app index's catch-all never sees /orders/order/.
        return [*views.urls(self), *super().get_urls()]

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        from orders.admin import views

        app_list = super().get_app_list(request, app_label)
        entry = views.app_list_entry(request, self)
        if entry is None or app_label not in (None, "orders"):
            return app_list
        orders_app = next((app for app in app_list if app["app_label"] == "orders"), None)
        if orders_app is None:  # staff who may see orders but nothing else of the app
            app_config = entry["model"]._meta.app_config
            orders_app = {
                "name": app_config.verbose_name,
                "app_label": app_config.label,
                "app_url": reverse("admin:app_list", kwargs={"app_label": "orders"}, current_app=self.name),
                "has_module_perms": True,
                "models": [],
            }
            app_list.append(orders_app)
            app_list.sort(key=lambda app: app["name"].lower())
        orders_app["models"].append(entry)
        orders_app["models"].sort(key=lambda model: model["name"])
        return app_list
