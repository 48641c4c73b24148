"""Money is integer minor units (cents, pence...) everywhere; these turn it into text."""

from __future__ import annotations

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


def decimal_text(amount_minor: int, currency: str) -> str:
    """Minor units as a plain decimal string, for machines: 2900 EUR → "29.00", 1200 JPY → "1200"."""
    exponent = _EXPONENTS.get(currency.upper(), 2)
    sign = "-" if amount_minor < 0 else ""
    major, minor = divmod(abs(int(amount_minor)), 10**exponent)
    return f"{sign}{major}" + (f".{minor:0{exponent}d}" if exponent else "")
