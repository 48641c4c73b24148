"""The one order admin: the list and each order's page, read and written only through the
configured `OrderRepository` and the same services as the API, so they work whichever adapter
stores the orders (the ORM or DynamoDB).

- `/admin/orders/order/` (`admin:orders_order_changelist`): one page of orders (status, date
  range, newest or oldest first, cursor pagination), a search box (a whole order id, the short
  reference customers see, or an email address) and actions on the selected orders: a status
  transition each (never to a status that follows money: paid, partially refunded, refunded),
  and the actions other apps register. Those that cannot be undone ask first in the browser.
- `/admin/orders/order/<uuid>/change/` (`admin:orders_order_change`): the order, its lines and
  totals, the event timeline, forms to edit the shipping address and notes (`order_update`) or
  add a note (`order_add_note`), one button per legal status transition that moves no money
  (`order_transition`; cancelling asks first), and the panels and actions other apps register
  (`orders.admin.registry`). Money is shown as money in the order's currency.
- `/admin/orders/order/<uuid>/<name>/` (`admin:orders_order_<name>`): the pages other apps
  register (the payments app's refund page).

The admin site (`orders.admin_site.CisAdminSite`) mounts them with `urls(site)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from core.errors import ApplicationError
from orders import services
from orders.admin import registry
from orders.admin.forms import NoteForm, OrderEditForm, OrderFilterForm, OrderSearch, parse_search
from orders.admin.registry import OrderAdminAction, OrderAdminPage, OrderAdminPanel, error_text
from orders.domain import (
    MONEY_STATUSES,
    TRANSITIONS,
    Order,
    OrderError,
    OrderNotFound,
    OrderQuery,
    OrderStatus,
    OrderValidationError,
)
from orders.models import Order as OrderRow
from orders.money import format_money
from orders.repositories import OrderRepository, get_order_repository
from orders.selectors import order_events

logger = logging.getLogger(__name__)

LIST_TEMPLATE = "admin/orders/order/list.html"
DETAIL_TEMPLATE = "admin/orders/order/detail.html"
PAGE_SIZE = 50
TITLE = "Orders"
VIEW_PERMISSIONS = ("orders.view_order", "orders.change_order")
CHANGE_PERMISSION = "orders.change_order"
# MONEY_STATUSES (orders.domain) are never offered, nor accepted, as bare status edits here.
MONEY_STATUS_REFUSED = (
    "Nothing was done: an order becomes {label} only when money moves (a payment settling, a"
    " refund through the payment actions), never by a status change."
)
# What the browser asks before a status change that cannot be undone.
CONFIRM_STATUS = {
    OrderStatus.CANCELLED: "Cancel {what}? The stock held is released and no payment can be taken any more."
    " This cannot be undone.",
}
SEARCH_HELP = (
    "Search by a whole order id, a reference (its first 8 characters, like 90385D94), an email"
    " or a customer's username."
)


# --- who may, and where things are ----------------------------------------------------------
def can_view(user: Any) -> bool:
    return any(user.has_perm(permission) for permission in VIEW_PERMISSIONS)


def can_change(user: Any) -> bool:
    return bool(user.has_perm(CHANGE_PERMISSION))


def may_run(user: Any, action: OrderAdminAction) -> bool:
    return can_change(user) and (not action.permission or user.has_perm(action.permission))


def list_url() -> str:
    return reverse("admin:orders_order_changelist")


def detail_url(order_id: uuid.UUID) -> str:
    return reverse("admin:orders_order_change", args=[order_id])


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def _query_url(params: dict[str, str], **changes: str) -> str:
    merged = {key: value for key, value in {**params, **changes}.items() if value}
    return f"?{urlencode(merged)}" if merged else "?"


def offered_transitions(status: OrderStatus) -> list[OrderStatus]:
    """The statuses staff may set by hand from `status`: the legal ones that do not follow money."""
    return sorted(TRANSITIONS[status] - MONEY_STATUSES)


def _transition_one(
    request: HttpRequest, repository: OrderRepository, order_id: uuid.UUID, to_status: OrderStatus
) -> Order:
    if to_status in MONEY_STATUSES:  # a forged form: the buttons are not offered
        raise OrderError(MONEY_STATUS_REFUSED.format(label=to_status.label.lower()))
    return services.order_transition(
        repository=repository,
        order_id=order_id,
        to_status=to_status,
        actor=services.actor_for(request.user),
        data={"via": "admin"},
    )


# --- the list -------------------------------------------------------------------------------
def list_view(request: HttpRequest, *, site: AdminSite) -> HttpResponse:
    if not can_view(request.user):
        raise PermissionDenied
    repository = get_order_repository()
    if request.method == "POST":
        return _list_action(request, repository)
    form = OrderFilterForm(request.GET)
    data: dict[str, Any] = {}
    if form.is_valid():
        data = form.cleaned_data
    else:
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, f"Filters ignored: {error}")
    status = OrderStatus(data["status"]) if data.get("status") else None
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
    search = parse_search(q) if q else OrderSearch()
    customer_id = None
    if search is not None and search.username is not None:
        customer_id = _customer_id(search.username)
        search = search if customer_id is not None else None
    note = ""
    next_cursor: str | None = None
    if search is None:
        orders, note = [], f"Nothing found for {q!r}. {SEARCH_HELP}"
    elif search.order_id is not None:  # an exact id: the filters do not apply
        try:
            orders = [repository.get(search.order_id)]
        except OrderNotFound:
            orders, note = [], f"No order has the id {search.order_id}."
    else:
        query = OrderQuery(
            customer_id=customer_id,
            status=status,
            created_from=_start_of(data["created_from"]) if data.get("created_from") else None,
            created_to=_start_of(data["created_to"] + timedelta(days=1)) if data.get("created_to") else None,
            newest_first=newest_first,
            email=search.email,
            reference=search.reference,
            limit=PAGE_SIZE,
            cursor=cursor,
        )
        try:
            page = repository.list(query)
        except OrderValidationError as exc:  # a cursor from another listing, or tampered with
            messages.error(request, f"{error_text(exc)} Showing the first page.")
            cursor = None
            page = repository.list(dataclasses.replace(query, cursor=None))
        orders, next_cursor = page.orders, page.next_cursor
        if q and not orders and not cursor:
            note = f"No order matches {q!r}."
    context = {
        **site.each_context(request),
        "app_name": apps.get_app_config("orders").verbose_name,
        "title": TITLE,
        "subtitle": None,
        "backend": type(repository).__name__,
        "search_help": SEARCH_HELP,
        "q": q,
        "note": note,
        "params": params,
        "rows": [_row(order) for order in orders],
        "actions": [
            {"name": name, "label": label, "confirm": confirm}
            for name, label, confirm in _list_action_choices(request.user)
        ],
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "next_url": _query_url(params, q=q, cursor=next_cursor) if next_cursor else "",
        "first_url": _query_url(params, q=q) if cursor else "",
        "status_choices": [
            {"label": "All", "url": _query_url(params, q=q, status=""), "selected": status is None},
            *(
                {"label": s.label, "url": _query_url(params, q=q, status=s.value), "selected": status == s}
                for s in OrderStatus
            ),
        ],
        "date_choices": _date_choices(params, q),
        "sort_choices": [
            {"label": "Newest first", "url": _query_url(params, q=q, sort=""), "selected": newest_first},
            {
                "label": "Oldest first",
                "url": _query_url(params, q=q, sort="oldest"),
                "selected": not newest_first,
            },
        ],
        "filter_form": form,
    }
    return TemplateResponse(request, LIST_TEMPLATE, context)


def _row(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "reference": order.reference,
        "url": detail_url(order.id),
        "created_at": order.created_at,
        "email": order.email,
        "status": order.status,
        "total": format_money(order.total_minor, order.currency),
        "currency": order.currency,
        "customer_id": order.customer_id,
        "items": sum(line.quantity for line in order.lines),
    }


def _date_choices(params: dict[str, str], q: str) -> list[dict[str, Any]]:
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
            "url": _query_url(params, q=q, created_from=start, created_to=end),
            "selected": (params["created_from"], params["created_to"]) == (start, end),
        }
        for label, start, end in ranges
    ]


# --- actions on the selected orders ---------------------------------------------------------
def _transition_actions() -> dict[str, OrderStatus]:
    return {f"mark_{status.value}": status for status in OrderStatus if status not in MONEY_STATUSES}


def _list_action_choices(user: Any) -> list[tuple[str, str, str]]:
    """(name, label, confirmation question or "") of each action `user` may run on the selected
    orders."""
    if not can_change(user):
        return []
    return [
        *(
            (
                name,
                f"Mark selected orders: {status.label.lower()}",
                CONFIRM_STATUS.get(status, "").format(what="the selected orders"),
            )
            for name, status in _transition_actions().items()
        ),
        *(
            (action.name, action.label, action.confirm)
            for action in registry.order_admin_actions
            if action.on_list and may_run(user, action)
        ),
    ]


def _list_actions(user: Any) -> list[tuple[str, str]]:
    """(name, label) of each action `user` may run on the selected orders."""
    return [(name, label) for name, label, _ in _list_action_choices(user)]


def _list_action(request: HttpRequest, repository: OrderRepository) -> HttpResponse:
    """Run the chosen action on the selected orders; back to the list, or the action's own page."""
    back = HttpResponseRedirect(request.get_full_path())
    name = request.POST.get("action", "")
    money_status = next((s for s in MONEY_STATUSES if name == f"mark_{s.value}"), None)
    if money_status is not None and can_change(request.user):  # a forged form: not offered
        messages.error(request, MONEY_STATUS_REFUSED.format(label=money_status.label.lower()))
        return back
    if name not in dict(_list_actions(request.user)):
        messages.warning(request, "No action selected.")
        return back
    orders = []
    for selected in dict.fromkeys(request.POST.getlist(ACTION_CHECKBOX_NAME)):
        try:
            orders.append(repository.get(uuid.UUID(selected)))
        except (ValueError, OrderNotFound):
            messages.error(request, f"No order has the id {selected}.")
    if not orders:
        messages.warning(request, "Items must be selected in order to perform actions on them.")
        return back
    to_status = _transition_actions().get(name)
    if to_status is not None:
        done = 0
        for order in orders:
            try:
                _transition_one(request, repository, order.id, to_status)
                done += 1
            except ApplicationError as exc:
                messages.error(request, error_text(exc))
        if done:
            noun = "order" if done == 1 else "orders"
            messages.success(request, f"{done} {noun} marked {to_status.label.lower()}.")
        return back
    action = next(action for action in registry.order_admin_actions if action.name == name)
    return _run_action(request, action, orders) or back


def _run_action(
    request: HttpRequest, action: OrderAdminAction, orders: Sequence[Order]
) -> HttpResponse | None:
    try:
        return action.handler(request, orders)
    except ApplicationError as exc:
        messages.error(request, error_text(exc))
        return None


# --- one order ------------------------------------------------------------------------------
def detail_view(request: HttpRequest, order_id: uuid.UUID, *, site: AdminSite) -> HttpResponse:
    if not can_view(request.user):
        raise PermissionDenied
    repository = get_order_repository()
    try:
        order = repository.get(order_id)
    except OrderNotFound:
        messages.warning(request, f"No order has the id {order_id}.")
        return HttpResponseRedirect(list_url())
    edit_form = OrderEditForm.for_order(order)
    note_form = NoteForm()
    if request.method == "POST":
        if not can_change(request.user):
            raise PermissionDenied
        here = HttpResponseRedirect(detail_url(order.id))
        operation = request.POST.get("_op", "")
        if operation == "edit":
            edit_form = OrderEditForm(request.POST)
            if _edit(request, repository, order, edit_form):
                return here
        elif operation == "note":
            note_form = NoteForm(request.POST)
            if note_form.is_valid():
                _run(request, lambda: _add_note(request, repository, order, note_form))
                return here
        elif operation == "transition":
            _run(request, lambda: _transition(request, repository, order))
            return here
        elif operation == "action":
            return _page_action(request, order) or here
        else:
            messages.error(request, "Nothing was done: unknown operation.")
            return here
    return _detail_page(request, site, repository, order, edit_form=edit_form, note_form=note_form)


def _run(request: HttpRequest, operation: Callable[[], str]) -> None:
    """Run one change; its message, or the domain error that refused it, becomes an admin message."""
    try:
        messages.success(request, operation())
    except ApplicationError as exc:
        messages.error(request, error_text(exc))


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
    changed = _transition_one(request, repository, order.id, to_status)
    return f"Order marked {changed.status.label.lower()}."


def _page_action(request: HttpRequest, order: Order) -> HttpResponse | None:
    name = request.POST.get("action", "")
    action = next((a for a in registry.order_admin_actions if a.name == name and a.on_page), None)
    if action is None:
        messages.error(request, f"There is no action {name!r}.")
        return None
    if not may_run(request.user, action):
        raise PermissionDenied
    return _run_action(request, action, [order])


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
        "title": f"Order {order.reference}",
        "subtitle": None,
        "order": order,
        "reference": order.reference,
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
        "events": [{"event": event, "data": event_details(event.data, order.currency)} for event in events],
        "transitions": [
            {
                "status": status,
                "confirm": CONFIRM_STATUS.get(status, "").format(what=f"order {order.reference}"),
            }
            for status in offered_transitions(order.status)
        ],
        "money_statuses": sorted(TRANSITIONS[order.status] & MONEY_STATUSES),
        "can_change": can_change(user),
        "panels": [
            {"name": panel.name, "title": panel.title, "html": _render_panel(panel, request, order)}
            for panel in registry.order_admin_panels
        ],
        "actions": [
            action for action in registry.order_admin_actions if action.on_page and may_run(user, action)
        ],
        "edit_form": edit_form,
        "note_form": note_form,
    }
    return TemplateResponse(request, DETAIL_TEMPLATE, context)


def event_details(data: dict[str, Any] | None, currency: str) -> str:
    """An event's data for staff: "amount: $4.50, reason: "chipped"": amounts in minor units
    (`*_minor`) as money in the order's (or the event's own) currency, the rest as JSON."""
    if not data:
        return ""
    currency = str(data.get("currency") or currency)
    parts = []
    for key in sorted(data):
        value = data[key]
        if key.endswith("_minor") and isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{key.removesuffix('_minor')}: {format_money(value, currency)}")
        elif key != "currency":
            parts.append(f"{key}: {json.dumps(value, sort_keys=True)}")
    return ", ".join(parts)


def _render_panel(panel: OrderAdminPanel, request: HttpRequest, order: Order) -> SafeString | str:
    """One panel's HTML; a panel that breaks says so instead of taking the whole page down."""
    try:
        return panel.render(request, order)
    except Exception:  # another app's panel: logged, and the page still works
        logger.exception("The order admin panel %r failed for order %s", panel.name, order.id)
        return f"This section could not be shown ({panel.name} failed; see the error log)."


def _customer_id(username: str) -> int | None:
    """The id of the customer account with this username (any case), if there is one."""
    return get_user_model().objects.filter(username__iexact=username).values_list("pk", flat=True).first()


def _customer_url(customer_id: int | None) -> str:
    if customer_id is None:
        return ""
    opts = get_user_model()._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[customer_id])
    except NoReverseMatch:
        return ""


# --- the pages other apps register ----------------------------------------------------------
def page_view(request: HttpRequest, order_id: uuid.UUID, *, page: OrderAdminPage) -> HttpResponse:
    if not can_view(request.user) or (page.permission and not request.user.has_perm(page.permission)):
        raise PermissionDenied
    try:
        order = get_order_repository().get(order_id)
    except OrderNotFound:
        messages.warning(request, f"No order has the id {order_id}.")
        return HttpResponseRedirect(list_url())
    return page.view(request, order)


# --- mounting in the admin site -------------------------------------------------------------
def urls(site: AdminSite) -> list[URLPattern]:
    """The pages, behind the site's login and staff check, relative to the site's root."""
    return [
        path("orders/order/", site.admin_view(list_view), {"site": site}, name="orders_order_changelist"),
        path(
            "orders/order/<uuid:order_id>/change/",
            site.admin_view(detail_view),
            {"site": site},
            name="orders_order_change",
        ),
        *(
            path(
                f"orders/order/<uuid:order_id>/{page.name}/",
                site.admin_view(page_view),
                {"page": page},
                name=f"orders_order_{page.name}",
            )
            for page in registry.order_admin_pages
        ),
    ]


def app_list_entry(request: HttpRequest, site: AdminSite) -> dict[str, Any] | None:
    """The admin index's line for orders (as a ModelAdmin's would be), if `request.user` may see them."""
    if not can_view(request.user):
        return None
    change = can_change(request.user)
    return {
        "model": OrderRow,
        "name": TITLE,
        "object_name": "Order",
        "perms": {"add": False, "change": change, "delete": False, "view": True},
        "admin_url": reverse("admin:orders_order_changelist", current_app=site.name),
        "add_url": None,
        "view_only": not change,
    }
