"""Stripe's refusals that localstripe lacks, with Stripe's own codes and messages.

Sources (checked when this was written):
- Minimum charge amounts: docs.stripe.com/currencies#minimum-and-maximum-charge-amounts (the
  table as carried by woocommerce-gateway-stripe and others citing it). For a currency not in the
  table Stripe converts to the settlement currency and applies its minimum; the stand-in has no
  exchange rates, so it checks only `amount >= 1` there.
- `amount_too_small`: "Amount must be at least $0.50 usd" / "Amount must be at least £0.30 gbp"
  (Stripe's answers quoted in public issue trackers), param `amount`.
- `amount_too_large`: "Refund amount ($25.00) is greater than unrefunded amount on charge
  ($21.45)" (reactioncommerce/reaction#3704) and "... is greater than charge amount (...)"
  when nothing was refunded yet (woocommerce-gateway-stripe#1315).
- `charge_already_refunded`: "Charge ch_... has already been refunded." (Sylius/StripePlugin#23).
- `parameter_invalid_integer`: "This value must be greater than or equal to 1.", param `amount`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from localstripe.errors import UserError

# Minor units, per docs.stripe.com/currencies (JPY is zero-decimal: ¥50 is 50).
MINIMUM_CHARGE_MINOR = {
    "usd": 50,
    "aed": 200,
    "aud": 50,
    "bgn": 100,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "czk": 1500,
    "dkk": 250,
    "eur": 50,
    "gbp": 30,
    "hkd": 400,
    "huf": 17500,
    "inr": 50,
    "jpy": 50,
    "mxn": 1000,
    "myr": 200,
    "nok": 300,
    "nzd": 50,
    "pln": 200,
    "ron": 200,
    "sek": 300,
    "sgd": 50,
    "thb": 1000,
}

# docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = {
    "bif",
    "clp",
    "djf",
    "gnf",
    "jpy",
    "kmf",
    "krw",
    "mga",
    "pyg",
    "rwf",
    "ugx",
    "vnd",
    "vuv",
    "xaf",
    "xof",
    "xpf",
}

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "aud": "$", "cad": "$", "nzd": "$"}
_SYMBOLS |= {"sgd": "$", "hkd": "$", "mxn": "$", "inr": "₹", "brl": "R$"}


def invalid_request(
    message: str, *, code: str | None = None, param: str | None = None, status: int = 400
) -> UserError:
    """A localstripe UserError carrying Stripe's `code` and `param` (type invalid_request_error)."""
    contents: dict[str, Any] = {}
    if code:
        contents["code"] = code
    if param:
        contents["param"] = param
    return UserError(status, message, contents)


def money(amount: int, currency: str, *, with_code: bool = False) -> str:
    """`amount` minor units as Stripe writes them in messages: "$0.50", "¥50", "15.00 czk"
    (with_code: "$0.50 usd", the form of the minimum-amount message)."""
    currency = currency.lower()
    major = str(amount) if currency in ZERO_DECIMAL else f"{Decimal(amount) / 100:.2f}"
    symbol = _SYMBOLS.get(currency)
    if symbol is None:
        return f"{major} {currency}"
    return f"{symbol}{major} {currency}" if with_code else f"{symbol}{major}"


def as_int(value: Any, *, param: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise invalid_request(
            f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        ) from None


def positive_amount(value: Any, *, param: str = "amount") -> int:
    amount = as_int(value, param=param)
    if amount < 1:
        raise invalid_request(
            "This value must be greater than or equal to 1.", code="parameter_invalid_integer", param=param
        )
    return amount


def check_charge_amount(amount: Any, currency: Any) -> None:
    """Refuse a PaymentIntent amount below Stripe's minimum charge for its currency."""
    if not isinstance(currency, str) or not currency:
        return  # localstripe's own validation answers that
    value = positive_amount(amount)
    minimum = MINIMUM_CHARGE_MINOR.get(currency.lower())
    if minimum is not None and value < minimum:
        raise invalid_request(
            f"Amount must be at least {money(minimum, currency, with_code=True)}",
            code="amount_too_small",
            param="amount",
        )


def check_refund_amount(
    *, amount: int, charge_id: str, charge_amount: int, refunded: int, currency: str
) -> None:
    """Refuse a refund of more than is left on the charge, as Stripe does."""
    remaining = charge_amount - refunded
    if remaining <= 0:
        raise invalid_request(
            f"Charge {charge_id} has already been refunded.", code="charge_already_refunded"
        )
    if amount > remaining:
        what = (
            f"charge amount ({money(charge_amount, currency)})"
            if refunded == 0
            else f"unrefunded amount on charge ({money(remaining, currency)})"
        )
        raise invalid_request(
            f"Refund amount ({money(amount, currency)}) is greater than {what}",
            code="amount_too_large",
            param="amount",
        )
