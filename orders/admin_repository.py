"""Staff pages for orders that work with every `OrderRepository` adapter.

The `OrderAdmin` in `orders/admin.py` is a ModelAdmin of the ORM tables, which stay empty when
orders live elsewhere (DynamoDB). These pages read and write orders only through the configured
repository and the same services and selectors as the API:

- `/admin/orders/store/`: one page of orders (`order_list`: status, date range, newest or
  oldest first, cursor pagination) and a search box: an exact order id always works
  (`repository.get`); email search works only while the ORM adapter stores the orders, because
  the repository port has no email index.
- `/admin/orders/store/<uuid>/`: the order, its lines and totals, the event timeline, forms to
  edit the shipping address and notes (`order_update`) or add a note (`order_add_note`), one
  button per legal status transition (`order_transition`), and the panels and actions other
  apps register here.

`orders` must not import `payments` or `integrations`, so they extend these pages from their
own admin modules (imported by Django's admin autodiscovery, after this one) by calling
`register_order_admin_panel` and `register_order_admin_action`.

`install(site)` mounts the pages in the admin site (with its login, look and each_context) and
lists them on the admin index; `orders/admin.py` calls it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.apps import apps
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from orders import models, services
from orders.domain import (
    TRANSITIONS,
    Order,
    OrderError,
    OrderNotFound,
    OrderStatus,
    OrderValidationError,
    ShippingAddress,
)
from orders.money import format_money
from orders.repositories import OrderRepository, get_order_repository
from orders.repositories.orm import DjangoOrderRepository
from orders.selectors import order_events, order_list

logger = logging.getLogger(__name__)

LIST_TEMPLATE = "admin/orders/store/list.html"
DETAIL_TEMPLATE = "admin/orders/store/detail.html"
PAGE_SIZE = 50
STORE_NAME = "Order store"
VIEW_PERMISSIONS = ("orders.view_order", "orders.change_order")
CHANGE_PERMISSION = "orders.change_order"


# --- extension points -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrderAdminPanel:
    """A section of the order's page: `render(request, order)` returns its (escaped) HTML."""

    name: str
    title: str
    render: Callable[[HttpRequest, Order], SafeString | str]


@dataclass(frozen=True, slots=True)
class OrderAdminAction:
    """A button on the order's page.

    `handler(request, order)` does the work through a service and returns the message to show
    as a success, or None when it reported through `django.contrib.messages` itself. An
    `OrderError` it raises is shown as an error message. Staff need `orders.change_order`, and
    `permission` too when it is set (for example "payments.add_refund"). `confirm`, when set,
    is asked in the browser first (for what cannot be undone).
    """

    name: str
    label: str
    handler: Callable[[HttpRequest, Order], str | None]
    permission: str = ""
    confirm: str = ""  # a question the browser asks before the button does anything


order_admin_panels: list[OrderAdminPanel] = []
order_admin_actions: list[OrderAdminAction] = []


def register_order_admin_panel(panel: OrderAdminPanel) -> None:
    """Add a panel to the order's page (one with the same name is replaced)."""
    _register(order_admin_panels, panel)


def register_order_admin_action(action: OrderAdminAction) -> None:
    """Add an action button to the order's page (one with the same name is replaced)."""
    _register(order_admin_actions, action)


def _register(registry: list[Any], item: Any) -> None:
    for index, existing in enumerate(registry):
        if existing.name == item.name:
            registry[index] = item
            return
    registry.append(item)


# --- where things are -----------------------------------------------------------------------
def orm_backed() -> bool:
    """True when the ORM adapter itself stores the orders (so the ORM `OrderAdmin` works)."""
    return type(get_order_repository()) is DjangoOrderRepository


def store_list_url() -> str:
    return reverse("admin:orders_store_list")


def store_detail_url(order_id: uuid.UUID) -> str:
    return reverse("admin:orders_store_detail", args=[order_id])


def can_view(user: Any) -> bool:
    return any(user.has_perm(permission) for permission in VIEW_PERMISSIONS)


def can_change(user: Any) -> bool:
    return bool(user.has_perm(CHANGE_PERMISSION))


# --- the list -------------------------------------------------------------------------------
class OrderStoreFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=254)
    status = forms.ChoiceField(choices=[("", "All"), *OrderStatus.choices()], required=False)
    created_from = forms.DateField(required=False, label="Created from")
    created_to = forms.DateField(required=False, label="Created to (inclusive)")
    sort = forms.ChoiceField(choices=[("newest", "Newest first"), ("oldest", "Oldest first")], required=False)
    cursor = forms.CharField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return data


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def _query_url(params: dict[str, str], **changes: str) -> str:
    merged = {key: value for key, value in {**params, **changes}.items() if value}
    return f"?{urlencode(merged)}" if merged else "?"


def list_view(request: HttpRequest, *, site: AdminSite) -> HttpResponse:
    if not can_view(request.user):
        raise PermissionDenied
    repository = get_order_repository()
    form = OrderStoreFilterForm(request.GET)
    data: dict[str, Any] = {}
    if form.is_valid():
        data = form.cleaned_data
    else:
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, f"Filters ignored: {error}")
    status = OrderStatus(data["status"]) if data.get("status") else None
    created_from = _start_of(data["created_from"]) if data.get("created_from") else None
    created_to = _start_of(data["created_to"] + timedelta(days=1)) if data.get("created_to") else None
    newest_first = data.get("sort") != "oldest"
    # The filters as they stand, for links; the cursor belongs to one page only.
    params = {
        "status": status.value if status else "",
        "created_from": data["created_from"].isoformat() if data.get("created_from") else "",
        "created_to": data["created_to"].isoformat() if data.get("created_to") else "",
        "sort": "" if newest_first else "oldest",
    }
    q = (data.get("q") or "").strip()
    cursor = data.get("cursor") or None
    note = ""
    next_cursor: str | None = None
    if q:
        orders, note = _search(
            repository,
            q,
            status=status,
            created_from=created_from,
            created_to=created_to,
            newest_first=newest_first,
        )
    else:
        try:
            page = order_list(
                repository=repository,
                user=request.user,
                status=status,
                created_from=created_from,
                created_to=created_to,
                newest_first=newest_first,
                limit=PAGE_SIZE,
                cursor=cursor,
            )
        except OrderValidationError as exc:  # a cursor from another listing, or tampered with
            messages.error(request, f"{_error_text(exc)} Showing the first page.")
            cursor = None
            page = order_list(
                repository=repository,
                user=request.user,
                status=status,
                created_from=created_from,
                created_to=created_to,
                newest_first=newest_first,
                limit=PAGE_SIZE,
            )
        orders, next_cursor = page.orders, page.next_cursor
    context = {
        **site.each_context(request),
        "app_name": apps.get_app_config("orders").verbose_name,
        "title": STORE_NAME,
        "subtitle": None,
        "backend": type(repository).__name__,
        "email_search": orm_backed(),
        "q": q,
        "note": note,
        "params": params,
        "rows": [_row(order) for order in orders],
        "next_url": _query_url(params, q=q, cursor=next_cursor) if next_cursor else "",
        "first_url": _query_url(params) if cursor else "",
        "status_choices": [
            {"label": "All", "url": _query_url(params, status=""), "selected": status is None},
            *(
                {"label": s.label, "url": _query_url(params, status=s.value), "selected": status == s}
                for s in OrderStatus
            ),
        ],
        "date_choices": _date_choices(params),
        "sort_choices": [
            {"label": "Newest first", "url": _query_url(params, sort=""), "selected": newest_first},
            {"label": "Oldest first", "url": _query_url(params, sort="oldest"), "selected": not newest_first},
        ],
        "filter_form": form,
        "orm_admin_url": reverse("admin:orders_order_changelist") if orm_backed() else "",
    }
    return TemplateResponse(request, LIST_TEMPLATE, context)


def _row(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "url": store_detail_url(order.id),
        "created_at": order.created_at,
        "email": order.email,
        "status": order.status,
        "total": format_money(order.total_minor, order.currency),
        "currency": order.currency,
        "customer_id": order.customer_id,
        "items": sum(line.quantity for line in order.lines),
    }


def _date_choices(params: dict[str, str]) -> list[dict[str, Any]]:
    today = timezone.localdate()
    ranges = [
        ("Any date", "", ""),
        ("Today", today.isoformat(), today.isoformat()),
        ("Past 7 days", (today - timedelta(days=7)).isoformat(), today.isoformat()),
        ("This month", today.replace(day=1).isoformat(), today.isoformat()),
        ("This year", today.replace(month=1, day=1).isoformat(), today.isoformat()),
    ]
    return [
        {
            "label": label,
            "url": _query_url(params, created_from=start, created_to=end),
            "selected": (params["created_from"], params["created_to"]) == (start, end),
        }
        for label, start, end in ranges
    ]


def _search(
    repository: OrderRepository,
    q: str,
    *,
    status: OrderStatus | None,
    created_from: datetime | None,
    created_to: datetime | None,
    newest_first: bool,
) -> tuple[list[Order], str]:
    """Orders matching the search box, and a note to show with them.

    An order id is looked up in the repository (filters do not apply to an exact id). Anything
    else is an email search, which needs an index the repository port does not have: it runs
    against the ORM tables, and only while the ORM adapter is the one storing orders.
    """
    try:
        order_id = uuid.UUID(q)
    except ValueError:
        order_id = None
    if order_id is not None:
        try:
            return [repository.get(order_id)], ""
        except OrderNotFound:
            return [], f"No order has the id {order_id}."
    if not orm_backed():
        return [], (
            f"Search by order id only: the order store ({type(repository).__name__}) has no "
            "email index. Paste a whole order id."
        )
    rows = models.Order.objects.filter(email__icontains=q)
    if status is not None:
        rows = rows.filter(status=status.value)
    if created_from is not None:
        rows = rows.filter(created_at__gte=created_from)
    if created_to is not None:
        rows = rows.filter(created_at__lt=created_to)
    ordering = ["-created_at", "-id"] if newest_first else ["created_at", "id"]
    ids = list(rows.order_by(*ordering).values_list("id", flat=True)[: PAGE_SIZE + 1])
    orders = [repository.get(found) for found in ids[:PAGE_SIZE]]
    if len(ids) > PAGE_SIZE:
        return orders, f"The first {PAGE_SIZE} matches; narrow the search to see others."
    return orders, "" if orders else f"No order's email contains {q!r}."


# --- one order ------------------------------------------------------------------------------
class OrderEditForm(forms.Form):
    name = forms.CharField(max_length=200)
    line1 = forms.CharField(label="Address", max_length=200)
    line2 = forms.CharField(label="Address line 2", max_length=200, required=False)
    city = forms.CharField(max_length=100)
    postal_code = forms.CharField(label="Postal code", max_length=20)
    country = forms.RegexField(
        regex=r"^[A-Za-z]{2}$",
        max_length=2,
        help_text="Two-letter country code.",
        error_messages={"invalid": "Use a two-letter country code, such as US or DE."},
        widget=forms.TextInput({"size": 2}),
    )
    notes = forms.CharField(max_length=2000, required=False, widget=forms.Textarea({"rows": 3, "cols": 60}))
    # The version the form was made from: saving over someone else's newer change is refused.
    version = forms.IntegerField(widget=forms.HiddenInput)

    @classmethod
    def for_order(cls, order: Order) -> OrderEditForm:
        return cls(
            initial={**order.shipping_address.as_dict(), "notes": order.notes, "version": order.version}
        )

    def clean_country(self) -> str:
        return self.cleaned_data["country"].upper()

    def shipping_address(self) -> ShippingAddress:
        return ShippingAddress.from_dict(self.cleaned_data)


class NoteForm(forms.Form):
    text = forms.CharField(label="Note", max_length=2000, widget=forms.Textarea({"rows": 2, "cols": 60}))


def detail_view(request: HttpRequest, order_id: uuid.UUID, *, site: AdminSite) -> HttpResponse:
    if not can_view(request.user):
        raise PermissionDenied
    repository = get_order_repository()
    try:
        order = repository.get(order_id)
    except OrderNotFound:
        messages.warning(request, f"No order has the id {order_id}.")
        return HttpResponseRedirect(store_list_url())
    edit_form = OrderEditForm.for_order(order)
    note_form = NoteForm()
    if request.method == "POST":
        if not can_change(request.user):
            raise PermissionDenied
        operation = request.POST.get("_op", "")
        if operation == "edit":
            edit_form = OrderEditForm(request.POST)
            if _edit(request, repository, order, edit_form):
                return HttpResponseRedirect(store_detail_url(order.id))
        elif operation == "note":
            note_form = NoteForm(request.POST)
            if note_form.is_valid():
                _run(request, lambda: _add_note(request, repository, order, note_form))
                return HttpResponseRedirect(store_detail_url(order.id))
        elif operation == "transition":
            _run(request, lambda: _transition(request, repository, order))
            return HttpResponseRedirect(store_detail_url(order.id))
        elif operation == "action":
            _run(request, lambda: _action(request, order))
            return HttpResponseRedirect(store_detail_url(order.id))
        else:
            messages.error(request, "Nothing was done: unknown operation.")
            return HttpResponseRedirect(store_detail_url(order.id))
    return _detail_page(request, site, repository, order, edit_form=edit_form, note_form=note_form)


def _error_text(exc: OrderError) -> str:
    """A domain error in words; a validation error's field messages say more than its summary."""
    fields = getattr(exc, "fields", None)
    if isinstance(fields, dict) and fields:
        return " ".join(str(text) for texts in fields.values() for text in texts)
    return exc.message


def _run(request: HttpRequest, operation: Callable[[], str | None]) -> None:
    """Run one change; its message, or the domain error that refused it, becomes an admin message."""
    try:
        message = operation()
    except OrderError as exc:
        messages.error(request, _error_text(exc))
    else:
        if message:
            messages.success(request, message)


def _edit(request: HttpRequest, repository: OrderRepository, order: Order, form: OrderEditForm) -> bool:
    """Apply the edit form; False when the page must be shown again with the form's errors."""
    if not form.is_valid():
        return False
    if form.cleaned_data["version"] != order.version:
        messages.error(
            request,
            "Not saved: the order was changed since this form was opened (version "
            f"{form.cleaned_data['version']}, now {order.version}). Review it and save again.",
        )
        form.data = form.data.copy()
        form.data["version"] = str(order.version)
        return False

    def save() -> str:
        saved = services.order_update(
            repository=repository,
            order_id=order.id,
            actor=services.actor_for(request.user),
            shipping_address=form.shipping_address(),
            notes=form.cleaned_data["notes"],
        )
        return "Shipping address and notes saved." if saved.version != order.version else "Nothing changed."

    _run(request, save)
    return True


def _add_note(request: HttpRequest, repository: OrderRepository, order: Order, form: NoteForm) -> str:
    services.order_add_note(
        repository=repository,
        order_id=order.id,
        actor=services.actor_for(request.user),
        text=form.cleaned_data["text"],
    )
    return "Note added."


def _transition(request: HttpRequest, repository: OrderRepository, order: Order) -> str:
    try:
        to_status = OrderStatus(request.POST.get("to_status", ""))
    except ValueError as exc:
        raise OrderError(f"{request.POST.get('to_status', '')!r} is not an order status.") from exc
    changed = services.order_transition(
        repository=repository,
        order_id=order.id,
        to_status=to_status,
        actor=services.actor_for(request.user),
        data={"via": "admin"},
    )
    return f"Order marked {changed.status.label.lower()}."


def _action(request: HttpRequest, order: Order) -> str | None:
    name = request.POST.get("action", "")
    action = next((a for a in order_admin_actions if a.name == name), None)
    if action is None:
        raise OrderError(f"There is no action {name!r}.")
    if action.permission and not request.user.has_perm(action.permission):
        raise PermissionDenied
    return action.handler(request, order)


def _detail_page(
    request: HttpRequest,
    site: AdminSite,
    repository: OrderRepository,
    order: Order,
    *,
    edit_form: OrderEditForm,
    note_form: NoteForm,
) -> TemplateResponse:
    events = order_events(repository=repository, order=order)
    user = request.user
    context = {
        **site.each_context(request),
        "app_name": apps.get_app_config("orders").verbose_name,
        "title": f"Order {order.id}",
        "subtitle": None,
        "order": order,
        "backend": type(repository).__name__,
        "money": {
            "subtotal": format_money(order.subtotal_minor, order.currency),
            "shipping": format_money(order.shipping_minor, order.currency),
            "total": format_money(order.total_minor, order.currency),
        },
        "lines": [
            {
                "line": line,
                "unit_price": format_money(line.unit_price_minor, order.currency),
                "line_total": format_money(line.line_total_minor, order.currency),
            }
            for line in order.lines
        ],
        "customer_url": _customer_url(order.customer_id),
        "events": [
            {"event": event, "data": json.dumps(event.data, sort_keys=True) if event.data else ""}
            for event in events
        ],
        "transitions": sorted(TRANSITIONS[order.status]),
        "can_change": can_change(user),
        "panels": [
            {"name": panel.name, "title": panel.title, "html": _render_panel(panel, request, order)}
            for panel in order_admin_panels
        ],
        "actions": [
            action
            for action in order_admin_actions
            if can_change(user) and (not action.permission or user.has_perm(action.permission))
        ],
        "edit_form": edit_form,
        "note_form": note_form,
        "orm_admin_url": reverse("admin:orders_order_change", args=[order.id]) if orm_backed() else "",
    }
    return TemplateResponse(request, DETAIL_TEMPLATE, context)


def _render_panel(panel: OrderAdminPanel, request: HttpRequest, order: Order) -> SafeString | str:
    """One panel's HTML; a panel that breaks says so instead of taking the whole page down."""
    try:
        return panel.render(request, order)
    except Exception:  # another app's panel: logged, and the page still works
        logger.exception("The order admin panel %r failed for order %s", panel.name, order.id)
        return f"This section could not be shown ({panel.name} failed; see the error log)."


def _customer_url(customer_id: int | None) -> str:
    if customer_id is None:
        return ""
    from django.contrib.auth import get_user_model

    opts = get_user_model()._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[customer_id])
    except NoReverseMatch:
        return ""


# --- mounting in the admin site -------------------------------------------------------------
def store_urls(site: AdminSite) -> list[URLPattern]:
    """The pages, behind the site's login and staff check, relative to the site's root."""
    return [
        path("orders/store/", site.admin_view(list_view), {"site": site}, name="orders_store_list"),
        path(
            "orders/store/<uuid:order_id>/",
            site.admin_view(detail_view),
            {"site": site},
            name="orders_store_detail",
        ),
    ]


def install(site: AdminSite) -> None:
    """Mount the order store pages in `site` and list them on its index, once.

    `AdminSite` has no hook for views that are not a ModelAdmin's, and the default site's class
    is not ours to replace, so this site's `get_urls` and `get_app_list` are wrapped. They run
    when the root URLconf is first loaded, after every admin module was imported.
    """
    if getattr(site, "_order_store_installed", False):
        return
    site_get_urls = site.get_urls
    site_get_app_list = site.get_app_list

    def get_urls() -> list[Any]:
        # First, so that the app index's catch-all never sees /orders/store/.
        return [*store_urls(site), *site_get_urls()]

    def get_app_list(request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        app_list = site_get_app_list(request, app_label)
        if can_view(request.user):
            for app in app_list:
                if app["app_label"] == "orders":
                    app["models"].append(
                        {
                            "model": None,
                            "name": STORE_NAME,
                            "object_name": "OrderStore",
                            "perms": {
                                "add": False,
                                "change": can_change(request.user),
                                "delete": False,
                                "view": True,
                            },
                            "admin_url": reverse("admin:orders_store_list", current_app=site.name),
                            "add_url": None,
                            "view_only": not can_change(request.user),
                        }
                    )
                    app["models"].sort(key=lambda model: model["name"])
        return app_list

    site.get_urls = get_urls  # type: ignore[method-assign]
    site.get_app_list = get_app_list  # type: ignore[method-assign]
    site._order_store_installed = True  # type: ignore[attr-defined]
