"""Staff screens of the orders app: the catalog and the outbox as ModelAdmins of their tables,
and the one order admin (`orders.admin.views`), which reads orders through the repository and
which other apps extend through `orders.admin.registry`. The admin site
(`orders.admin_site.CisAdminSite`) mounts it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from orders import models


@admin.register(models.Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price_display", "currency", "stock", "active"]
    list_filter = ["active", "currency"]
    search_fields = ["sku", "name"]
    list_editable = ["active"]

    @admin.display(description="Price", ordering="price_minor")
    def price_display(self, product: models.Product) -> str:
        return f"{product.price_minor / 100:.2f}"


@admin.register(models.OutboxEntry)
class OutboxEntryAdmin(admin.ModelAdmin):
    list_display = ["id", "order", "event_type", "order_version", "created_at", "relayed_at"]
    list_filter = ["event_type", ("relayed_at", admin.EmptyFieldListFilter)]
    search_fields = ["order__id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
