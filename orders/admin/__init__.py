"""Staff screens of the orders app: the catalog and the outbox as ModelAdmins of their tables,
and the one order admin (`orders.admin.views`), which reads orders through the repository and
which other apps extend through `orders.admin.registry`. The admin site
(`orders.admin_site.CisAdminSite`) mounts it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.forms import CharField, ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from orders import models

# A name, not the module: `orders.admin.forms` is this package's own (the order admin's forms).
from orders.admin.forms import parse_money
from orders.domain import order_reference
from orders.money import decimal_text, format_money


class ProductForm(ModelForm):
    """The price typed as money in the product's currency ("14.50"; JPY none), not minor units."""

    price = CharField(
        max_length=32, help_text="In the product's currency, such as 14.50 (JPY: 1450, no decimals)."
    )

    class Meta:
        model = models.Product
        fields = ["sku", "name", "description", "price", "currency", "stock", "active", "image"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["price"] = decimal_text(self.instance.price_minor, self.instance.currency)

    def clean_currency(self) -> str:
        return self.cleaned_data["currency"].strip().upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("price") and data.get("currency"):
            try:
                data["price_minor"] = parse_money(data["price"], data["currency"])
            except ValidationError as exc:
                self.add_error("price", exc)
        return data

    def save(self, commit: bool = True) -> models.Product:
        if "price_minor" in self.cleaned_data:
            self.instance.price_minor = self.cleaned_data["price_minor"]
        return super().save(commit=commit)


@admin.register(models.Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductForm
    list_display = ["sku", "name", "price_display", "currency", "stock", "active"]
    list_filter = ["active", "currency"]
    search_fields = ["sku", "name"]
    list_editable = ["active"]

    @admin.display(description="Price", ordering="price_minor")
    def price_display(self, product: models.Product) -> str:
        return format_money(product.price_minor, product.currency)


@admin.register(models.OutboxEntry)
class OutboxEntryAdmin(admin.ModelAdmin):
    list_display = ["id", "order_link", "event_type", "order_version", "created_at", "relayed_at"]
    list_filter = ["event_type", ("relayed_at", admin.EmptyFieldListFilter)]
    search_fields = ["order__id"]

    class Media:
        css = {"all": ["css/admin-order.css"]}  # the short order reference, never wrapped

    @admin.display(description="Order", ordering="order_id")
    def order_link(self, entry: models.OutboxEntry) -> SafeString:
        return format_html(
            '<a class="order-ref" href="{}" title="{}">{}</a>',
            reverse("admin:orders_order_change", args=[entry.order_id]),
            entry.order_id,
            order_reference(entry.order_id),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
