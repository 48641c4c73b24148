"""The orders API: thin views that validate input, call one service or selector, render output."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.serializer_helpers import ReturnDict
from rest_framework.views import APIView

from access.permissions import HasScopes
from access.throttling import client_address
from core.serializers import ErrorSerializer
from orders import selectors, services
from orders.domain import Order, OrderEvent, OrderStatus, ShippingAddress
from orders.repositories import get_order_repository
from orders.serializers import (
    OrderCreateInputSerializer,
    OrderDetailOutputSerializer,
    OrderEventOutputSerializer,
    OrderListQuerySerializer,
    OrderOutputSerializer,
    OrderPageOutputSerializer,
    OrderUpdateInputSerializer,
    ProductOutputSerializer,
)

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

ERRORS: dict[int, OpenApiResponse] = {
    code: OpenApiResponse(ErrorSerializer, description=text)
    for code, text in {
        400: "Invalid input; `fields` says what is wrong with each field.",
        401: "Authentication is needed.",
        403: "Not allowed for this user.",
        404: "No such order, or not one of yours.",
        409: "Not possible in the order's current status, or changed concurrently.",
        422: "The Idempotency-Key was used with a different request.",
    }.items()
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}


class _WrittenEvents:
    """The audit trail of an order just written, as the repository would read it back."""

    def __init__(self, events: list[OrderEvent]) -> None:
        self._events = events

    def events(self, order_id: Any) -> list[OrderEvent]:
        return list(self._events)


# Output serializers keep no state between calls (no context): built once, their fields are not
# deep-copied again for every answer (a tenth of a new order's CPU time).
_ORDER_OUTPUT = OrderOutputSerializer()
_EVENTS_OUTPUT = OrderEventOutputSerializer(many=True)


def _render_detail(
    order: Order, user: AbstractBaseUser | AnonymousUser, *, written: list[OrderEvent] | None = None
) -> dict[str, Any]:
    """The order with its audit trail (`OrderDetailOutputSerializer`'s shape); `written`: the
    whole trail of an order just created, so it is not read back. Customers do not read staff's
    notes and reasons (selectors.order_events_for)."""
    source = _WrittenEvents(written) if written is not None else get_order_repository()
    events = selectors.order_events_for(repository=source, order=order, user=user)  # type: ignore[arg-type]
    return ReturnDict(
        {**_ORDER_OUTPUT.to_representation(order), "events": _EVENTS_OUTPUT.to_representation(events)},
        serializer=_ORDER_OUTPUT,
    )


def _load_order(order_id: str, user: AbstractBaseUser | AnonymousUser) -> Order:
    return selectors.order_get(repository=get_order_repository(), order_id=order_id, user=user)


class ProductListApi(APIView):
    permission_classes = [HasScopes, permissions.AllowAny]
    required_scopes = {"GET": None}  # the catalog is public: any key or token may read it

    @extend_schema(operation_id="products_list", responses={200: ProductOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(ProductOutputSerializer(selectors.product_list(), many=True).data)


class ProductDetailApi(APIView):
    permission_classes = [HasScopes, permissions.AllowAny]
    required_scopes = {"GET": None}

    @extend_schema(operation_id="products_retrieve", responses={200: ProductOutputSerializer, **_errors(404)})
    def get(self, request: Request, sku: str) -> Response:
        product = selectors.product_get(sku=sku)
        if product is None:
            return Response(
                {"code": "not_found", "message": f"No product with sku {sku!r}."},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(ProductOutputSerializer(product).data)


class OrderCollectionApi(APIView):
    required_scopes = {"GET": "orders:read", "POST": "orders:write"}

    def get_permissions(self) -> list[permissions.BasePermission]:
        if self.request.method == "POST":
            return [HasScopes(), permissions.AllowAny()]  # guests may place orders
        return [HasScopes(), permissions.IsAuthenticated()]

    @extend_schema(
        operation_id="orders_list",
        parameters=[OrderListQuerySerializer],
        responses={200: OrderPageOutputSerializer, **_errors(400, 401)},
        description="Your orders (all orders for staff), newest first unless `ordering=created_at`.",
    )
    def get(self, request: Request) -> Response:
        query = OrderListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        page = selectors.order_list(
            repository=get_order_repository(),
            user=request.user,
            status=OrderStatus(params["status"]) if params.get("status") else None,
            created_from=params.get("created_after"),
            created_to=params.get("created_before"),
            newest_first=params["ordering"] == "-created_at",
            limit=params["page_size"],
            cursor=params.get("cursor"),
        )
        next_url = None
        if page.next_cursor:
            next_params = request.query_params.copy()
            next_params["cursor"] = page.next_cursor
            next_url = request.build_absolute_uri(f"{request.path}?{next_params.urlencode()}")
        return Response(
            {
                "results": OrderOutputSerializer(page.orders, many=True).data,
                "next": next_url,
                "next_cursor": page.next_cursor,
            }
        )

    @extend_schema(
        operation_id="orders_create",
        request=OrderCreateInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location=OpenApiParameter.HEADER,
                required=False,
                description="Repeat a request safely: the same key and body return the same order.",
            )
        ],
        responses={
            201: OrderDetailOutputSerializer,
            200: OpenApiResponse(OrderDetailOutputSerializer, description="A replay of an earlier request."),
            **_errors(400, 422),
        },
        description="Place an order. The server prices it from the catalog and reserves its stock.",
    )
    def post(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "")
        if key and not IDEMPOTENCY_KEY.match(key):
            raise ValidationError({"Idempotency-Key": ["Use 1 to 255 printable ASCII characters."]})
        data = OrderCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = request.user
        email = data.validated_data.get("email") or (user.email if user.is_authenticated else "")
        if not email:
            raise ValidationError({"email": ["An email address is needed for the order."]})
        order, created, events = services.order_place_with_events(
            repository=get_order_repository(),
            actor=services.actor_for(user, guest_email=email),
            customer_id=user.pk if user.is_authenticated else None,
            email=email,
            lines=data.line_requests(),
            shipping_address=ShippingAddress.from_dict(data.validated_data["shipping_address"]),
            notes=data.validated_data["notes"],
            idempotency_scope=services.idempotency_scope_for(user),
            idempotency_key=key,
            client_address=client_address(request),
        )
        return Response(
            _render_detail(order, user, written=events),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            headers={"Location": f"/api/orders/{order.id}"},
        )


class OrderDetailApi(APIView):
    permission_classes = [HasScopes, permissions.IsAuthenticated]
    required_scopes = {"GET": "orders:read", "PATCH": "orders:write", "DELETE": "orders:write"}

    @extend_schema(
        operation_id="orders_retrieve", responses={200: OrderDetailOutputSerializer, **_errors(401, 404)}
    )
    def get(self, request: Request, order_id: str) -> Response:
        return Response(_render_detail(_load_order(order_id, request.user), request.user))

    @extend_schema(
        operation_id="orders_partial_update",
        request=OrderUpdateInputSerializer,
        responses={200: OrderDetailOutputSerializer, **_errors(400, 401, 403, 404, 409)},
        description=(
            "Change the shipping address or notes, append a note, or (staff only) apply a status"
            " transition the state machine allows. Other fields cannot be set."
        ),
    )
    def patch(self, request: Request, order_id: str) -> Response:
        order = _load_order(order_id, request.user)
        data = OrderUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = data.validated_data
        address = changes.get("shipping_address")
        order = services.order_patch(
            repository=get_order_repository(),
            order_id=order.id,
            actor=services.actor_for(request.user),
            shipping_address=ShippingAddress.from_dict(address) if address else None,
            notes=changes.get("notes"),
            note=changes.get("note"),
            status=OrderStatus(changes["status"]) if "status" in changes else None,
        )
        return Response(_render_detail(order, request.user))

    @extend_schema(
        operation_id="orders_cancel",
        request=None,
        responses={200: OrderDetailOutputSerializer, **_errors(401, 404, 409)},
        description="Cancel the order (it is kept, never deleted) and release its stock.",
    )
    def delete(self, request: Request, order_id: str) -> Response:
        order = _load_order(order_id, request.user)
        order = services.order_cancel(
            repository=get_order_repository(), order_id=order.id, actor=services.actor_for(request.user)
        )
        return Response(_render_detail(order, request.user))
