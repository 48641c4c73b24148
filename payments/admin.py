"""Staff screens for payments: each order's payments and refunds on its admin page, refunds
through the same service as the API, read-only lists of payments and refunds, and the stored
webhook events with a replay action.

Payments point at orders by id (orders may live outside this database) and `orders` must not
import `payments`, so the one order admin (`orders.admin`) is extended from here, through its
registry: the payments panel, "Refund in full", "Refund an amount…" for the selected orders, and
the refund page of one order (`admin:orders_order_refund`).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME, ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.errors import ApplicationError
from orders import services as order_services
from orders.admin.forms import MoneyField
from orders.admin.registry import (
    OrderAdminAction,
    OrderAdminPage,
    OrderAdminPanel,
    register_order_admin_action,
    register_order_admin_page,
    register_order_admin_panel,
)
from orders.domain import Order, order_reference
from orders.money import decimal_text, format_money
from payments import selectors, services
from payments.gateways.base import GatewayError
from payments.models import Payment, Refund, RefundStatus, WebhookEvent, WebhookRefusal

REFUND_TEMPLATE = "admin/payments/refund.html"
REFUND_PERMISSION = "payments.add_refund"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written only by the services: staff may look, never add, edit or delete."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _order_link(order_id: uuid.UUID) -> SafeString:
    """The order's short reference (as customers see it), linking to its admin page; the whole
    id in the title."""
    return format_html(
        '<a class="order-ref" href="{}" title="{}">{}</a>',
        reverse("admin:orders_order_change", args=[order_id]),
        order_id,
        order_reference(order_id),
    )


def _payment_link(payment: Payment, text: Any) -> SafeString:
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:payments_payment_change", args=[payment.pk]), text
    )


# --- the order's page: its payments and refunds ---------------------------------------------
def payments_panel(request: HttpRequest, order: Order) -> SafeString | str:
    """The order's payments and refunds as HTML tables, with a link to its refund page while
    something is left to refund (for staff who may refund)."""
    payments = list(selectors.payments_of_order(order_id=order.id))
    if not payments:
        return "No payment yet."
    payment_rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                _payment_link(p, p.attempt),
                p.get_status_display(),
                p.intent_id or "—",
                format_money(p.amount_minor, p.currency),
                format_money(p.amount_received_minor, p.currency),
                format_money(selectors.refunded_minor(p), p.currency),
                p.failure_message or p.failure_code or "",
            )
            for p in payments
        ),
    )
    refunds = [(p, r) for p in payments for r in p.refunds.all()]
    refund_rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                p.attempt,
                format_money(r.amount_minor, p.currency),
                r.get_status_display(),
                r.actor,
                r.reason,
                r.provider_refund_id or r.failure_message or "",
            )
            for p, r in refunds
        ),
    )
    refunds_table = (
        format_html(
            '<table class="payments-refunds"><caption>Refunds</caption><thead><tr><th>When</th>'
            "<th>Attempt</th><th>Amount</th><th>Status</th><th>Actor</th><th>Reason</th>"
            "<th>Stripe refund / error</th></tr></thead><tbody>{}</tbody></table>",
            refund_rows,
        )
        if refunds
        else format_html("<p>{}</p>", "No refunds.")
    )
    position = selectors.refund_position(order.id)
    refund_link = (
        format_html(
            '<p><a class="button" id="refund-link" href="{}">Refund…</a> Refundable: {} of {} paid.</p>',
            reverse("admin:orders_order_refund", args=[order.id]),
            format_money(position["left"], position["currency"]),
            format_money(position["paid"], position["currency"]),
        )
        if request.user.has_perm(REFUND_PERMISSION) and position["left"] > 0
        else ""
    )
    return format_html(
        '<table class="payments-payments"><thead><tr><th>Attempt</th><th>Status</th>'
        "<th>Stripe PaymentIntent</th><th>Amount</th><th>Received</th><th>Refunded</th>"
        "<th>Failure</th></tr></thead><tbody>{}</tbody></table>{}{}",
        payment_rows,
        refunds_table,
        refund_link,
    )


# --- refunds --------------------------------------------------------------------------------
def refund_orders(
    request: HttpRequest, orders: Sequence[Order], *, amount_minor: int | None, reason: str
) -> None:
    """Refund each order through the service (all that is left when `amount_minor` is None);
    every outcome becomes an admin message, with the order's short reference and money."""
    for order in orders:
        try:
            refund = services.payment_refund(
                order_id=order.id,
                actor=order_services.actor_for(request.user),
                amount_minor=amount_minor,
                reason=reason,
                requested_by=request.user,
            )
        except ApplicationError as exc:
            messages.error(request, f"Order {order.reference} not refunded: {exc.message}")
        except GatewayError as exc:
            messages.error(request, f"Order {order.reference} not refunded: {exc}")
        else:
            amount = format_money(refund.amount_minor, refund.payment.currency)
            text = f"Order {order.reference}: refund of {amount}"
            if refund.status == RefundStatus.SUCCEEDED:
                messages.success(request, f"{text} succeeded.")
            elif refund.status == RefundStatus.PENDING:
                messages.warning(request, f"{text} is pending at Stripe.")
            else:
                detail = f": {refund.failure_message}" if refund.failure_message else ""
                messages.error(request, f"{text} {refund.status}{detail}.")


def refund_positions(orders: Sequence[Order]) -> list[dict[str, Any]]:
    """Each order's paid, refunded and refundable amounts, in minor units and as money."""
    rows = []
    for order in orders:
        position = selectors.refund_position(order.id)
        currency = position["currency"] or order.currency
        rows.append(
            {
                "id": order.id,
                "reference": order.reference,
                "status": order.status,
                **position,
                "currency": currency,
                "paid_text": format_money(position["paid"], currency),
                "refunded_text": format_money(position["refunded"], currency),
                "left_text": format_money(position["left"], currency),
            }
        )
    return rows


class RefundForm(forms.Form):
    """An amount in the order's currency ("12.50"), or everything that is left as an explicit
    choice: an empty amount never refunds everything by itself."""

    amount = MoneyField(label="Amount", required=False, maximum_message="At most {maximum} can be refunded.")
    refund_all = forms.BooleanField(label="Refund everything that is left", required=False)
    reason = forms.CharField(
        max_length=500,
        required=False,
        help_text="Kept for staff; the customer does not see it.",
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
    )

    def __init__(self, *args: Any, positions: Sequence[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order_count = len(positions)
        amount = self.fields["amount"]
        if len(positions) == 1:
            position = positions[0]
            amount.currency = position["currency"]
            amount.maximum = position["left"]
            amount.label = f"Amount ({position['currency']})"
            example = decimal_text(min(position["left"], 1250) or 1250, position["currency"])
            amount.help_text = (
                f"In {position['currency']}, such as {example}; at most {position['left_text']}."
            )
            self.fields["refund_all"].label = f"Refund everything that is left ({position['left_text']})"
        else:
            amount.help_text = "An amount can only be given for one order."

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "amount" not in data:  # the amount's own error is shown
            return data
        amount, everything = data.get("amount"), data.get("refund_all")
        if amount is not None and self.order_count > 1:
            raise forms.ValidationError(
                "An amount can only be given for one order; tick “Refund everything that is left” to "
                "refund each in full."
            )
        if amount is not None and everything:
            raise forms.ValidationError("Give an amount or tick “Refund everything that is left”, not both.")
        if amount is None and not everything:
            raise forms.ValidationError(
                "Enter the amount to refund, or tick “Refund everything that is left”."
            )
        return data


def refund_in_full(request: HttpRequest, orders: Sequence[Order]) -> None:
    refund_orders(request, orders, amount_minor=None, reason="")


def refund_amount(request: HttpRequest, orders: Sequence[Order]) -> HttpResponse | None:
    """The selected orders' refund form; once applied, back to the list with the outcomes."""
    positions = refund_positions(orders)
    form = RefundForm(request.POST if "apply" in request.POST else None, positions=positions)
    if _refund_with(request, orders, form):
        return None
    return _refund_page(request, positions, form, via_action=True)


def refund_page(request: HttpRequest, order: Order) -> HttpResponse:
    """The refund page of one order, linked from its payments panel; back to the order after."""
    positions = refund_positions([order])
    form = RefundForm(request.POST if request.method == "POST" else None, positions=positions)
    if _refund_with(request, [order], form):
        return HttpResponseRedirect(reverse("admin:orders_order_change", args=[order.id]))
    return _refund_page(request, positions, form, via_action=False)


def _refund_with(request: HttpRequest, orders: Sequence[Order], form: RefundForm) -> bool:
    """Refund the orders as the (bound, valid) form says; False when there is nothing to apply."""
    if not form.is_valid():
        return False
    refund_orders(
        request,
        orders,
        amount_minor=None if form.cleaned_data["refund_all"] else form.cleaned_data["amount"],
        reason=form.cleaned_data["reason"],
    )
    return True


def _refund_page(
    request: HttpRequest, positions: Sequence[dict[str, Any]], form: RefundForm, *, via_action: bool
) -> TemplateResponse:
    one = positions[0] if len(positions) == 1 else None
    context = {
        **admin.site.each_context(request),
        "title": f"Refund order {one['reference']}" if one else "Refund orders",
        "rows": positions,
        "one": one,
        "form": form,
        "via_action": via_action,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "media": form.media,
        "confirm": (
            f"Refund order {one['reference']} now? The money goes back to the customer's card; "
            "this cannot be undone."
            if one
            else f"Refund these {len(positions)} orders now? This cannot be undone."
        ),
    }
    return TemplateResponse(request, REFUND_TEMPLATE, context)


register_order_admin_panel(
    OrderAdminPanel(name="payments", title="Payments and refunds", render=payments_panel)
)
register_order_admin_action(
    OrderAdminAction(
        name="refund_in_full",
        label="Refund in full",
        handler=refund_in_full,
        permission=REFUND_PERMISSION,
        confirm="Refund all that is left of this order's payment now? This cannot be undone.",
    )
)
register_order_admin_action(
    OrderAdminAction(
        name="refund_amount",
        label="Refund an amount…",
        handler=refund_amount,
        permission=REFUND_PERMISSION,
        on_page=False,  # the order's page links to its refund page instead
    )
)
register_order_admin_page(OrderAdminPage(name="refund", view=refund_page, permission=REFUND_PERMISSION))


# --- payments and refunds -------------------------------------------------------------------
class RefundInline(admin.TabularInline):
    model = Refund
    extra = 0
    can_delete = False
    fields = ["created_at", "amount", "status", "actor", "requested_by", "reason", "provider_refund_id"]
    readonly_fields = fields

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, refund: Refund) -> str:
        return format_money(refund.amount_minor, refund.payment.currency)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ConfirmingSelect(forms.Select):
    """A select whose options named in `confirm` carry a `data-confirm` question, which
    static/js/confirm-buttons.js asks before the form's submit button runs that action."""

    def __init__(self, *args: Any, confirm: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.confirm = confirm

    def create_option(self, name: str, value: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        option = super().create_option(name, value, *args, **kwargs)
        if str(value) in self.confirm:
            option["attrs"]["data-confirm"] = self.confirm[str(value)]
        return option


class PaymentActionForm(ActionForm):
    action = forms.ChoiceField(
        label="Action:",
        widget=ConfirmingSelect(
            confirm={
                "refuse_held": "Refuse the selected held payments and refund them in full now? "
                "This cannot be undone."
            }
        ),
    )


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "order",
        "attempt",
        "status",
        "provider",
        "amount",
        "amount_received",
        "intent_id",
        "failure_code",
    ]
    list_filter = ["status", "provider", "currency", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "order_id", "intent_id"]
    date_hierarchy = "created_at"
    inlines = [RefundInline]
    actions = ["accept_held", "refuse_held"]
    action_form = PaymentActionForm

    class Media:
        css = {"all": ["css/admin-order.css"]}  # the short order reference, never wrapped
        js = ["js/confirm-buttons.js"]  # refusing held payments (a refund) asks first

    # The client secret lets a browser confirm the payment: not shown.
    fields = [
        "id",
        "order",
        "attempt",
        "provider",
        "status",
        "intent_id",
        "payment_method",
        "amount",
        "amount_received",
        "currency",
        "failure_code",
        "failure_message",
        "review_reason",
        "last_event_created",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    @admin.display(description="Order", ordering="order_id")
    def order(self, payment: Payment) -> SafeString:
        return _order_link(payment.order_id)

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, payment: Payment) -> str:
        return format_money(payment.amount_minor, payment.currency)

    @admin.display(description="Received", ordering="amount_received_minor")
    def amount_received(self, payment: Payment) -> str:
        return format_money(payment.amount_received_minor, payment.currency)

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.add_refund")

    @admin.action(description="Accept held payments (their orders become paid)", permissions=["decide"])
    def accept_held(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        self._decide(request, queryset, accept=True)

    @admin.action(description="Refuse held payments (refund them in full)", permissions=["decide"])
    def refuse_held(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        self._decide(request, queryset, accept=False)

    def _decide(self, request: HttpRequest, queryset: QuerySet[Payment], *, accept: bool) -> None:
        done = 0
        for payment in queryset:
            try:
                services.payment_review_decide(
                    payment_id=payment.id, accept=accept, actor=order_services.actor_for(request.user)
                )
            except ApplicationError as exc:
                self.message_user(request, f"Payment {payment.id}: {exc}", messages.ERROR)
            else:
                done += 1
        if done:
            verb = "accepted" if accept else "refused and refunded"
            self.message_user(request, f"{done} held payment(s) {verb}.", messages.SUCCESS)


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "order",
        "payment_attempt",
        "amount",
        "status",
        "actor",
        "requested_by",
        "provider_refund_id",
        "flag",
    ]
    list_filter = ["status", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=id", "provider_refund_id", "payment__order_id", "payment__intent_id"]
    list_select_related = ["payment", "requested_by"]

    class Media:
        css = {"all": ["css/admin-order.css"]}  # the short order reference, never wrapped

    fields = [
        "id",
        "order",
        "payment_attempt",
        "amount",
        "currency",
        "status",
        "reason",
        "actor",
        "requested_by",
        "provider_refund_id",
        "failure_message",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    @admin.display(description="Order", ordering="payment__order_id")
    def order(self, refund: Refund) -> SafeString:
        return _order_link(refund.payment.order_id)

    @admin.display(description="Payment", ordering="payment__attempt")
    def payment_attempt(self, refund: Refund) -> SafeString:
        return _payment_link(refund.payment, f"attempt {refund.payment.attempt}")

    @admin.display(description="Currency")
    def currency(self, refund: Refund) -> str:
        return refund.payment.currency

    @admin.display(description="Amount", ordering="amount_minor")
    def amount(self, refund: Refund) -> str:
        return format_money(refund.amount_minor, refund.payment.currency)


# --- webhook events -------------------------------------------------------------------------
class ProcessedFilter(admin.SimpleListFilter):
    title = "processed"
    parameter_name = "processed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Processed"), ("no", "Not processed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> QuerySet[WebhookEvent]:
        if self.value() == "yes":
            return queryset.filter(processed_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(processed_at__isnull=True)
        return queryset


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "type",
        "result",
        "processed",
        "deliveries",
        "attempts",
        "received_at",
        "processed_at",
    ]
    list_filter = ["type", "result", ProcessedFilter, ("received_at", admin.DateFieldListFilter)]
    search_fields = ["=event_id"]
    date_hierarchy = "received_at"
    actions = ["replay_events"]
    fields = [
        "event_id",
        "provider",
        "type",
        "created",
        "received_at",
        "deliveries",
        "attempts",
        "processed_at",
        "result",
        "error_text",
        "payload_json",
    ]
    readonly_fields = fields

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.change_webhookevent")

    @admin.display(description="Processed", boolean=True, ordering="processed_at")
    def processed(self, event: WebhookEvent) -> bool:
        return event.processed_at is not None

    @admin.display(description="Error")
    def error_text(self, event: WebhookEvent) -> SafeString | str:
        return format_html("<pre>{}</pre>", event.error) if event.error else "—"

    @admin.display(description="Payload")
    def payload_json(self, event: WebhookEvent) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, sort_keys=True))

    @admin.action(description="Replay selected events", permissions=["replay"])
    def replay_events(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        results: Counter[str] = Counter()
        failures = 0
        for event in queryset.order_by("created", "received_at"):
            try:
                done = services.webhook_process(event_pk=event.pk, again=True)
            except Exception as exc:  # noqa: BLE001 - recorded on the event; reported to the user
                failures += 1
                self.message_user(
                    request,
                    f"{event.event_id} ({event.type}) failed again: {type(exc).__name__}: {exc}",
                    messages.ERROR,
                )
            else:
                results[done.result] += 1
        if results:
            summary = ", ".join(f"{count} {result}" for result, count in sorted(results.items()))
            self.message_user(
                request, f"Replayed {sum(results.values())} event(s): {summary}.", messages.SUCCESS
            )
        if failures:
            self.message_user(
                request, f"{failures} event(s) failed again; their errors are stored on them.", messages.ERROR
            )


@admin.register(WebhookRefusal)
class WebhookRefusalAdmin(ReadOnlyAdmin):
    """Requests the webhook endpoint refused (kept for operators, without their bodies): a
    burst of them is a misconfigured secret, a clock that drifted, or someone probing."""

    list_display = ["received_at", "provider", "reason", "size", "source", "signed"]
    list_filter = ["provider", "signed", ("received_at", admin.DateFieldListFilter)]
    search_fields = ["reason", "source"]
    date_hierarchy = "received_at"
    fields = list_display
    readonly_fields = fields
