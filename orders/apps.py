from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class OrdersConfig(AppConfig):
    default = True  # "orders" in INSTALLED_APPS is this one, not the admin's below
    name = "orders"
    verbose_name = "Orders and catalog"


class CisAdminConfig(admin_apps.AdminConfig):
    """Django's admin with the project's site (`orders.admin_site.CisAdminSite`) as `admin.site`:
    installed in place of "django.contrib.admin"."""

    default = False
    default_site = "orders.admin_site.CisAdminSite"
