"""Input and output shapes of the orders API. Validation of form only: no business rules here."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from orders import addresses
from orders.domain import TRANSITIONS, OrderStatus
from orders.services import LineRequest

ORDER_STATUS_CHOICES = OrderStatus.choices()


class RejectUnknownFieldsMixin:
    """Fields a client may not set get a 400 naming them, instead of being silently dropped."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = set(data) - set(self.fields)  # type: ignore[attr-defined]
            if unknown:
                raise serializers.ValidationError(
                    {name: ["This field cannot be set."] for name in sorted(unknown)}
                )
        return super().to_internal_value(data)  # type: ignore[misc]


# --- input ----------------------------------------------------------------------------------
class ShippingAddressSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    line1 = serializers.CharField(max_length=200)
    line2 = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    city = serializers.CharField(max_length=100)
    postal_code = serializers.CharField(max_length=20)
    country = serializers.CharField(max_length=100, help_text="ISO 3166-1 alpha-2 code, such as US or DE.")
    region = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text="State or province: its ISO 3166-2 code (CA or US-CA) or name; stored as the short code.",
    )

    def validate_country(self, value: str) -> str:
        try:
            return addresses.country_code(value)
        except addresses.AddressError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            attrs["region"] = addresses.region_code(attrs["country"], attrs.get("region", ""))
        except addresses.AddressError as exc:
            raise serializers.ValidationError({"region": [str(exc)]}) from exc
        return attrs


class OrderLineInputSerializer(serializers.Serializer):
    """A line as a client sends it: only the sku and the quantity. Prices come from the catalog."""

    sku = serializers.CharField(max_length=64)
    quantity = serializers.IntegerField(min_value=1, max_value=settings.ORDER_MAX_QUANTITY_PER_LINE)


class OrderCreateInputSerializer(serializers.Serializer):
    lines = OrderLineInputSerializer(many=True, allow_empty=False, max_length=settings.ORDER_MAX_LINES)
    shipping_address = ShippingAddressSerializer()
    email = serializers.EmailField(
        required=False, help_text="Contact email. Required for guest orders; defaults to the user's."
    )
    notes = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def line_requests(self) -> list[LineRequest]:
        return [
            LineRequest(sku=line["sku"], quantity=line["quantity"]) for line in self.validated_data["lines"]
        ]


class OrderUpdateInputSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    shipping_address = ShippingAddressSerializer(required=False)
    notes = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    note = serializers.CharField(
        max_length=2000, required=False, help_text="A note to append to the order's audit trail."
    )
    status = serializers.ChoiceField(
        choices=ORDER_STATUS_CHOICES,
        required=False,
        help_text="Staff only: a status the state machine allows from the current one.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError(
                "Nothing to change: send shipping_address, notes, note or status."
            )
        return attrs


class OrderListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ORDER_STATUS_CHOICES, required=False)
    created_after = serializers.DateTimeField(required=False, help_text="Inclusive, ISO 8601.")
    created_before = serializers.DateTimeField(required=False, help_text="Exclusive, ISO 8601.")
    ordering = serializers.ChoiceField(
        choices=["-created_at", "created_at"], required=False, default="-created_at"
    )
    page_size = serializers.IntegerField(min_value=1, max_value=100, required=False, default=20)
    cursor = serializers.CharField(required=False, max_length=1000)


# --- output ---------------------------------------------------------------------------------
class OrderLineOutputSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    unit_price_minor = serializers.IntegerField()
    quantity = serializers.IntegerField()
    line_total_minor = serializers.IntegerField()


class ShippingAddressOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    line1 = serializers.CharField()
    line2 = serializers.CharField()
    city = serializers.CharField()
    postal_code = serializers.CharField()
    region = serializers.CharField(default="")
    country = serializers.CharField()


class OrderOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=ORDER_STATUS_CHOICES)
    allowed_transitions = serializers.SerializerMethodField()
    currency = serializers.CharField()
    subtotal_minor = serializers.IntegerField()
    shipping_minor = serializers.IntegerField()
    total_minor = serializers.IntegerField()
    email = serializers.EmailField()
    customer_id = serializers.IntegerField(allow_null=True)
    shipping_address = ShippingAddressOutputSerializer()
    notes = serializers.CharField()
    lines = OrderLineOutputSerializer(many=True)
    version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_allowed_transitions(self, order: Any) -> list[str]:
        return sorted(TRANSITIONS[order.status])


class OrderEventOutputSerializer(serializers.Serializer):
    sequence = serializers.IntegerField()
    type = serializers.CharField()
    from_status = serializers.CharField(allow_null=True)
    to_status = serializers.CharField(allow_null=True)
    actor = serializers.CharField()
    data = serializers.JSONField()
    created_at = serializers.DateTimeField()


class OrderDetailOutputSerializer(OrderOutputSerializer):
    """An order with its audit trail, passed as `context["events"]`."""

    events = serializers.SerializerMethodField()

    @extend_schema_field(OrderEventOutputSerializer(many=True))
    def get_events(self, order: Any) -> list[dict[str, Any]]:
        return OrderEventOutputSerializer(self.context["events"], many=True).data


class OrderPageOutputSerializer(serializers.Serializer):
    results = OrderOutputSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next page, or null on the last.")
    next_cursor = serializers.CharField(allow_null=True)


class ProductOutputSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    price_minor = serializers.IntegerField()
    currency = serializers.CharField()
    stock = serializers.IntegerField()
    in_stock = serializers.SerializerMethodField()
    image = serializers.SerializerMethodField()

    def get_in_stock(self, product: Any) -> bool:
        return product.stock > 0

    def get_image(self, product: Any) -> str | None:
        return product.image.url if product.image else None
