"""Reads of the orders app: the catalog, and orders as a given viewer may see them."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from orders.domain import (
    Order,
    OrderEvent,
    OrderNotFound,
    OrderPage,
    OrderQuery,
    OrderStatus,
    ShippingAddress,
)
from orders.models import Product
from orders.repositories import OrderRepository


def product_list() -> QuerySet[Product]:
    return Product.objects.filter(active=True).order_by("name", "sku")


def product_get(*, sku: str) -> Product | None:
    return product_list().filter(sku=sku).first()


@dataclass(frozen=True, slots=True)
class CartLine:
    """One cart line priced from the catalog now; `product` is None when it is no longer for sale."""

    sku: str
    quantity: int
    product: Product | None

    @property
    def line_total_minor(self) -> int:
        return self.product.price_minor * self.quantity if self.product else 0

    @property
    def over_stock(self) -> bool:
        return self.product is not None and self.quantity > self.product.stock


@dataclass(frozen=True, slots=True)
class CartSummary:
    lines: list[CartLine]
    subtotals: list[tuple[str, int]]  # (currency, minor units), for display only

    @property
    def has_unavailable(self) -> bool:
        return any(line.product is None for line in self.lines)

    @property
    def has_over_stock(self) -> bool:
        return any(line.over_stock for line in self.lines)


def cart_summary(items: dict[str, int]) -> CartSummary:
    """A session cart's lines priced from the catalog as it is now; orders are priced again."""
    products = {product.sku: product for product in product_list().filter(sku__in=list(items))}
    lines = [
        CartLine(sku=sku, quantity=quantity, product=products.get(sku)) for sku, quantity in items.items()
    ]
    subtotals: dict[str, int] = {}
    for line in lines:
        if line.product is not None:
            subtotals[line.product.currency] = subtotals.get(line.product.currency, 0) + line.line_total_minor
    return CartSummary(lines=lines, subtotals=sorted(subtotals.items()))


def order_visible_to(
    order: Order,
    user: AbstractBaseUser | AnonymousUser | None,
    *,
    guest_order_ids: Collection[str] = (),
) -> bool:
    """Staff see every order, customers their own, a guest's browser the orders it placed."""
    if user is not None and user.is_authenticated and (user.is_staff or order.customer_id == user.pk):
        return True
    return order.is_guest and str(order.id) in guest_order_ids


def order_get(
    *,
    repository: OrderRepository,
    order_id: uuid.UUID | str,
    user: AbstractBaseUser | AnonymousUser | None,
    guest_order_ids: Collection[str] = (),
) -> Order:
    """The order if `user` may see it; `OrderNotFound` otherwise, so no one learns it exists."""
    try:
        order_uuid = order_id if isinstance(order_id, uuid.UUID) else uuid.UUID(str(order_id))
    except ValueError as exc:
        raise OrderNotFound(order_id) from exc
    order = repository.get(order_uuid)
    if not order_visible_to(order, user, guest_order_ids=guest_order_ids):
        raise OrderNotFound(order_uuid)
    return order


def order_list(
    *,
    repository: OrderRepository,
    user: AbstractBaseUser,
    status: OrderStatus | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    newest_first: bool = True,
    limit: int = 20,
    cursor: str | None = None,
) -> OrderPage:
    """One page of the orders `user` may see: all for staff, their own for customers."""
    return repository.list(
        OrderQuery(
            customer_id=None if user.is_staff else user.pk,
            status=status,
            created_from=created_from,
            created_to=created_to,
            newest_first=newest_first,
            limit=limit,
            cursor=cursor,
        )
    )


def order_events(*, repository: OrderRepository, order: Order) -> list[OrderEvent]:
    return repository.events(order.id)


def customer_last_address(*, repository: OrderRepository, user: AbstractBaseUser) -> ShippingAddress | None:
    """Where the customer's newest order went (their own, also for staff), to prefill checkout."""
    page = repository.list(OrderQuery(customer_id=user.pk, limit=1))
    return page.orders[0].shipping_address if page.orders else None


def guest_orders(*, repository: OrderRepository, order_ids: Collection[str]) -> list[Order]:
    """The guest orders placed from this browser (their ids kept in the session), newest first."""
    found = []
    for order_id in order_ids:
        try:
            found.append(repository.get(uuid.UUID(str(order_id))))
        except (OrderNotFound, ValueError):
            continue
    return sorted(found, key=lambda order: order.created_at, reverse=True)
