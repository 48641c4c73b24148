"""`{{ amount_minor|money:currency }}`: integer minor units shown as money, e.g. 1450 USD → $14.50."""

from __future__ import annotations

from django import template

register = template.Library()

# ISO 4217 currencies whose minor unit is not the cent (exponent 2).
_ZERO_DECIMAL = [
    "BIF",
    "CLP",
    "DJF",
    "GNF",
    "ISK",
    "JPY",
    "KMF",
    "KRW",
    "PYG",
    "RWF",
    "UGX",
    "VND",
    "VUV",
    "XAF",
    "XOF",
    "XPF",
]
_THREE_DECIMAL = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"]
_EXPONENTS = {**dict.fromkeys(_ZERO_DECIMAL, 0), **dict.fromkeys(_THREE_DECIMAL, 3)}
# Only symbols nobody can misread; every other currency is shown by its code ("14.50 CHF").
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


def format_money(amount_minor: int, currency: str) -> str:
    """`amount_minor` (cents, pence...) of `currency` as text: "$1,234.50", "14.50 CHF", "1,200 JPY"."""
    currency = currency.upper()
    exponent = _EXPONENTS.get(currency, 2)
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(amount_minor), 10**exponent)
    number = f"{major:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    symbol = _SYMBOLS.get(currency)
    if symbol:
        return f"{sign}{symbol}{number}"
    return f"{sign}{number} {currency}"


@register.filter
def money(amount_minor: object, currency: str = "USD") -> str:
    """Template filter over `format_money`; anything that is not a whole number shows as ""."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        return ""
    return format_money(amount_minor, currency or "USD")
