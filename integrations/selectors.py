"""Reads of the integrations app: the delivery ledger."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from integrations.models import Delivery


def delivery_list(
    *,
    state: str | None = None,
    integration: str | None = None,
    order_id: uuid.UUID | None = None,
    limit: int = 100,
) -> QuerySet[Delivery]:
    """The ledger's deliveries, newest first, at most `limit`, narrowed by each filter given."""
    rows = Delivery.objects.order_by("-created_at")
    if state:
        rows = rows.filter(state=state)
    if integration:
        rows = rows.filter(integration=integration)
    if order_id:
        rows = rows.filter(order_id=order_id)
    return rows[:limit]


def delivery_get(*, delivery_id: uuid.UUID | str) -> Delivery | None:
    """The delivery with this id; None when there is none, or the id is not a UUID."""
    try:
        return Delivery.objects.get(id=uuid.UUID(str(delivery_id)))
    except (ValueError, Delivery.DoesNotExist):
        return None
