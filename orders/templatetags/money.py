"""`{{ amount_minor|money:currency }}`: integer minor units shown as money, e.g. 1450 USD → $14.50."""

from __future__ import annotations

from django import template

from orders.money import format_money

register = template.Library()


@register.filter
def money(amount_minor: object, currency: str = "USD") -> str:
    """Template filter over `format_money`; anything that is not a whole number shows as ""."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        return ""
    return format_money(amount_minor, currency or "USD")
