from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from orders.cart import Cart


def cart(request: HttpRequest) -> dict[str, Any]:
    """The number of items in the session's cart, for the header of every page."""
    return {"cart_count": Cart(request.session).count() if hasattr(request, "session") else 0}
