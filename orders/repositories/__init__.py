"""Order storage: the `OrderRepository` port and its adapters."""

from orders.repositories.base import OrderRepository, get_order_repository

__all__ = ["OrderRepository", "get_order_repository"]
