"""Forms of the shop pages: they check the shape of input only. Prices, stock and every other
business rule are decided by `orders.services`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

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


class CheckoutForm(forms.Form):
    name = forms.CharField(
        label="Full name", max_length=200, widget=forms.TextInput({"autocomplete": "name"})
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
    postal_code = forms.CharField(
        label="Postal code", max_length=20, widget=forms.TextInput({"autocomplete": "postal-code"})
    )
    country = forms.RegexField(
        regex=r"^[A-Za-z]{2}$",
        max_length=2,
        help_text="Two-letter country code, such as US, GB or DE.",
        error_messages={"invalid": "Use a two-letter country code, such as US or DE."},
        widget=forms.TextInput({"autocomplete": "country", "size": 2, "class": "short"}),
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
        if user.is_authenticated and user.email:
            # Signed-in customers may leave it empty: the order goes to their account's email.
            self.fields["email"].required = False
            self.fields["email"].help_text = f"Leave empty to use {user.email}."

    def clean_country(self) -> str:
        return self.cleaned_data["country"].upper()

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
        )


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
