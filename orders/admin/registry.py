"""Where other apps extend the one order admin: panels on an order's page, actions (buttons on
the order's page, and choices for the orders selected on the list) and pages of their own under
an order's URL.

`orders` must not import `payments` or `integrations`, so each of them registers what it adds
from its own admin module, once, when Django's admin autodiscovery imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.utils.safestring import SafeString

from core.errors import ApplicationError
from orders.domain import Order


@dataclass(frozen=True, slots=True)
class OrderAdminPanel:
    """A section of the order's page: `render(request, order)` returns its (escaped) HTML."""

    name: str
    title: str
    render: Callable[[HttpRequest, Order], SafeString | str]


@dataclass(frozen=True, slots=True)
class OrderAdminAction:
    """Something staff do to orders: a button on the order's page (`on_page`), and a choice
    for the orders selected on the list (`on_list`).

    `handler(request, orders)` does the work through a service, reports each outcome through
    `django.contrib.messages` (see `each_order`) and returns None, or returns a page of its own
    (an intermediate form). An `ApplicationError` it raises is shown as an error message. Staff need
    `orders.change_order`, and `permission` too when it is set (for example
    "payments.add_refund"). `confirm`, when set, is asked in the browser first (for what cannot
    be undone).
    """

    name: str
    label: str
    handler: Callable[[HttpRequest, Sequence[Order]], HttpResponse | None]
    permission: str = ""
    confirm: str = ""  # a question the browser asks before the button does anything
    on_page: bool = True
    on_list: bool = True


@dataclass(frozen=True, slots=True)
class OrderAdminPage:
    """A page of one order at `<order's admin URL>/<name>/`, URL name `admin:orders_order_<name>`.

    `view(request, order)` gets the order read through the repository; staff need
    `orders.view_order` or `orders.change_order`, and `permission` too when it is set.
    """

    name: str
    view: Callable[[HttpRequest, Order], HttpResponse]
    permission: str = ""


order_admin_panels: list[OrderAdminPanel] = []
order_admin_actions: list[OrderAdminAction] = []
order_admin_pages: list[OrderAdminPage] = []


def register_order_admin_panel(panel: OrderAdminPanel) -> None:
    """Add a panel to the order's page (one with the same name is replaced)."""
    _register(order_admin_panels, panel)


def register_order_admin_action(action: OrderAdminAction) -> None:
    """Add an action (one with the same name is replaced)."""
    _register(order_admin_actions, action)


def register_order_admin_page(page: OrderAdminPage) -> None:
    """Add a page under each order's URL (one with the same name is replaced). The admin site
    mounts the pages when the URLconf is first loaded, after every admin module was imported."""
    _register(order_admin_pages, page)


def _register(registry: list[Any], item: Any) -> None:
    for index, existing in enumerate(registry):
        if existing.name == item.name:
            registry[index] = item
            return
    registry.append(item)


def error_text(exc: ApplicationError) -> str:
    """A domain error in words; a validation error's field messages say more than its summary."""
    if exc.fields:
        return " ".join(str(text) for texts in exc.fields.values() for text in texts)
    return exc.message


def each_order(
    request: HttpRequest, orders: Sequence[Order], operation: Callable[[Order], str | None]
) -> None:
    """Run `operation` on each order: the message it returns is shown as a success, the domain
    error that refused it as an error (naming the order when there are several)."""
    for order in orders:
        try:
            message = operation(order)
        except ApplicationError as exc:
            text = error_text(exc)
            messages.error(request, text if len(orders) == 1 else f"Order {order.id}: {text}")
        else:
            if message:
                messages.success(request, message)
