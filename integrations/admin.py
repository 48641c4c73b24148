"""Staff screens for the fan-out: the delivery ledger with its dead letters, circuit changes,
and, on each order's page, its deliveries and a "resend confirmation email" action.

`orders` and `payments` must not import `integrations`, so the one order admin (`orders.admin`)
is extended from here through its registry, as `payments.admin` does for payments.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from integrations import services
from integrations.models import CLAIMABLE_STATES, CircuitEvent, Delivery, DeliveryState
from orders import services as order_services
from orders.admin.registry import (
    OrderAdminAction,
    OrderAdminPanel,
    each_order,
    register_order_admin_action,
    register_order_admin_panel,
)
from orders.domain import Order, order_reference

# Long texts in list columns: cut at this many characters, the whole text in the title.
SHORT_TEXT = 80


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "created",
        "integration",
        "event_type",
        "order_link",
        "state",
        "attempts_total",
        "last_error_short",
        "next_attempt",
        "external_id_short",
    ]
    list_filter = ["state", "integration", "event_type", "last_error_class", "last_provider_status"]
    search_fields = ["=order_id", "=idempotency_key", "external_id", "last_error_message"]
    date_hierarchy = "created_at"
    actions = ["retry", "retry_all_matching"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in Delivery._meta.fields] + list(COMPUTED_FIELDS)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The model's fields in their order, each computed one shown beside the fields it sums up.
        fields: list[str] = []
        for field in Delivery._meta.fields:
            fields += [name for name, before in COMPUTED_FIELDS.items() if before == field.name]
            fields.append(field.name)
        return fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    class Media:
        # Keeps the list readable at 1280 px: long texts cut short (see `short`).
        css = {"all": ["css/admin-order.css"]}

    @admin.display(description="Created", ordering="created_at")
    def created(self, delivery: Delivery) -> SafeString | str:
        return compact_time(delivery.created_at)

    @admin.display(description="Next attempt", ordering="next_attempt_at")
    def next_attempt(self, delivery: Delivery) -> SafeString | str:
        # Only a delivery a dispatcher may still claim has a next attempt (not a dead or sent one).
        if delivery.state not in CLAIMABLE_STATES:
            return "—"
        return compact_time(delivery.next_attempt_at)

    @admin.display(description="Order", ordering="order_id")
    def order_link(self, delivery: Delivery) -> SafeString:
        return format_html(
            '<a class="order-ref" href="{}" title="{}">{}</a>',
            reverse("admin:orders_order_change", args=[delivery.order_id]),
            delivery.order_id,
            order_reference(delivery.order_id),
        )

    @admin.display(description="Attempts", ordering=F("attempts") + F("earlier_attempts"))
    def attempts_total(self, delivery: Delivery) -> SafeString | str:
        return attempts_cell(delivery)

    @admin.display(description="Total attempts")
    def total_attempts_detail(self, delivery: Delivery) -> str:
        return attempts_in_words(delivery)

    @admin.display(description="Last error", ordering="last_error_at")
    def last_error_short(self, delivery: Delivery) -> SafeString | str:
        return last_error_cell(delivery)

    @admin.display(description="Last error is")
    def last_error_status(self, delivery: Delivery) -> str:
        return last_error_standing(delivery)

    @admin.display(description="External id", ordering="external_id")
    def external_id_short(self, delivery: Delivery) -> SafeString | str:
        return short(delivery.external_id or "")

    @admin.action(description="Retry the selected dead or retrying deliveries now")
    def retry(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        # Read the selection once: retrying changes the states a filtered queryset selects on.
        selected = list(queryset.values_list("id", "state"))
        retryable = [pk for pk, state in selected if state in (DeliveryState.DEAD, DeliveryState.RETRYING)]
        for delivery_id in retryable:
            services.delivery_retry(delivery_id=delivery_id, actor=order_services.actor_for(request.user))
        self._report(
            request, queued=len(retryable), skipped=[state for pk, state in selected if pk not in retryable]
        )

    @admin.action(description="Retry all dead deliveries matching the current filters")
    def retry_all_matching(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        # The action applies to the whole filtered list, not only the rows ticked on this page.
        changelist = self.get_changelist_instance(request)
        matching = list(changelist.get_queryset(request).values_list("id", "state"))
        dead = [pk for pk, state in matching if state == DeliveryState.DEAD]
        for delivery_id in dead:
            services.delivery_retry(delivery_id=delivery_id, actor=order_services.actor_for(request.user))
        self._report(
            request, queued=len(dead), skipped=[state for _, state in matching if state != DeliveryState.DEAD]
        )

    def _report(self, request: HttpRequest, *, queued: int, skipped: Sequence[str]) -> None:
        text = retry_summary(queued=queued, skipped=skipped)
        self.message_user(request, text, messages.SUCCESS if queued else messages.WARNING)


def deliveries(count: int) -> str:
    return f"{count} delivery" if count == 1 else f"{count} deliveries"


# Why a delivery was not retried, by its state.
SKIPPED_BECAUSE = {
    DeliveryState.SUCCEEDED: "already delivered",
    DeliveryState.PENDING: "already queued",
    DeliveryState.IN_FLIGHT: "being sent",
    DeliveryState.RETRYING: "retrying already",
    DeliveryState.SKIPPED: "not to be sent",
}


def retry_summary(*, queued: int, skipped: Sequence[str]) -> str:
    """What a retry did, in words, from the count queued and the states of those skipped:
    "1 delivery queued again.", "2 deliveries queued again; 1 skipped (already delivered).",
    "No delivery queued again; 3 skipped (already queued)."."""
    head = f"{deliveries(queued)} queued again" if queued else "No delivery queued again"
    if not skipped:
        return f"{head}."
    reasons = ", ".join(
        dict.fromkeys(SKIPPED_BECAUSE.get(DeliveryState(state), str(state)) for state in skipped)
    )
    return f"{head}; {len(skipped)} skipped ({reasons})."


def compact_time(moment: datetime | None) -> SafeString | str:
    """A time for a narrow list column, in the site's time zone: "12-01 16:02", the whole of it
    ("2026-12-01 16:02:05 UTC") in the title."""
    if moment is None:
        return "—"
    local = timezone.localtime(moment)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        local.isoformat(),
        full_time(moment),
        local.strftime("%m-%d %H:%M"),
    )


# The change page's computed fields, each shown just before the model field named here.
COMPUTED_FIELDS = {"total_attempts_detail": "attempts", "last_error_status": "last_error_at"}


def attempts_in_words(delivery: Delivery) -> str:
    """Every attempt, and how they split when staff asked for a retry: "5 (2 since staff retried
    it at 2026-12-01 16:02:05 UTC, 3 before)", or "3"."""
    total = delivery.total_attempts
    if not delivery.earlier_attempts and delivery.retried_at is None:
        return str(total)
    since = f"since staff retried it at {full_time(delivery.retried_at)}" if delivery.retried_at else "now"
    return f"{total} ({delivery.attempts} {since}, {delivery.earlier_attempts} before)"


def attempts_cell(delivery: Delivery) -> SafeString | str:
    """The total attempts for the list; the split between series, when there are two, in a title."""
    if not delivery.earlier_attempts and delivery.retried_at is None:
        return str(delivery.total_attempts)
    return format_html(
        '<span class="attempts-split" title="{}">{}</span>',
        attempts_in_words(delivery),
        delivery.total_attempts,
    )


def error_is_history(delivery: Delivery) -> bool:
    """The last failure came before the delivery succeeded: history, not its state now."""
    return delivery.state == DeliveryState.SUCCEEDED and bool(delivery.last_error_class)


def last_error_standing(delivery: Delivery) -> str:
    """Whether the last error is what is true now, in words, for the change page."""
    if not delivery.last_error_class:
        return "—"
    if error_is_history(delivery):
        return f"History: it came before it was delivered (at {full_time(delivery.succeeded_at)})."
    return f"Current: the delivery is {DeliveryState(delivery.state).label.lower()}."


def last_error_cell(delivery: Delivery, limit: int = SHORT_TEXT) -> SafeString | str:
    """The last error for a narrow column: when it happened (and, once the delivery has
    succeeded, under it that it came before), then the error cut short, whole in its title."""
    if not delivery.last_error_class:
        return ""
    history = error_is_history(delivery)
    return format_html(
        '<div class="error-when{}">{}{}</div>{}',
        " error-history" if history else "",
        compact_time(delivery.last_error_at),
        format_html('<span class="history-mark">{}</span>', "before it was delivered") if history else "",
        short(f"{delivery.last_error_class}: {delivery.last_error_message}", limit),
    )


def full_time(moment: datetime | None) -> str:
    """A whole time in the site's time zone: "2026-12-01 16:02:05 UTC"."""
    if moment is None:
        return "—"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


def short(text: str, limit: int = SHORT_TEXT) -> SafeString | str:
    """A long text cut to `limit` characters for a list column, the whole of it in the title."""
    if not text:
        return ""
    cut = text if len(text) <= limit else f"{text[: limit - 1]}…"
    return format_html('<span class="truncate" title="{}">{}</span>', text, cut)


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
                attempts_cell(d),
                d.external_id or "",
                last_error_cell(d, 200),
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
        return f"Order {order.reference}: confirmation email queued again ({delivery.id})."

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
