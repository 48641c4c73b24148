"""The shopping cart: sku → quantity kept in the session. Prices are never stored here."""

from __future__ import annotations

from django.contrib.sessions.backends.base import SessionBase

SESSION_KEY = "cart"


class Cart:
    def __init__(self, session: SessionBase) -> None:
        self.session = session

    def items(self) -> dict[str, int]:
        return dict(self.session.get(SESSION_KEY, {}))

    def count(self) -> int:
        return sum(self.items().values())

    def set(self, sku: str, quantity: int) -> None:
        items = self.items()
        if quantity > 0:
            items[sku] = quantity
        else:
            items.pop(sku, None)
        self.session[SESSION_KEY] = items

    def add(self, sku: str, quantity: int = 1) -> None:
        self.set(sku, self.items().get(sku, 0) + quantity)

    def clear(self) -> None:
        self.session.pop(SESSION_KEY, None)
