"""The order admin's forms: the list's search and filters, the address and notes, a note."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from django import forms

from orders import addresses
from orders.domain import Order, OrderStatus, ShippingAddress

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
    country = forms.RegexField(
        regex=r"^[A-Za-z]{2}$",
        max_length=2,
        help_text="Two-letter country code.",
        error_messages={"invalid": "Use a two-letter country code, such as US or DE."},
        widget=forms.TextInput({"size": 2}),
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
