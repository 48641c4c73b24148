"""The fan-out core with in-memory adapters: outbox, relay, ledger, retries, breaker, replay."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from integrations import services
from integrations.adapters.base import DeliveryError
from integrations.models import CircuitEvent, Delivery, DeliveryState
from integrations.resilience import CircuitBreaker, Pause, RateLimiter, backoff_seconds, shared_cache
from orders import services as order_services
from orders.domain import Actor, Order, OrderStatus
from orders.repositories import OrderRepository
from tests.integrations.fakes import FakeAdapter
from tests.stores import crashing

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test")
TRANSIENT = DeliveryError(
    transient=True, error_class="HTTPError", message="503 from the sink", provider_status=503
)
PERMANENT = DeliveryError(
    transient=False, error_class="HTTPError", message="400: bad from", provider_status=400
)


@pytest.fixture(autouse=True)
def _clean_shared_state(settings: Any) -> None:
    settings.BREAKER_FAILURE_THRESHOLD = 3
    settings.BREAKER_COOLDOWN_SECONDS = 60
    for name in ("email", "sheets", "sns"):
        CircuitBreaker(name).reset()
        shared_cache().delete(f"pause:{name}")
        shared_cache().delete(f"dispatch-queued:{name}")
        shared_cache().delete(f"ratelimit:{name}")


@pytest.fixture
def paid(place: Callable[..., Order], repository: OrderRepository) -> Order:
    order = place()
    return order_services.order_transition(
        repository=repository,
        order_id=order.id,
        to_status=OrderStatus.PAID,
        actor=ACTOR,
        data={"intent_id": "pi_1"},
    )


def email_deliveries() -> list[Delivery]:
    return list(Delivery.objects.filter(integration="email").order_by("created_at"))


class TestOutboxAndRelay:
    def test_a_notified_change_writes_one_outbox_entry_with_the_snapshot(
        self, paid: Order, repository: OrderRepository
    ) -> None:
        [entry] = repository.outbox(paid.id)
        assert (entry.event_type, entry.order_version) == ("order.paid", 2)
        assert entry.payload["order"]["status"] == "paid" and entry.payload["order"]["total_minor"] == 1450
        assert entry.payload["event"]["data"] == {"intent_id": "pi_1"}

    def test_edits_and_notes_write_no_outbox_entry(
        self, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        order = place()
        order_services.order_add_note(repository=repository, order_id=order.id, actor=ACTOR, text="hi")
        assert repository.outbox(order.id) == []

    def test_relay_makes_one_delivery_per_integration_once(self, paid: Order) -> None:
        assert services.outbox_relay(dispatch=False) == 3
        assert services.outbox_relay(dispatch=False) == 0
        rows = Delivery.objects.filter(order_id=paid.id)
        assert sorted(rows.values_list("integration", flat=True)) == ["email", "sheets", "sns"]
        assert {d.idempotency_key for d in rows} == {
            f"{name}:{paid.id}:order.paid:v2" for name in ("email", "sheets", "sns")
        }
        assert all(d.state == DeliveryState.PENDING and d.attempts == 0 for d in rows)

    def test_a_relay_that_stopped_before_marking_creates_nothing_twice(
        self, paid: Order, repository: OrderRepository
    ) -> None:
        class ForgetfulRepository(type(repository)):
            def outbox_mark_relayed(self, messages: Any) -> None:  # dies before marking
                pass

        assert services.outbox_relay(repository=ForgetfulRepository(), dispatch=False) == 3
        assert services.outbox_relay(dispatch=False) == 0
        assert Delivery.objects.count() == 3
        assert repository.outbox_pending(limit=10) == []

    def test_a_failed_transition_writes_no_outbox_entry(
        self, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        order = place()
        with pytest.raises(RuntimeError):
            order_services.order_transition(
                repository=crashing(repository), order_id=order.id, to_status=OrderStatus.PAID, actor=ACTOR
            )
        assert repository.outbox(order.id) == []


@pytest.mark.django_db(transaction=True)
def test_the_commit_hook_relays_after_commit_only(
    place: Callable[..., Order], repository: OrderRepository
) -> None:
    order = place()
    order_services.order_transition(
        repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=ACTOR
    )
    assert Delivery.objects.filter(order_id=order.id).count() == 3  # relayed by the hook, no sweep
    assert repository.outbox_pending(limit=10) == []


class TestDispatch:
    @pytest.fixture
    def due(self, paid: Order) -> Order:
        services.outbox_relay(dispatch=False)
        return paid

    def test_success_records_the_external_id(self, due: Order) -> None:
        fake = FakeAdapter(name="email")
        report = services.deliveries_dispatch(integration="email", adapter=fake)
        assert (report.succeeded, report.calls) == (1, 1)
        [delivery] = email_deliveries()
        assert (delivery.state, delivery.attempts) == (DeliveryState.SUCCEEDED, 1)
        assert delivery.external_id == f"fake-{delivery.idempotency_key}" and delivery.succeeded_at
        assert fake.delivered[0].payload["order"]["id"] == str(due.id)
        # Nothing is due any more: a second dispatch calls nobody.
        assert services.deliveries_dispatch(integration="email", adapter=fake).calls == 0

    def test_a_transient_failure_is_retried_later_with_jittered_backoff(self, due: Order) -> None:
        fake = FakeAdapter(name="email", script=[TRANSIENT])
        before = timezone.now()
        # The clock stands still: the retry (jittered from 0 to 1 s) cannot come due again within
        # this dispatch however slowly it runs, so it is left for later.
        with time_machine.travel(before, tick=False):
            services.deliveries_dispatch(integration="email", adapter=fake)
        [delivery] = email_deliveries()
        assert (delivery.state, delivery.attempts, delivery.last_provider_status) == (
            DeliveryState.RETRYING,
            1,
            503,
        )
        assert delivery.last_error_message == "503 from the sink"
        assert before < delivery.next_attempt_at <= before + timedelta(seconds=1)

    def test_attempts_run_out_into_a_dead_letter(self, due: Order, settings: Any) -> None:
        settings.INTEGRATIONS = settings.INTEGRATIONS | {
            "email": settings.INTEGRATIONS["email"] | {"retry": {"base": 0.0, "cap": 0.0, "max_attempts": 3}}
        }
        settings.BREAKER_FAILURE_THRESHOLD = 100
        fake = FakeAdapter(name="email", script=[TRANSIENT] * 5)
        services.deliveries_dispatch(integration="email", adapter=fake)
        [delivery] = email_deliveries()
        assert (delivery.state, delivery.attempts, fake.calls) == (DeliveryState.DEAD, 3, 3)
        assert delivery.last_error_message.startswith("Gave up after 3 attempts")

    def test_a_permanent_failure_is_dead_at_once(self, due: Order) -> None:
        services.deliveries_dispatch(
            integration="email", adapter=FakeAdapter(name="email", script=[PERMANENT])
        )
        [delivery] = email_deliveries()
        assert (delivery.state, delivery.attempts) == (DeliveryState.DEAD, 1)
        assert "Permanent failure" in delivery.last_error_message and delivery.last_provider_status == 400

    def test_an_adapter_that_raises_fails_the_batch_transiently(self, due: Order) -> None:
        class Broken(FakeAdapter):
            def deliver(self, requests: Any) -> Any:
                raise ConnectionError("socket closed")

        services.deliveries_dispatch(integration="email", adapter=Broken(name="email"))
        [delivery] = email_deliveries()
        assert (delivery.state, delivery.last_error_class) == (DeliveryState.RETRYING, "ConnectionError")

    def test_a_provider_asking_to_slow_down_pauses_the_integration(self, due: Order) -> None:
        class Throttled(FakeAdapter):
            def deliver(self, requests: Any) -> Any:
                from integrations.adapters.base import DeliveryOutcome

                error = DeliveryError.from_http(429, "slow down")
                return [
                    DeliveryOutcome(delivery_id=r.delivery_id, error=error, backoff_seconds=30)
                    for r in requests
                ]

        now = timezone.now()
        with time_machine.travel(now, tick=False):
            services.deliveries_dispatch(integration="email", adapter=Throttled(name="email"))
            assert Pause("email").remaining() == 30
            [delivery] = email_deliveries()
            assert delivery.next_attempt_at >= now + timedelta(seconds=30)
            healthy = FakeAdapter(name="email")
            assert services.deliveries_dispatch(integration="email", adapter=healthy).waited_for == "paused"
        with time_machine.travel(now + timedelta(seconds=31), tick=False):
            assert Pause("email").remaining() == 0
            assert services.deliveries_dispatch(integration="email", adapter=healthy).succeeded == 1


class TestCircuitBreaker:
    def test_it_opens_after_failures_in_a_row_and_spends_no_attempts_while_open(
        self, place: Callable[..., Order], repository: OrderRepository, settings: Any
    ) -> None:
        settings.INTEGRATIONS = settings.INTEGRATIONS | {
            "email": settings.INTEGRATIONS["email"] | {"retry": {"base": 0.0, "cap": 0.0, "max_attempts": 50}}
        }
        for _ in range(4):
            order = place()
            order_services.order_transition(
                repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=ACTOR
            )
        services.outbox_relay(dispatch=False)
        failing = FakeAdapter(name="email", max_batch=1, script=[TRANSIENT] * 100)
        report = services.deliveries_dispatch(integration="email", adapter=failing)
        assert report.waited_for == "circuit open"
        assert failing.calls == 3  # the threshold, then it stopped calling
        attempts = sum(Delivery.objects.filter(integration="email").values_list("attempts", flat=True))
        assert attempts == 3
        assert CircuitEvent.objects.get(integration="email").to_state == "open"
        # While open: nothing is claimed, no attempt is spent.
        services.deliveries_dispatch(integration="email", adapter=failing)
        assert (
            sum(Delivery.objects.filter(integration="email").values_list("attempts", flat=True)) == attempts
        )

        # After the cooldown one probe goes through; its success closes the circuit.
        settings.BREAKER_COOLDOWN_SECONDS = 0
        healthy = FakeAdapter(name="email", max_batch=1)
        report = services.deliveries_dispatch(integration="email", adapter=healthy)
        assert report.succeeded == 4 and healthy.calls == 4
        assert list(
            CircuitEvent.objects.filter(integration="email").order_by("at").values_list("to_state", flat=True)
        ) == [
            "open",
            "half_open",
            "closed",
        ]
        assert set(Delivery.objects.filter(integration="email").values_list("state", flat=True)) == {
            "succeeded"
        }

    def test_it_opens_on_a_failure_ratio(self, settings: Any) -> None:
        settings.BREAKER_FAILURE_THRESHOLD = 1000
        settings.BREAKER_MIN_CALLS = 10
        settings.BREAKER_FAILURE_RATIO = 0.5
        breaker = CircuitBreaker("sns")
        for i in range(10):  # the last call of the ten fails: 5 of 10 failed
            breaker.record(failed=i % 2 == 1, reason="flaky")
        assert breaker.allow() == "open"


def test_backoff_is_full_jitter_capped() -> None:
    values = [backoff_seconds(attempt, base=1.0, cap=10.0) for attempt in range(1, 12) for _ in range(50)]
    assert all(0 <= v <= 10.0 for v in values)
    assert max(backoff_seconds(1, base=1.0, cap=10.0) for _ in range(200)) <= 1.0
    assert max(backoff_seconds(10, base=1.0, cap=10.0) for _ in range(200)) > 5.0


def test_the_rate_limiter_spaces_calls() -> None:
    limiter = RateLimiter("sheets", per_minute=60)
    with time_machine.travel(1_000_000.0, tick=False) as clock:
        assert limiter.reserve() == 0.0
        assert limiter.reserve() == 1.0  # the next slot is a second after the first
        clock.shift(0.25)
        assert limiter.reserve() == 0.75
        clock.shift(0.75)
        assert limiter.reserve() == 0.0


@pytest.mark.parametrize("cost", [1, 2])
def test_the_rate_limiter_never_grants_more_than_its_cap_in_any_minute(cost: int) -> None:
    """Callers arriving at random for ten minutes: the calls granted in any 60 s stay within the cap."""
    import random

    per_minute = 50
    limiter = RateLimiter("sheets", per_minute=per_minute)
    arrivals = random.Random(cost)
    granted: list[float] = []
    start = 1_000_000.0
    with time_machine.travel(start, tick=False) as clock:
        while time.time() < start + 600:
            if limiter.reserve(cost=cost) == 0.0:
                granted.extend([time.time()] * cost)  # a batch of `cost` calls starts now
            clock.shift(arrivals.expovariate(10.0))  # ten callers a second on average
    # Simulated time (the clock moves only by `clock.shift`) and seeded arrivals: the same
    # figures on any machine, however fast.
    busiest = max(sum(1 for t in granted if first <= t < first + 60) for first in granted)
    assert per_minute * 0.8 < busiest <= per_minute  # kept to the cap, which the callers press on


class TestSweepRetryResend:
    @pytest.fixture
    def due(self, paid: Order) -> Order:
        services.outbox_relay(dispatch=False)
        return paid

    def test_deliveries_of_a_dead_worker_are_taken_back(self, due: Order) -> None:
        Delivery.objects.filter(integration="email").update(
            state=DeliveryState.IN_FLIGHT, attempts=1, lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        report = services.deliveries_sweep()
        assert report.leases_taken_back == 1
        [delivery] = email_deliveries()
        assert (delivery.state, delivery.attempts) == (DeliveryState.RETRYING, 1)
        services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email"))
        assert email_deliveries()[0].state == DeliveryState.SUCCEEDED

    def test_the_sweep_relays_what_the_hook_missed(self, paid: Order) -> None:
        # Inside a test transaction no commit hook runs: the outbox entry waits for the sweep.
        report = services.deliveries_sweep()
        assert report.relayed == 3
        assert report.dispatch_requested == ["email", "sheets", "sns"]
        assert Delivery.objects.filter(order_id=paid.id).count() == 3

    def test_dead_letters_are_retried_with_fresh_attempts(self, due: Order) -> None:
        services.deliveries_dispatch(
            integration="email", adapter=FakeAdapter(name="email", script=[PERMANENT])
        )
        [dead] = email_deliveries()
        retried = services.delivery_retry(delivery_id=dead.id, actor=ACTOR)
        assert (retried.state, retried.attempts) == (DeliveryState.PENDING, 0)
        services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email"))
        assert email_deliveries()[0].state == DeliveryState.SUCCEEDED
        with pytest.raises(services.DeliveryNotRetryable):
            services.delivery_retry(delivery_id=dead.id, actor=ACTOR)

    def test_retry_all_matching(self, due: Order) -> None:
        for name in ("email", "sns"):
            services.deliveries_dispatch(integration=name, adapter=FakeAdapter(name=name, script=[PERMANENT]))
        assert services.deliveries_retry_matching(actor=ACTOR, integration="sns") == 1
        assert Delivery.objects.get(integration="sns").state == DeliveryState.PENDING
        assert Delivery.objects.get(integration="email").state == DeliveryState.DEAD
        assert services.deliveries_retry_matching(actor=ACTOR, error_contains="bad from") == 1

    def test_resending_the_confirmation_email_is_a_new_delivery(self, due: Order) -> None:
        services.deliveries_dispatch(integration="email", adapter=FakeAdapter(name="email"))
        first = services.delivery_resend_email(order_id=due.id, actor=ACTOR)
        second = services.delivery_resend_email(order_id=due.id, actor=ACTOR)
        assert first.idempotency_key.endswith(":resend-1") and second.idempotency_key.endswith(":resend-2")
        fake = FakeAdapter(name="email")
        services.deliveries_dispatch(integration="email", adapter=fake)
        assert sorted(r.idempotency_key[-9:] for r in fake.delivered) == [":resend-1", ":resend-2"]


def test_a_batch_costing_two_calls_takes_two_slots() -> None:
    limiter = RateLimiter("sheets", per_minute=60)
    with time_machine.travel(1_000_000.0, tick=False):
        assert limiter.reserve(cost=2) == 0.0
        assert limiter.reserve() == 2.0


def test_an_exclusive_integration_has_one_dispatcher_at_a_time(paid: Order) -> None:
    from integrations.resilience import exclusive

    services.outbox_relay(dispatch=False)
    with exclusive("dispatch:sheets", seconds=30) as held:
        assert held
        report = services.deliveries_dispatch(integration="sheets", adapter=FakeAdapter(name="sheets"))
        assert (report.waited_for, report.calls) == ("another dispatcher", 0)
    report = services.deliveries_dispatch(
        integration="sheets", adapter=FakeAdapter(name="sheets"), budget_seconds=5
    )
    assert report.succeeded == 1


class TestBulkDispatch:
    """One dispatcher per integration while work is due, claims and settlements in bulk."""

    def test_a_running_dispatcher_takes_later_work_and_no_task_is_queued_for_it(
        self, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        from django_q.brokers import get_broker

        def pay() -> None:
            order = place()
            order_services.order_transition(
                repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=ACTOR
            )
            services.outbox_relay(dispatch=False)

        pay()
        broker = get_broker()
        queued = broker.queue_size()

        class PaidWhileSending(FakeAdapter):
            """An order is paid while the first batch is out: its payment asks for dispatch."""

            def deliver(self, requests: Any) -> Any:
                if self.calls == 0:
                    pay()
                    services.request_dispatch(["email"])  # the payment's commit hook
                return super().deliver(requests)

        services.dispatch_mark("email")  # as the task does when it starts
        adapter = PaidWhileSending(name="email", max_batch=10)
        report = services.deliveries_dispatch(integration="email", adapter=adapter)

        assert report.succeeded == 2 and adapter.calls == 2  # the later one too, by this dispatcher
        assert broker.queue_size() == queued  # no task was queued for it
        assert shared_cache().get("dispatch-queued:email") is None  # nothing due: the mark is gone
        assert set(Delivery.objects.filter(integration="email").values_list("state", flat=True)) == {
            DeliveryState.SUCCEEDED
        }

    def test_a_claim_takes_the_oldest_due_first_under_a_lease(
        self, place: Callable[..., Order], repository: OrderRepository, settings: Any
    ) -> None:
        for _ in range(3):
            order = place()
            order_services.order_transition(
                repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=ACTOR
            )
        services.outbox_relay(dispatch=False)
        now = timezone.now()
        rows = list(Delivery.objects.filter(integration="sns").order_by("created_at"))
        # Due a minute ago, due now, and not due for an hour.
        for delivery, due_at in zip(
            rows, [now - timedelta(minutes=1), now, now + timedelta(hours=1)], strict=True
        ):
            Delivery.objects.filter(id=delivery.id).update(next_attempt_at=due_at)
        with time_machine.travel(now, tick=False):
            claimed = services._claim("sns", 10)
        assert [d.id for d in claimed] == [rows[0].id, rows[1].id]
        assert all(
            (d.state, d.attempts, d.lease_expires_at)
            == (DeliveryState.IN_FLIGHT, 1, now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS))
            for d in claimed
        )
        stored = Delivery.objects.get(id=rows[0].id)
        assert (stored.state, stored.attempts) == (DeliveryState.IN_FLIGHT, 1)
        assert stored.payload == rows[0].payload  # the snapshot, read back as JSON
        assert Delivery.objects.get(id=rows[2].id).state == DeliveryState.PENDING
        # Claimed rows are not due any more.
        assert services._claim("sns", 10) == []

    def test_one_batch_settles_successes_and_failures_each_with_its_own_outcome(
        self, place: Callable[..., Order], repository: OrderRepository
    ) -> None:
        for _ in range(3):
            order = place()
            order_services.order_transition(
                repository=repository, order_id=order.id, to_status=OrderStatus.PAID, actor=ACTOR
            )
        services.outbox_relay(dispatch=False)
        fake = FakeAdapter(name="sns", max_batch=10, script=[None, PERMANENT, None])
        report = services.deliveries_dispatch(integration="sns", adapter=fake)
        assert (report.calls, report.succeeded, report.dead) == (1, 2, 1)
        rows = list(Delivery.objects.filter(integration="sns"))
        done = [d for d in rows if d.state == DeliveryState.SUCCEEDED]
        assert sorted(d.external_id for d in done) == sorted(f"fake-{d.idempotency_key}" for d in done)
        assert all(d.succeeded_at and d.lease_expires_at is None and d.latency_ms is not None for d in done)
        [dead] = [d for d in rows if d.state == DeliveryState.DEAD]
        assert dead.external_id == "" and dead.succeeded_at is None and dead.last_provider_status == 400
