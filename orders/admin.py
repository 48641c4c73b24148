"""Staff screens: the catalog, and orders managed through the same services as the API.

`OrderAdmin` shows the ORM adapter's tables. The order store pages (`orders.admin_repository`,
mounted at /admin/orders/store/) read orders through the configured repository instead, so they
also work when another adapter (DynamoDB) stores the orders; then `OrderAdmin` sends staff there.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html

from orders import admin_repository, models, services
from orders.domain import OrderError, OrderStatus, ShippingAddress
from orders.repositories import get_order_repository


@admin.register(models.Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price_display", "currency", "stock", "active"]
    list_filter = ["active", "currency"]
    search_fields = ["sku", "name"]
    list_editable = ["active"]

    @admin.display(description="Price", ordering="price_minor")
    def price_display(self, product: models.Product) -> str:
        return f"{product.price_minor / 100:.2f}"


class OrderLineInline(admin.TabularInline):
    model = models.OrderLine
    extra = 0
    can_delete = False
    fields = ["position", "sku", "name", "unit_price_minor", "quantity"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OrderEventInline(admin.TabularInline):
    """The audit trail, read-only: events are never changed or removed."""

    model = models.OrderEvent
    extra = 0
    can_delete = False
    fields = ["sequence", "created_at", "type", "from_status", "to_status", "actor", "data"]
    readonly_fields = fields
    ordering = ["sequence"]
    verbose_name_plural = "Event timeline"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _transition_action(to_status: OrderStatus) -> Any:
    """An admin action applying one status transition to each selected order, via the service."""

    def action(modeladmin: OrderAdmin, request: HttpRequest, queryset: QuerySet[models.Order]) -> None:
        done, refused = 0, []
        for order_id in queryset.values_list("id", flat=True):
            try:
                services.order_transition(
                    repository=get_order_repository(),
                    order_id=order_id,
                    to_status=to_status,
                    actor=services.actor_for(request.user),
                    data={"via": "admin"},
                )
                done += 1
            except OrderError as exc:
                refused.append(exc.message)
        if done:
            modeladmin.message_user(request, f"{done} order(s) marked {to_status.label.lower()}.")
        for message in refused:
            modeladmin.message_user(request, message, level=messages.ERROR)

    action.__name__ = f"mark_{to_status.value}"
    return admin.action(description=f"Mark selected orders: {to_status.label.lower()}")(action)


@admin.register(models.Order)
class OrderAdmin(admin.ModelAdmin):
    """The ORM tables' view of orders. When another repository adapter stores the orders these
    tables are empty, so the list and change pages send staff to the order store pages
    (`orders.admin_repository`), which work with every adapter."""

    change_list_template = "admin/orders/store/order_change_list.html"
    list_display = ["id", "created_at", "email", "status", "total_display", "currency", "customer"]
    list_filter = ["status", ("created_at", admin.DateFieldListFilter), "currency"]
    search_fields = ["id", "email", "customer__username", "customer__email"]
    date_hierarchy = "created_at"
    inlines = [OrderLineInline, OrderEventInline]
    actions = [_transition_action(status) for status in OrderStatus]
    readonly_fields = [
        "id",
        "status",
        "customer",
        "email",
        "currency",
        "subtotal_minor",
        "shipping_minor",
        "total_minor",
        "version",
        "created_at",
        "updated_at",
        "idempotency_key",
    ]
    fieldsets = [
        (None, {"fields": ["id", "status", "customer", "email", "version", "created_at", "updated_at"]}),
        ("Money (minor units)", {"fields": ["currency", "subtotal_minor", "shipping_minor", "total_minor"]}),
        ("Editable", {"fields": ["shipping_address", "notes"]}),
        ("Request", {"fields": ["idempotency_key"], "classes": ["collapse"]}),
    ]

    @admin.display(description="Total", ordering="total_minor")
    def total_display(self, order: models.Order) -> str:
        return format_html("{}", f"{order.total_minor / 100:.2f}")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not admin_repository.orm_backed():
            return HttpResponseRedirect(admin_repository.store_list_url())
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if not admin_repository.orm_backed():
            try:
                return HttpResponseRedirect(admin_repository.store_detail_url(uuid.UUID(object_id)))
            except ValueError:
                return HttpResponseRedirect(admin_repository.store_list_url())
        return super().change_view(request, object_id, form_url, extra_context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # orders are placed through the shop or the API, which price them

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # orders are cancelled, never deleted

    def save_model(self, request: HttpRequest, obj: models.Order, form: Any, change: bool) -> None:
        """Edits go through the service, so they are versioned and audited like the API's."""
        try:
            services.order_update(
                repository=get_order_repository(),
                order_id=obj.id,
                actor=services.actor_for(request.user),
                shipping_address=ShippingAddress.from_dict(form.cleaned_data["shipping_address"]),
                notes=form.cleaned_data["notes"],
            )
        except (OrderError, KeyError, TypeError) as exc:
            messages.error(request, f"Not saved: {exc}")


# /admin/orders/store/: orders through the repository, whichever adapter stores them.
admin_repository.install(admin.site)


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
