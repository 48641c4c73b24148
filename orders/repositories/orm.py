"""The default `OrderRepository`: the Django ORM, one database transaction per write."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import IntegrityError, transaction
from django.db.models import F, Q

from live import services as live
from orders import models
from orders.domain import (
    ConcurrentUpdate,
    DuplicateOrder,
    EventType,
    Order,
    OrderEvent,
    OrderLine,
    OrderNotFound,
    OrderPage,
    OrderQuery,
    OrderStatus,
    OutboxMessage,
    ShippingAddress,
    utcnow,
)
from orders.repositories.base import decode_cursor, encode_cursor


class DjangoOrderRepository:
    """Orders in the project's database. Writes join the caller's transaction if there is one."""

    shares_database_transaction = True

    def add(self, order: Order, *, outbox: Sequence[OutboxMessage] = ()) -> None:
        # One savepoint, around the insert a duplicate may refuse: the outer block is a
        # transaction of its own or joins the caller's without a savepoint of its own (an error
        # after the insert then rolls the caller's whole transaction back, never half an order).
        # A duplicate is raised once out of the block, whose transaction is still usable.
        duplicate: IntegrityError | None = None
        with transaction.atomic(savepoint=False):
            try:
                with transaction.atomic():
                    models.Order.objects.create(**self._order_fields(order), id=order.id)
            except IntegrityError as exc:
                duplicate = exc
            else:
                self._add_lines_events_and_outbox(order, outbox)
        if duplicate is not None:
            raise DuplicateOrder(f"Order {order.id} or its idempotency key is already stored.") from duplicate
        live.publish_order(order.id)  # once committed: the order page and /ops/ look again
        order.pending_events.clear()

    def _add_lines_events_and_outbox(self, order: Order, outbox: Sequence[OutboxMessage]) -> None:
        models.OrderLine.objects.bulk_create(
            models.OrderLine(
                order_id=order.id,
                position=position,
                product_id=line.product_id,
                sku=line.sku,
                name=line.name,
                unit_price_minor=line.unit_price_minor,
                quantity=line.quantity,
            )
            for position, line in enumerate(order.lines, start=1)
        )
        self._write_events_and_outbox(order, outbox)

    def save(self, order: Order, *, outbox: Sequence[OutboxMessage] = ()) -> None:
        # No savepoint inside the caller's transaction (the services' `_apply` has one): a failure
        # here fails the caller's whole write, which is what it would do anyway.
        with transaction.atomic(savepoint=False):
            fields = self._order_fields(order)
            # Lines are fixed when the order is placed; the rest may change.
            changed = models.Order.objects.filter(id=order.id, version=order.version).update(
                **{k: v for k, v in fields.items() if k != "created_at"}, version=F("version") + 1
            )
            if not changed:
                if models.Order.objects.filter(id=order.id).exists():
                    raise ConcurrentUpdate(order.id, order.version)
                raise OrderNotFound(order.id)
            self._write_events_and_outbox(order, outbox)
        # Once committed: the order page looks again, and /ops/ too, unless outbox entries were
        # written: then the relay tells /ops/ once their deliveries exist (one write, not two).
        live.publish_order(order.id, ops=not outbox)
        order.version += 1
        order.pending_events.clear()

    def get(self, order_id: uuid.UUID) -> Order:
        try:
            row = models.Order.objects.prefetch_related("lines").get(id=order_id)
        except (models.Order.DoesNotExist, ValueError) as exc:
            raise OrderNotFound(order_id) from exc
        return self._to_domain(row)

    def get_by_idempotency_key(self, *, scope: str, key: str) -> Order | None:
        row = (
            models.Order.objects.prefetch_related("lines")
            .filter(idempotency_scope=scope, idempotency_key=key)
            .first()
        )
        return self._to_domain(row) if row else None

    def list(self, query: OrderQuery) -> OrderPage:
        rows = models.Order.objects.prefetch_related("lines")
        if query.customer_id is not None:
            rows = rows.filter(customer_id=query.customer_id)
        if query.status is not None:
            rows = rows.filter(status=query.status)
        if query.created_from is not None:
            rows = rows.filter(created_at__gte=query.created_from)
        if query.created_to is not None:
            rows = rows.filter(created_at__lt=query.created_to)
        if query.email is not None:
            rows = rows.filter(email__iexact=query.email)
        if query.reference is not None:
            # The ids whose first 32 bits are the reference: a range of the primary key.
            rows = rows.filter(
                id__gte=uuid.UUID(query.reference + "0" * 24), id__lte=uuid.UUID(query.reference + "f" * 24)
            )
        position = decode_cursor(query)
        if query.newest_first:
            rows = rows.order_by("-created_at", "-id")
            if position:
                at, last_id = position
                rows = rows.filter(Q(created_at__lt=at) | Q(created_at=at, id__lt=last_id))
        else:
            rows = rows.order_by("created_at", "id")
            if position:
                at, last_id = position
                rows = rows.filter(Q(created_at__gt=at) | Q(created_at=at, id__gt=last_id))
        found = [self._to_domain(row) for row in rows[: query.limit + 1]]
        orders = found[: query.limit]
        next_cursor = encode_cursor(query, orders[-1]) if len(found) > query.limit else None
        return OrderPage(orders=orders, next_cursor=next_cursor)

    def events(self, order_id: uuid.UUID) -> list[OrderEvent]:
        return [
            OrderEvent(
                id=row.id,
                order_id=row.order_id,
                sequence=row.sequence,
                type=EventType(row.type),
                actor=row.actor,
                created_at=row.created_at,
                from_status=OrderStatus(row.from_status) if row.from_status else None,
                to_status=OrderStatus(row.to_status) if row.to_status else None,
                data=row.data,
            )
            for row in models.OrderEvent.objects.filter(order_id=order_id).order_by("sequence")
        ]

    def outbox(self, order_id: uuid.UUID) -> list[OutboxMessage]:
        return [
            self._outbox_message(row)
            for row in models.OutboxEntry.objects.filter(order_id=order_id).order_by(
                "created_at", "order_version"
            )
        ]

    def outbox_pending(
        self, *, limit: int, order_ids: Sequence[uuid.UUID] | None = None
    ) -> list[OutboxMessage]:
        rows = models.OutboxEntry.objects.filter(relayed_at__isnull=True)
        if order_ids is not None:
            rows = rows.filter(order_id__in=order_ids)
        # Tuples, not model instances: the relay reads these on every payment.
        return [
            OutboxMessage(
                id=id_,
                order_id=order_id,
                event_type=event_type,
                order_version=order_version,
                payload=payload,
                created_at=created_at,
            )
            for id_, order_id, event_type, order_version, payload, created_at in rows.order_by(
                "created_at", "order_version"
            ).values_list("id", "order_id", "event_type", "order_version", "payload", "created_at")[:limit]
        ]

    def outbox_mark_relayed(self, messages: Sequence[OutboxMessage]) -> None:
        models.OutboxEntry.objects.filter(
            id__in=[message.id for message in messages], relayed_at__isnull=True
        ).update(relayed_at=utcnow())

    # --- mapping ----------------------------------------------------------------------------
    @staticmethod
    def _order_fields(order: Order) -> dict[str, object]:
        return {
            "customer_id": order.customer_id,
            "email": order.email,
            "status": order.status.value,
            "currency": order.currency,
            "subtotal_minor": order.subtotal_minor,
            "shipping_minor": order.shipping_minor,
            "total_minor": order.total_minor,
            "shipping_address": order.shipping_address.as_dict(),
            "notes": order.notes,
            "last_event_sequence": order.last_event_sequence,
            "idempotency_scope": order.idempotency_scope,
            "idempotency_key": order.idempotency_key,
            "request_fingerprint": order.request_fingerprint,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
        }

    @staticmethod
    def _write_events_and_outbox(order: Order, outbox: Sequence[OutboxMessage]) -> None:
        models.OrderEvent.objects.bulk_create(
            models.OrderEvent(
                id=event.id,
                order_id=order.id,
                sequence=event.sequence,
                type=event.type.value,
                from_status=event.from_status.value if event.from_status else "",
                to_status=event.to_status.value if event.to_status else "",
                actor=event.actor,
                data=event.data,
                created_at=event.created_at,
            )
            for event in order.pending_events
        )
        models.OutboxEntry.objects.bulk_create(
            models.OutboxEntry(
                id=message.id,
                order_id=order.id,
                event_type=message.event_type,
                order_version=message.order_version,
                payload=message.payload,
                created_at=message.created_at,
            )
            for message in outbox
        )

    @staticmethod
    def _outbox_message(row: models.OutboxEntry) -> OutboxMessage:
        return OutboxMessage(
            id=row.id,
            order_id=row.order_id,
            event_type=row.event_type,
            order_version=row.order_version,
            payload=row.payload,
            created_at=row.created_at,
        )

    @staticmethod
    def _to_domain(row: models.Order) -> Order:
        return Order(
            id=row.id,
            customer_id=row.customer_id,
            email=row.email,
            status=OrderStatus(row.status),
            currency=row.currency,
            lines=[
                OrderLine(
                    product_id=line.product_id,
                    sku=line.sku,
                    name=line.name,
                    unit_price_minor=line.unit_price_minor,
                    quantity=line.quantity,
                )
                for line in sorted(row.lines.all(), key=lambda line: line.position)
            ],
            subtotal_minor=row.subtotal_minor,
            shipping_minor=row.shipping_minor,
            total_minor=row.total_minor,
            shipping_address=ShippingAddress.from_dict(row.shipping_address),
            notes=row.notes,
            version=row.version,
            last_event_sequence=row.last_event_sequence,
            idempotency_scope=row.idempotency_scope,
            idempotency_key=row.idempotency_key,
            request_fingerprint=row.request_fingerprint,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
