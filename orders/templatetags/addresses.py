"""Shipping addresses as people read them: {% load addresses %}{{ code|country_name }}."""

from __future__ import annotations

from django import template

from orders import addresses

register = template.Library()


@register.filter
def country_name(code: str) -> str:
    """The name of the country with this ISO code ("DE" → "Germany"); an unknown code as it is."""
    return addresses.country_name(code)
