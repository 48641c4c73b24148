"""The shop's server-rendered pages: thin views over `orders.selectors` and `orders.services`.

Views read the request, call one selector or service, and render; prices, stock reservations and
who may see or change an order are decided there, not here. The session cart holds only sku →
quantity; prices shown next to it are looked up in the catalog on every request.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from access.throttling import client_address, rate_limit
from live import services as live
from orders import selectors, services
from orders.cart import Cart
from orders.domain import (
    CUSTOMER_EDITABLE_STATUSES,
    IdempotencyConflict,
    Order,
    OrderError,
    OrderNotFound,
    OrderStatus,
    OrderValidationError,
)
from orders.forms import AddToCartForm, CartUpdateForm, CheckoutForm, OrderFilterForm, SignUpForm
from orders.models import Product
from orders.repositories import get_order_repository
from orders.services import LineRequest

# Session keys. "guest_orders" is what `selectors.order_get` accepts as `guest_order_ids`.
GUEST_ORDERS = "guest_orders"
GUEST_ORDERS_KEPT = 50
LAST_CHECKOUT = "last_checkout"
ORDERS_PAGE_SIZE = 20
GUEST_ORDERS_SHOWN = 20


# --- catalog ----------------------------------------------------------------------------------
def product_list(request: HttpRequest) -> HttpResponse:
    return render(request, "orders/product_list.html", {"products": selectors.product_list()})


def product_detail(request: HttpRequest, sku: str) -> HttpResponse:
    product = _product_or_404(sku)
    form = AddToCartForm(initial={"quantity": 1, "next": request.get_full_path()})
    return render(request, "orders/product_detail.html", {"product": product, "form": form})


# --- cart -------------------------------------------------------------------------------------
def cart_detail(request: HttpRequest) -> HttpResponse:
    return render(request, "orders/cart.html", _cart_context(Cart(request.session)))


@require_POST
def cart_add(request: HttpRequest, sku: str) -> HttpResponse:
    product = _product_or_404(sku)
    form = AddToCartForm(request.POST)
    target = _next_url(request, fallback="orders:cart")
    if not form.is_valid():
        messages.error(request, _first_error(form, "Please enter a quantity."))
        return redirect(target)
    cart = Cart(request.session)
    wanted = cart.items().get(sku, 0) + form.cleaned_data["quantity"]
    added = _set_within_stock(request, cart, product, wanted)
    if added:
        messages.success(request, f"Added {product.name} to your cart.")
    return redirect(target)


@require_POST
def cart_update(request: HttpRequest, sku: str) -> HttpResponse:
    form = CartUpdateForm(request.POST)
    if not form.is_valid():
        messages.error(request, _first_error(form, "Please enter a quantity."))
        return redirect("orders:cart")
    cart = Cart(request.session)
    quantity = form.cleaned_data["quantity"]
    product = selectors.product_get(sku=sku)
    if quantity == 0 or product is None:
        cart.set(sku, 0)
        messages.success(request, "Removed the item from your cart.")
    elif _set_within_stock(request, cart, product, quantity):
        messages.success(request, f"Updated the quantity of {product.name}.")
    return redirect("orders:cart")


@require_POST
def cart_remove(request: HttpRequest, sku: str) -> HttpResponse:
    Cart(request.session).set(sku, 0)
    messages.success(request, "Removed the item from your cart.")
    return redirect("orders:cart")


# --- checkout ---------------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
@rate_limit("order_create_anon", methods=("POST",))
def checkout(request: HttpRequest) -> HttpResponse:
    cart = Cart(request.session)
    if request.method == "POST":
        placed = _order_placed_by_this_form(request)
        if placed:
            # The same form submitted again after it succeeded (a double click, a reload).
            messages.info(request, "This order was already placed.")
            return redirect("orders:order_detail", order_id=placed)
    if not cart.items():
        messages.info(request, "Your cart is empty.")
        return redirect("orders:cart")

    if request.method == "GET":
        initial: dict[str, object] = {"idempotency_key": uuid.uuid4()}
        returning = False
        if request.user.is_authenticated:
            initial["email"] = request.user.email
            last = selectors.customer_last_address(repository=get_order_repository(), user=request.user)
            if last is not None:
                # A returning customer: the address of their newest order, to check or change.
                initial.update(CheckoutForm.initial_for_address(last))
                returning = True
        form = CheckoutForm(initial=initial, user=request.user)
    else:
        returning = False
        form = CheckoutForm(request.POST, user=request.user)
        if form.is_valid():
            try:
                order = _place_order(request, form, cart)
            except IdempotencyConflict as exc:
                messages.error(request, f"{exc.message} Please check the form and submit it again.")
                return redirect("orders:checkout")
            except OrderValidationError as exc:
                _add_service_errors(form, exc)
            except OrderError as exc:
                form.add_error(None, exc.message)
            else:
                return redirect("orders:order_detail", order_id=order.id)
    return render(
        request, "orders/checkout.html", {"form": form, "returning": returning, **_cart_context(cart)}
    )


def _place_order(request: HttpRequest, form: CheckoutForm, cart: Cart) -> Order:
    user = request.user
    key = str(form.cleaned_data["idempotency_key"])
    email = form.cleaned_data["email"]
    order, created = services.order_place(
        repository=get_order_repository(),
        actor=services.actor_for(user, guest_email=email),
        customer_id=user.pk if user.is_authenticated else None,
        email=email,
        lines=[LineRequest(sku=sku, quantity=quantity) for sku, quantity in cart.items().items()],
        shipping_address=form.shipping_address(),
        notes=form.cleaned_data["notes"],
        idempotency_scope=services.idempotency_scope_for(user),
        idempotency_key=key,
        client_address=client_address(request),
    )
    cart.clear()
    if order.is_guest:
        kept = [i for i in request.session.get(GUEST_ORDERS, []) if i != str(order.id)]
        request.session[GUEST_ORDERS] = [*kept, str(order.id)][-GUEST_ORDERS_KEPT:]
    request.session[LAST_CHECKOUT] = {"key": key, "order_id": str(order.id)}
    if created:
        messages.success(request, "Thank you! Your order is placed.")
    else:
        messages.info(request, "This order was already placed.")
    return order


def _order_placed_by_this_form(request: HttpRequest) -> str | None:
    """The order this checkout form (its idempotency key) already placed in this session, if any."""
    last = request.session.get(LAST_CHECKOUT) or {}
    try:
        key = str(uuid.UUID(request.POST.get("idempotency_key", "")))
    except ValueError:
        return None
    return last.get("order_id") if key == last.get("key") else None


def _add_service_errors(form: CheckoutForm, exc: OrderValidationError) -> None:
    """Show the service's messages on the matching form fields, the rest above the form."""
    if exc.message != "Invalid input.":
        form.add_error(None, exc.message)
    for field, errors in exc.fields.items():
        target = field if field in form.fields else None
        for error in errors if isinstance(errors, list | tuple) else [errors]:
            form.add_error(target, str(error))


# --- orders -----------------------------------------------------------------------------------
def order_detail(request: HttpRequest, order_id: uuid.UUID) -> HttpResponse:
    live_stream = live.stream_url(live.order_channel(order_id))  # before the order: no change missed
    order = _visible_order_or_404(request, order_id)
    events = selectors.order_events(repository=get_order_repository(), order=order)
    context = {
        "live_stream": live_stream,
        "order": order,
        "events": events,
        "history": selectors.order_customer_history(events=events),
        "payment": selectors.order_customer_payment(order=order, events=events),
        "can_cancel": order.status in CUSTOMER_EDITABLE_STATUSES,
        "awaiting_payment": order.status == OrderStatus.PENDING_PAYMENT,
        "payment_failed": order.status == OrderStatus.PAYMENT_FAILED,
    }
    return render(request, "orders/order_detail.html", context)


@require_POST
def order_cancel(request: HttpRequest, order_id: uuid.UUID) -> HttpResponse:
    order = _visible_order_or_404(request, order_id)
    try:
        services.order_cancel(
            repository=get_order_repository(),
            order_id=order.id,
            actor=services.actor_for(request.user, guest_email=order.email),
            reason="Cancelled from the order page.",
        )
    except OrderNotFound as exc:
        raise Http404("No such order.") from exc
    except OrderError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Your order is cancelled.")
    return redirect("orders:order_detail", order_id=order.id)


def order_list(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        # A guest has no account to list orders of: say where their orders are instead.
        orders = selectors.guest_orders(
            repository=get_order_repository(),
            order_ids=request.session.get(GUEST_ORDERS, [])[-GUEST_ORDERS_SHOWN:],
        )
        return render(request, "orders/order_list_guest.html", {"orders": orders})
    form = OrderFilterForm(request.GET)
    status = form.selected_status()
    repository = get_order_repository()
    cursor = request.GET.get("cursor") or None
    try:
        page = selectors.order_list(
            repository=repository, user=request.user, status=status, limit=ORDERS_PAGE_SIZE, cursor=cursor
        )
    except OrderValidationError:
        messages.error(request, "That page link is no longer valid; here is the first page.")
        cursor = None
        page = selectors.order_list(
            repository=repository, user=request.user, status=status, limit=ORDERS_PAGE_SIZE
        )
    return render(
        request,
        "orders/order_list.html",
        {"page": page, "form": form, "status": status, "is_later_page": bool(cursor)},
    )


# --- accounts ---------------------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.get_username()}! Your account is ready.")
        return redirect(_next_url(request, fallback=settings.LOGIN_REDIRECT_URL))
    return render(
        request,
        "registration/signup.html",
        {"form": form, "next": request.POST.get("next") or request.GET.get("next", "")},
    )


# --- helpers ----------------------------------------------------------------------------------
def _product_or_404(sku: str) -> Product:
    product = selectors.product_get(sku=sku)
    if product is None:
        raise Http404("No such product.")
    return product


def _visible_order_or_404(request: HttpRequest, order_id: uuid.UUID) -> Order:
    try:
        return selectors.order_get(
            repository=get_order_repository(),
            order_id=order_id,
            user=request.user,
            guest_order_ids=request.session.get(GUEST_ORDERS, []),
        )
    except OrderNotFound as exc:
        raise Http404("No such order.") from exc


def _cart_context(cart: Cart) -> dict[str, object]:
    summary = selectors.cart_summary(cart.items())
    return {
        "lines": summary.lines,
        "subtotals": summary.subtotals,
        "has_unavailable": summary.has_unavailable,
        "has_over_stock": summary.has_over_stock,
        "shipping_flat_minor": settings.ORDER_SHIPPING_FLAT_MINOR,
    }


def _set_within_stock(request: HttpRequest, cart: Cart, product: Product, wanted: int) -> bool:
    """Put `wanted` of `product` in the cart, or as many as are in stock, saying so.

    Only a hint for the shopper: stock is taken for real when the order is placed.
    """
    limit = min(product.stock, settings.ORDER_MAX_QUANTITY_PER_LINE)
    if limit == 0:
        messages.error(request, f"Sorry, {product.name} is out of stock.")
        return False
    if wanted > limit:
        cart.set(product.sku, limit)
        reason = "in stock" if limit == product.stock else "per order"
        messages.warning(
            request, f"Only {limit} of {product.name} available {reason}; your cart now holds {limit}."
        )
        return False
    cart.set(product.sku, wanted)
    return True


def _next_url(request: HttpRequest, *, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return resolve_url(fallback)


def _first_error(form: AddToCartForm | CartUpdateForm, default: str) -> str:
    errors = form.errors.get("quantity")
    return f"Quantity: {errors[0]}" if errors else default
