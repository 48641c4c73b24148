"""The order admin's forms: the list's search and filters, the address and notes, a note."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms

from orders import addresses
from orders.domain import Order, OrderStatus, ShippingAddress
from orders.forms import CountryField
from orders.money import decimal_text, format_money

# The short reference customers see ("90385D94"): the order id's first 8 hex characters.
REFERENCE = re.compile(r"^#?([0-9a-fA-F]{8})$")


@dataclass(frozen=True, slots=True)
class OrderSearch:
    """What the search box asked for: exactly one of an order id, a reference, an email or a
    customer account's username."""

    order_id: uuid.UUID | None = None
    reference: str | None = None
    email: str | None = None
    username: str | None = None


def parse_search(q: str) -> OrderSearch | None:
    """The search a box's text means, or None when it can be none of them (it has spaces)."""
    q = q.strip()
    try:
        return OrderSearch(order_id=uuid.UUID(q))
    except ValueError:
        pass
    if match := REFERENCE.match(q):
        return OrderSearch(reference=match.group(1).lower())
    if any(character.isspace() for character in q):
        return None
    if "@" in q:
        return OrderSearch(email=q)
    return OrderSearch(username=q)


# No amount staff type has this many digits before the decimal point.
MONEY_DIGITS = 12


def currency_decimals(currency: str) -> int:
    """How many decimals `currency` has (USD 2, JPY 0, KWD 3): read off `decimal_text`, so the
    one table of exponents stays in orders.money."""
    return len(decimal_text(1, currency).partition(".")[2])


def parse_money(text: str, currency: str) -> int:
    """Staff's "12.50" (or "1,200", "$12.50", "12.50 USD") of `currency` as minor units (1250).

    Raises `forms.ValidationError` for what is not an amount, or has more decimals than the
    currency (JPY has none), or is not more than zero.
    """
    decimals = currency_decimals(currency)
    cleaned = text.strip().upper().replace(",", "").replace(" ", "")
    for mark in (currency.upper(), "$", "€", "£"):
        cleaned = cleaned.replace(mark, "")
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise forms.ValidationError(
            f"Enter an amount of {currency.upper()}, such as {decimal_text(1250 * 10**decimals // 100, currency)}.",
            code="invalid",
        ) from None
    if not amount.is_finite():
        raise forms.ValidationError(f"Enter an amount of {currency.upper()}.", code="invalid")
    if amount <= 0:
        raise forms.ValidationError("The amount must be more than zero.", code="min_value")
    if amount.adjusted() >= MONEY_DIGITS:  # "1e999999999" would be a billion digits to make
        raise forms.ValidationError("The amount is too large.", code="max_value")
    minor = amount.scaleb(decimals)
    if minor != minor.to_integral_value():
        places = f"{decimals} decimal{'s' if decimals != 1 else ''}" if decimals else "no decimals"
        raise forms.ValidationError(f"{currency.upper()} has {places}.", code="decimals")
    return int(minor)


class MoneyField(forms.CharField):
    """An amount typed as money ("12.50") in a currency set on the field; cleans to minor units.

    `maximum` (minor units), when set, is the most it may be; `maximum_message` says so, with
    `{maximum}` for that amount as money."""

    def __init__(
        self,
        *,
        currency: str = "USD",
        maximum: int | None = None,
        maximum_message: str = "At most {maximum}.",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)
        self.currency = currency
        self.maximum = maximum
        self.maximum_message = maximum_message
        self.widget.attrs.setdefault("inputmode", "decimal")
        self.widget.attrs.setdefault("autocomplete", "off")

    def to_python(self, value: Any) -> int | None:  # type: ignore[override]
        text = super().to_python(value)
        if text in self.empty_values:
            return None
        return parse_money(text, self.currency)

    def validate(self, value: Any) -> None:
        if value is None and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        if value is not None and self.maximum is not None and value > self.maximum:
            raise forms.ValidationError(
                self.maximum_message.format(maximum=format_money(self.maximum, self.currency)),
                code="max_value",
            )

    def run_validators(self, value: Any) -> None:
        # The string validators (max_length) ran on the text in to_python's parent already.
        return None

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int):
            return decimal_text(value, self.currency)
        return value


class OrderFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=254)
    status = forms.ChoiceField(choices=[("", "All"), *OrderStatus.choices()], required=False)
    created_from = forms.DateField(required=False, label="Created from")
    created_to = forms.DateField(required=False, label="Created to (inclusive)")
    sort = forms.ChoiceField(choices=[("newest", "Newest first"), ("oldest", "Oldest first")], required=False)
    cursor = forms.CharField(required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("created_from"), data.get("created_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return data


class OrderEditForm(forms.Form):
    name = forms.CharField(max_length=200)
    line1 = forms.CharField(label="Address", max_length=200)
    line2 = forms.CharField(label="Address line 2", max_length=200, required=False)
    city = forms.CharField(max_length=100)
    postal_code = forms.CharField(label="Postal code", max_length=20)
    # The checkout's select of ISO 3166 countries by name: staff never type a code.
    country = CountryField(
        choices=lambda: [("", "Choose…"), *addresses.country_choices()],
        error_messages={"invalid_choice": "Choose a country from the list."},
    )
    region = forms.CharField(label="State / province", max_length=100, required=False)
    notes = forms.CharField(max_length=2000, required=False, widget=forms.Textarea({"rows": 3, "cols": 60}))
    # The version the form was made from: saving over someone else's newer change is refused.
    version = forms.IntegerField(widget=forms.HiddenInput)

    @classmethod
    def for_order(cls, order: Order) -> OrderEditForm:
        return cls(
            initial={**order.shipping_address.as_dict(), "notes": order.notes, "version": order.version}
        )

    def clean_country(self) -> str:
        try:
            return addresses.country_code(self.cleaned_data["country"])
        except addresses.AddressError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("country"):
            try:
                data["region"] = addresses.region_code(data["country"], data.get("region", ""))
            except addresses.AddressError as exc:
                self.add_error("region", str(exc))
        return data

    def shipping_address(self) -> ShippingAddress:
        return ShippingAddress.from_dict(self.cleaned_data)


class NoteForm(forms.Form):
    text = forms.CharField(label="Note", max_length=2000, widget=forms.Textarea({"rows": 2, "cols": 60}))
