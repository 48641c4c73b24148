"""Forms of the shop pages: they check the shape of input only. Prices, stock and every other
business rule are decided by `orders.services`."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from orders import addresses
from orders.domain import OrderStatus, ShippingAddress

EXPIRED_FORM = "This checkout form has expired. Please reload the page and try again."


class AddToCartForm(forms.Form):
    quantity = forms.IntegerField(
        min_value=1,
        max_value=settings.ORDER_MAX_QUANTITY_PER_LINE,
        initial=1,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    next = forms.CharField(required=False, widget=forms.HiddenInput)


class CartUpdateForm(forms.Form):
    """A new quantity for one cart line; 0 removes the line."""

    quantity = forms.IntegerField(
        min_value=0,
        max_value=settings.ORDER_MAX_QUANTITY_PER_LINE,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )


class CountryField(forms.ChoiceField):
    """An ISO 3166-1 country from a select of names; the posted code in any case ("de")."""

    def to_python(self, value: Any) -> str:
        return super().to_python(value).strip().upper()


class CheckoutForm(forms.Form):
    name = forms.CharField(
        label="Full name", max_length=200, widget=forms.TextInput({"autocomplete": "name"})
    )
    country = CountryField(
        choices=[("", "Choose…")],  # filled in __init__: every ISO 3166 country, by name
        error_messages={"invalid_choice": "Choose a country from the list."},
        widget=forms.Select({"autocomplete": "country"}),
    )
    line1 = forms.CharField(
        label="Address", max_length=200, widget=forms.TextInput({"autocomplete": "address-line1"})
    )
    line2 = forms.CharField(
        label="Address line 2",
        max_length=200,
        required=False,
        help_text="Apartment, suite, floor (optional).",
        widget=forms.TextInput({"autocomplete": "address-line2"}),
    )
    city = forms.CharField(max_length=100, widget=forms.TextInput({"autocomplete": "address-level2"}))
    region = forms.ChoiceField(
        label="State / province",
        required=False,
        choices=[("", "Choose…")],  # filled in __init__: the regions of REGION_REQUIRED's countries
        help_text="Needed for the United States, Canada and Australia.",
        error_messages={"invalid_choice": "Choose a state or province from the list."},
        widget=forms.Select({"autocomplete": "address-level1"}),
    )
    postal_code = forms.CharField(
        label="Postal code", max_length=20, widget=forms.TextInput({"autocomplete": "postal-code"})
    )
    email = forms.EmailField(
        help_text="We send the order confirmation here.",
        widget=forms.EmailInput({"autocomplete": "email"}),
    )
    notes = forms.CharField(
        max_length=2000,
        required=False,
        help_text="Anything we should know about delivery (optional).",
        widget=forms.Textarea({"rows": 3}),
    )
    # Made once per rendering of the form: submitting the same form twice places one order.
    idempotency_key = forms.UUIDField(
        widget=forms.HiddenInput,
        error_messages={"required": EXPIRED_FORM, "invalid": EXPIRED_FORM},
    )

    def __init__(self, *args: Any, user: AbstractBaseUser | AnonymousUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["country"].choices = [("", "Choose…"), *addresses.country_choices()]
        region = self.fields["region"]
        region.choices = [("", "Choose…"), *addresses.region_choices()]
        # checkout.js shows the region only for these countries, under the country's own word.
        region.widget.attrs["data-labels"] = json.dumps(addresses.REGION_REQUIRED)
        if user.is_authenticated and user.email:
            # Signed-in customers may leave it empty: the order goes to their account's email.
            self.fields["email"].required = False
            self.fields["email"].help_text = f"Leave empty to use {user.email}."

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        country, region = data.get("country"), data.get("region") or ""
        if not country or "region" in self.errors:
            return data
        if region and not region.startswith(f"{country}-"):
            if addresses.region_required(country):
                self.add_error("region", f"That is not in {addresses.country_name(country)}.")
                return data
            region = ""  # chosen for another country, then the country changed (no JavaScript)
        if not region and addresses.region_required(country):
            word = addresses.REGION_REQUIRED[country].lower()
            self.add_error("region", f"Choose a {word} of {addresses.country_name(country)}.")
            return data
        data["region"] = addresses.region_code(country, region)
        return data

    def clean_email(self) -> str:
        email = self.cleaned_data["email"]
        if not email and self.user.is_authenticated:
            return self.user.email
        return email

    def shipping_address(self) -> ShippingAddress:
        data = self.cleaned_data
        return ShippingAddress(
            name=data["name"],
            line1=data["line1"],
            line2=data["line2"],
            city=data["city"],
            postal_code=data["postal_code"],
            country=data["country"],
            region=data["region"],
        )

    @staticmethod
    def initial_for_address(address: ShippingAddress) -> dict[str, str]:
        """The form's fields filled from an earlier order's address (a returning customer)."""
        initial = address.as_dict()
        if address.region:
            initial["region"] = f"{address.country}-{address.region}"
        return initial


class OrderFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "All statuses"), *OrderStatus.choices()], required=False)

    def selected_status(self) -> OrderStatus | None:
        """The chosen status, or None for every status (also when the input is not a status)."""
        if self.is_valid() and self.cleaned_data["status"]:
            return OrderStatus(self.cleaned_data["status"])
        return None


class SignUpForm(UserCreationForm):
    email = forms.EmailField(
        help_text="For order confirmations.", widget=forms.EmailInput({"autocomplete": "email"})
    )

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")
