"""Order services: server-side pricing, stock, idempotency, atomic audit trail, edits, retries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orders import services
from orders.domain import (
    Actor,
    ConcurrentUpdate,
    EventType,
    IdempotencyConflict,
    IllegalTransition,
    Order,
    OrderNotEditable,
    OrderNotFound,
    OrderQuery,
    OrderStatus,
    OrderValidationError,
    OutboxMessage,
    ShippingAddress,
    StatusChangeNotAllowed,
)
from orders.models import Order as OrderRow
from orders.models import OrderEvent as OrderEventRow
from orders.models import Product
from orders.repositories.orm import DjangoOrderRepository
from orders.services import LineRequest
from tests.conftest import ADDRESS
from tests.orders.factories import ProductFactory

pytestmark = pytest.mark.django_db

GUEST = Actor(kind="guest", label="g@example.com")


def place(repository: Any, lines: dict[str, int], **kwargs: Any) -> tuple[Order, bool]:
    kwargs.setdefault("email", "g@example.com")
    kwargs.setdefault("customer_id", None)
    return services.order_place(
        repository=repository,
        actor=GUEST,
        lines=[LineRequest(sku=sku, quantity=quantity) for sku, quantity in lines.items()],
        shipping_address=ADDRESS,
        **kwargs,
    )


def stock(sku: str) -> int:
    return Product.objects.get(sku=sku).stock


def test_prices_come_from_the_catalog(repository: Any, mug: Any, tee: Any, settings: Any) -> None:
    settings.ORDER_SHIPPING_FLAT_MINOR = 499
    order, created = place(repository, {"MUG-1": 2, "TEE-1": 1})
    assert created
    assert [(line.sku, line.unit_price_minor, line.quantity) for line in order.lines] == [
        ("MUG-1", 1450, 2),
        ("TEE-1", 2400, 1),
    ]
    assert (order.subtotal_minor, order.shipping_minor, order.total_minor) == (5300, 499, 5799)
    stored = repository.get(order.id)
    assert stored.total_minor == 5799 and stored.status == OrderStatus.PENDING_PAYMENT


def test_price_is_captured_at_order_time(repository: Any, mug: Any) -> None:
    order, _ = place(repository, {"MUG-1": 1})
    Product.objects.filter(sku="MUG-1").update(price_minor=9999, name="Renamed")
    line = repository.get(order.id).lines[0]
    assert (line.unit_price_minor, line.name) == (1450, "Mug")


def test_repeated_skus_are_merged(repository: Any, mug: Any) -> None:
    order, _ = services.order_place(
        repository=repository,
        actor=GUEST,
        customer_id=None,
        email="g@example.com",
        lines=[LineRequest("MUG-1", 1), LineRequest("MUG-1", 2)],
        shipping_address=ADDRESS,
    )
    assert [(line.sku, line.quantity) for line in order.lines] == [("MUG-1", 3)]
    assert stock("MUG-1") == 7


def test_stock_is_reserved(repository: Any, mug: Any, tee: Any) -> None:
    place(repository, {"MUG-1": 4, "TEE-1": 5})
    assert (stock("MUG-1"), stock("TEE-1")) == (6, 0)


def test_over_order_is_refused_and_nothing_is_reserved(repository: Any, mug: Any, tee: Any) -> None:
    with pytest.raises(OrderValidationError) as raised:
        place(repository, {"MUG-1": 3, "TEE-1": 6})
    assert "Only 5 of TEE-1 left" in raised.value.fields["lines"][0]
    assert (stock("MUG-1"), stock("TEE-1")) == (10, 5)
    assert not repository.list(OrderQuery()).orders


@pytest.mark.parametrize("sku", ["NOPE", "OFF-1"])
def test_unknown_or_inactive_products_are_refused(repository: Any, mug: Any, sku: str) -> None:
    ProductFactory(sku="OFF-1", active=False, stock=5)
    with pytest.raises(OrderValidationError) as raised:
        place(repository, {"MUG-1": 1, sku: 1})
    assert sku in raised.value.fields["lines"][0]
    assert stock("MUG-1") == 10
    assert not repository.list(OrderQuery()).orders


def test_one_order_cannot_mix_currencies(repository: Any, mug: Any) -> None:
    ProductFactory(sku="EUR-1", currency="EUR")
    with pytest.raises(OrderValidationError, match="Invalid input"):
        place(repository, {"MUG-1": 1, "EUR-1": 1})


@pytest.mark.parametrize("lines", [{}, {"MUG-1": 0}, {"MUG-1": 101}])
def test_empty_or_out_of_range_lines_are_refused(repository: Any, mug: Any, lines: dict[str, int]) -> None:
    with pytest.raises(OrderValidationError):
        place(repository, lines)


def test_creation_writes_one_created_event(repository: Any, mug: Any) -> None:
    order, _ = place(repository, {"MUG-1": 2})
    events = repository.events(order.id)
    assert len(events) == 1
    assert events[0].type == EventType.CREATED
    assert events[0].to_status == OrderStatus.PENDING_PAYMENT
    assert events[0].actor == "guest:g@example.com"
    assert events[0].data["total_minor"] == 2900


class ExplodingRepository(DjangoOrderRepository):
    """Writes everything, then fails before the transaction commits."""

    def add(self, order: Order, *, outbox: Any = ()) -> None:
        super().add(order, outbox=outbox)
        raise RuntimeError("the process died here")

    def save(self, order: Order, *, outbox: Any = ()) -> None:
        super().save(order, outbox=outbox)
        raise RuntimeError("the process died here")


@pytest.mark.django_db(transaction=True)
def test_a_failure_mid_placement_leaves_no_order_no_event_and_no_reservation(mug: Any) -> None:
    with pytest.raises(RuntimeError):
        place(ExplodingRepository(), {"MUG-1": 3})
    assert not OrderRow.objects.exists()
    assert not OrderEventRow.objects.exists()
    assert stock("MUG-1") == 10


@pytest.mark.django_db(transaction=True)
def test_a_failure_mid_transition_leaves_status_events_and_stock(mug: Any) -> None:
    # The ORM store's one transaction; DynamoDB's counterpart is in test_stock_boundary.py.
    repository = DjangoOrderRepository()
    order, _ = place(repository, {"MUG-1": 3})
    with pytest.raises(RuntimeError):
        services.order_cancel(repository=ExplodingRepository(), order_id=order.id, actor=GUEST)
    assert repository.get(order.id).status == OrderStatus.PENDING_PAYMENT
    assert len(repository.events(order.id)) == 1
    assert stock("MUG-1") == 7


class TestIdempotentPlacement:
    def test_same_key_and_request_returns_the_first_order(self, repository: Any, mug: Any) -> None:
        first, created = place(repository, {"MUG-1": 2}, idempotency_scope="anonymous", idempotency_key="k")
        again, created_again = place(
            repository, {"MUG-1": 2}, idempotency_scope="anonymous", idempotency_key="k"
        )
        assert created and not created_again
        assert again.id == first.id
        assert stock("MUG-1") == 8
        assert len(repository.list(OrderQuery()).orders) == 1

    def test_same_key_other_request_conflicts(self, repository: Any, mug: Any) -> None:
        place(repository, {"MUG-1": 2}, idempotency_scope="anonymous", idempotency_key="k")
        with pytest.raises(IdempotencyConflict):
            place(repository, {"MUG-1": 3}, idempotency_scope="anonymous", idempotency_key="k")
        assert stock("MUG-1") == 8

    def test_keys_are_per_scope(self, repository: Any, mug: Any) -> None:
        a, _ = place(repository, {"MUG-1": 1}, idempotency_scope="user:1", idempotency_key="k")
        b, _ = place(repository, {"MUG-1": 1}, idempotency_scope="user:2", idempotency_key="k")
        assert a.id != b.id

    def test_losing_a_race_on_the_key_returns_the_winner(self, mug: Any) -> None:
        """The key was free when checked but taken when written: the winner's order comes back."""
        repository = DjangoOrderRepository()
        winner, _ = place(repository, {"MUG-1": 1}, idempotency_scope="s", idempotency_key="race")

        class LateRepository(DjangoOrderRepository):
            def get_by_idempotency_key(self, *, scope: str, key: str) -> Order | None:
                self.calls = getattr(self, "calls", 0) + 1
                return None if self.calls == 1 else super().get_by_idempotency_key(scope=scope, key=key)

        order, created = place(LateRepository(), {"MUG-1": 1}, idempotency_scope="s", idempotency_key="race")
        assert (order.id, created) == (winner.id, False)
        assert stock("MUG-1") == 9


class TestEditsAndNotes:
    def test_update_records_what_changed(
        self, repository: Any, place: Callable[..., Order], customer: Any
    ) -> None:
        order = place(customer=customer)
        new_address = ShippingAddress(
            name="Ada", line1="1 New St", city="Bath", postal_code="BA1", country="GB"
        )
        updated = services.order_update(
            repository=repository,
            order_id=order.id,
            actor=services.actor_for(customer),
            shipping_address=new_address,
            notes="Ring twice",
        )
        assert updated.version == 2
        stored = repository.get(order.id)
        assert (stored.shipping_address, stored.notes) == (new_address, "Ring twice")
        edit = repository.events(order.id)[-1]
        assert edit.type == EventType.EDITED
        assert set(edit.data["changed"]) == {"shipping_address", "notes"}
        assert edit.data["changed"]["notes"] == {"from": "", "to": "Ring twice"}
        assert edit.actor == f"customer:{customer.pk}"

    def test_an_update_that_changes_nothing_writes_nothing(
        self, repository: Any, place: Callable[..., Order], customer: Any
    ) -> None:
        order = place(customer=customer)
        services.order_update(repository=repository, order_id=order.id, actor=Actor.system(), notes="")
        assert repository.get(order.id).version == 1
        assert len(repository.events(order.id)) == 1

    def test_customers_cannot_edit_a_paid_order_but_staff_can(
        self, repository: Any, place: Callable[..., Order], customer: Any, staff: Any
    ) -> None:
        order = place(customer=customer)
        services.order_transition(
            repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=Actor.system()
        )
        with pytest.raises(OrderNotEditable):
            services.order_update(
                repository=repository, order_id=order.id, actor=services.actor_for(customer), notes="x"
            )
        services.order_update(
            repository=repository, order_id=order.id, actor=services.actor_for(staff), notes="x"
        )
        assert repository.get(order.id).notes == "x"

    def test_notes_are_appended_to_the_trail(
        self, repository: Any, place: Callable[..., Order], staff: Any
    ) -> None:
        order = place()
        services.order_add_note(
            repository=repository,
            order_id=order.id,
            actor=services.actor_for(staff),
            text="  Called the customer ",
        )
        note = repository.events(order.id)[-1]
        assert (note.type, note.data, note.actor) == (
            EventType.NOTE_ADDED,
            {"text": "Called the customer"},
            f"staff:{staff.pk}",
        )
        with pytest.raises(OrderValidationError):
            services.order_add_note(repository=repository, order_id=order.id, actor=Actor.system(), text="  ")


class TestPatch:
    """`order_patch`: the API's PATCH as one atomic write."""

    def test_edits_a_note_and_a_transition_are_one_write(
        self, repository: Any, place: Callable[..., Order], staff: Any
    ) -> None:
        order = place(lines={"MUG-1": 2})
        patched = services.order_patch(
            repository=repository,
            order_id=order.id,
            actor=services.actor_for(staff),
            notes="Back door",
            note="Called ahead",
            status=OrderStatus.CANCELLED,
        )
        assert (patched.status, patched.notes, patched.version) == (OrderStatus.CANCELLED, "Back door", 2)
        assert [e.type for e in repository.events(order.id)] == [
            EventType.CREATED,
            EventType.EDITED,
            EventType.NOTE_ADDED,
            EventType.STATUS_CHANGED,
        ]
        assert [(m.event_type, m.order_version) for m in repository.outbox(order.id)] == [
            ("order.cancelled", 2)
        ]
        assert stock("MUG-1") == 10

    def test_any_refusal_writes_nothing(
        self, repository: Any, place: Callable[..., Order], customer: Any, staff: Any
    ) -> None:
        order = place(customer=customer)
        with pytest.raises(IllegalTransition):
            services.order_patch(
                repository=repository,
                order_id=order.id,
                actor=services.actor_for(staff),
                notes="should not stick",
                status=OrderStatus.FULFILLED,
            )
        with pytest.raises(OrderValidationError):
            services.order_patch(
                repository=repository,
                order_id=order.id,
                actor=services.actor_for(customer),
                notes="should not stick",
                note="  ",
            )
        with pytest.raises(StatusChangeNotAllowed):
            services.order_patch(
                repository=repository,
                order_id=order.id,
                actor=services.actor_for(customer),
                notes="should not stick",
                status=OrderStatus.CANCELLED,
            )
        stored = repository.get(order.id)
        assert (stored.status, stored.notes, stored.version) == (OrderStatus.PENDING_PAYMENT, "", 1)

    def test_a_patch_that_changes_nothing_writes_nothing(
        self, repository: Any, place: Callable[..., Order], staff: Any
    ) -> None:
        order = place()
        same = services.order_patch(
            repository=repository,
            order_id=order.id,
            actor=services.actor_for(staff),
            notes="",
            status=order.status,
        )
        assert same.version == 1
        assert len(repository.events(order.id)) == 1


class TestTransitions:
    def test_cancel_releases_stock_once(self, repository: Any, place: Callable[..., Order]) -> None:
        order = place(lines={"MUG-1": 4})
        assert stock("MUG-1") == 6
        cancelled = services.order_cancel(
            repository=repository, order_id=order.id, actor=GUEST, reason="changed mind"
        )
        assert cancelled.status == OrderStatus.CANCELLED
        assert stock("MUG-1") == 10
        with pytest.raises(IllegalTransition):
            services.order_cancel(repository=repository, order_id=order.id, actor=GUEST)
        assert stock("MUG-1") == 10
        last = repository.events(order.id)[-1]
        assert (last.from_status, last.to_status, last.data) == (
            OrderStatus.PENDING_PAYMENT,
            OrderStatus.CANCELLED,
            {"reason": "changed mind"},
        )

    def test_a_paid_order_cannot_be_cancelled(self, repository: Any, place: Callable[..., Order]) -> None:
        order = place()
        services.order_transition(
            repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=GUEST
        )
        with pytest.raises(IllegalTransition):
            services.order_cancel(repository=repository, order_id=order.id, actor=GUEST)
        assert repository.get(order.id).status == OrderStatus.PAID

    def test_outbox_entries_are_written_with_the_transition(
        self, repository: Any, place: Callable[..., Order]
    ) -> None:
        order = place()
        services.order_transition(
            repository=repository,
            order_id=order.id,
            to_status=OrderStatus.PAID,
            actor=Actor.system(),
            outbox=lambda o: [
                OutboxMessage(order_id=o.id, event_type="custom", order_version=o.version, payload={})
            ],
        )
        # The notified status change writes its own entry (for the version being stored), and
        # a caller may add more.
        assert [(m.event_type, m.order_version) for m in repository.outbox(order.id)] == [
            ("order.paid", 2),
            ("custom", 1),
        ]

    def test_missing_order(self, repository: Any) -> None:
        import uuid

        with pytest.raises(OrderNotFound):
            services.order_cancel(repository=repository, order_id=uuid.uuid4(), actor=GUEST)


class TestConcurrentWriters:
    def test_a_lost_race_is_retried_on_fresh_data(self, place: Callable[..., Order], repository: Any) -> None:
        order = place()
        store = type(repository)  # the configured adapter

        class RacingRepository(store):  # type: ignore[misc, valid-type]
            """Between our first read and our write, another writer adds a note."""

            raced = False

            def get(self, order_id: Any) -> Order:
                ours = super().get(order_id)
                if not self.raced:
                    self.raced = True
                    other = store().get(order_id)
                    other.record(
                        type=EventType.NOTE_ADDED, actor=Actor.system("other"), data={"text": "first"}
                    )
                    store().save(other)
                return ours

        repository = RacingRepository()
        services.order_transition(
            repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=GUEST
        )
        stored = repository.get(order.id)
        assert (stored.status, stored.version) == (OrderStatus.PAID, 3)
        assert [e.type for e in repository.events(order.id)] == [
            EventType.CREATED,
            EventType.NOTE_ADDED,
            EventType.STATUS_CHANGED,
        ]

    def test_endless_races_give_up_with_concurrent_update(
        self, place: Callable[..., Order], repository: Any
    ) -> None:
        order = place()

        class AlwaysStale(type(repository)):  # type: ignore[misc]
            def save(self, order: Order, *, outbox: Any = ()) -> None:
                order.version -= 1
                super().save(order, outbox=outbox)

        with pytest.raises(ConcurrentUpdate):
            services.order_cancel(repository=AlwaysStale(), order_id=order.id, actor=GUEST)
        assert stock("MUG-1") == 9
