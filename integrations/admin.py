"""Staff screens for the fan-out: the delivery ledger with its dead letters, circuit changes,
and, on each order's page, its deliveries and a "resend confirmation email" action.

`orders` and `payments` must not import `integrations`, so the one order admin (`orders.admin`)
is extended from here through its registry, as `payments.admin` does for payments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from integrations import services
from integrations.models import CircuitEvent, Delivery, DeliveryState
from orders import services as order_services
from orders.admin.registry import (
    OrderAdminAction,
    OrderAdminPanel,
    each_order,
    register_order_admin_action,
    register_order_admin_panel,
)
from orders.domain import Order


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "integration",
        "event_type",
        "order_id",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error_short",
        "external_id",
    ]
    list_filter = ["state", "integration", "event_type", "last_error_class", "last_provider_status"]
    search_fields = ["=order_id", "=idempotency_key", "external_id", "last_error_message"]
    date_hierarchy = "created_at"
    actions = ["retry", "retry_all_matching"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Last error")
    def last_error_short(self, delivery: Delivery) -> str:
        text = (
            f"{delivery.last_error_class}: {delivery.last_error_message}" if delivery.last_error_class else ""
        )
        return text[:120]

    @admin.action(description="Retry the selected dead or retrying deliveries now")
    def retry(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        done = 0
        for delivery in queryset.filter(state__in=[DeliveryState.DEAD, DeliveryState.RETRYING]):
            services.delivery_retry(delivery_id=delivery.id, actor=order_services.actor_for(request.user))
            done += 1
        skipped = queryset.count() - done
        self.message_user(
            request, f"{done} delivery(ies) queued again; {skipped} skipped (not dead or retrying)."
        )

    @admin.action(description="Retry all dead deliveries matching the current filters")
    def retry_all_matching(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        # The action applies to the whole filtered list, not only the rows ticked on this page.
        changelist = self.get_changelist_instance(request)
        matching = changelist.get_queryset(request).filter(state=DeliveryState.DEAD)
        count = 0
        for delivery_id in matching.values_list("id", flat=True):
            services.delivery_retry(delivery_id=delivery_id, actor=order_services.actor_for(request.user))
            count += 1
        self.message_user(request, f"{count} dead delivery(ies) matching the filters queued again.")


@admin.register(CircuitEvent)
class CircuitEventAdmin(admin.ModelAdmin):
    list_display = ["at", "integration", "from_state", "to_state", "reason"]
    list_filter = ["integration", "to_state"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- the order's page: its deliveries, and resending the confirmation email ----------------
def deliveries_panel(request: HttpRequest, order: Order) -> SafeString:
    """The order's deliveries (one row per integration, event and version) as an HTML table."""
    rows = Delivery.objects.filter(order_id=order.id).order_by("created_at")
    if not rows:
        return format_html("{}", "None yet.")
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                d.integration,
                d.event_type,
                d.order_version,
                d.state,
                d.attempts,
                d.external_id or "",
                f"{d.last_error_class}: {d.last_error_message}"[:200] if d.last_error_class else "",
            )
            for d in rows
        ),
    )
    return format_html(
        "<table><tr><th>Integration</th><th>Event</th><th>Version</th><th>State</th><th>Attempts</th>"
        "<th>External id</th><th>Last error</th></tr>{}</table>",
        body,
    )


def resend_confirmation_email(request: HttpRequest, orders: Sequence[Order]) -> None:
    """Queue each order's confirmation email again; an order with none to resend is an error."""

    def resend(order: Order) -> str:
        delivery = services.delivery_resend_email(
            order_id=order.id, actor=order_services.actor_for(request.user)
        )
        return f"Order {order.id}: confirmation email queued again ({delivery.id})."

    each_order(request, orders, resend)


register_order_admin_panel(
    OrderAdminPanel(
        name="deliveries", title="Deliveries (email, sheet, notification)", render=deliveries_panel
    )
)
register_order_admin_action(
    OrderAdminAction(
        name="resend_confirmation_email",
        label="Resend the confirmation email",
        handler=resend_confirmation_email,
    )
)
