"""The synthetic probes against the real stand-in servers: what each one calls, what it leaves
behind (nothing for customers), and how a failing one is recorded, alerted and reported."""

from __future__ import annotations

import importlib
import io
import json
import socket
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.module_loading import import_string

from core.aws import aws_client
from integrations.adapters.base import ProbeFailed
from integrations.adapters.sheets import HEADER
from monitoring import tasks
from monitoring.models import Alert, ErrorRecord, MetricBucket, ProbeResult
from monitoring.probes import PROBES, probe_all, probe_latest, probe_names, probe_run
from tests.integrations.conftest import SHEETS_TEST_SPREADSHEET
from tests.integrations.fakes import FakeAdapter

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _write_through(settings: Any) -> None:
    """Figures written at once (no flusher thread), and alerts that fire for every new failure."""
    settings.MONITORING_ENABLED = True
    settings.MONITORING_FLUSH_SECONDS = 0
    settings.ALERT_DEDUP_SECONDS = 1800
    settings.PROBE_TIMEOUT_SECONDS = 5


@pytest.fixture
def all_sandboxes(
    sendgrid_sandbox: Any, sheets_sandbox: Any, aws_sandbox: dict[str, Any], stripe_api: str
) -> Any:
    return sendgrid_sandbox


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _receive(queue_url: str) -> list[dict[str, Any]]:
    answer = aws_client("sqs").receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    return answer.get("Messages", [])


def _probe_metric(name: str) -> int:
    return sum(MetricBucket.objects.filter(name="probe", label=name).values_list("count", flat=True))


# --- each probe, succeeding -------------------------------------------------------------------


def test_the_email_probe_is_a_sandbox_mode_send_that_leaves_the_inbox_empty(sendgrid_sandbox: Any) -> None:
    result = probe_run("email")

    assert result.ok, result.error
    assert result.detail == "sandbox send accepted (200)"
    assert result.latency_ms > 0
    assert result.trigger == "command"
    assert sendgrid_sandbox.messages() == []
    stats = sendgrid_sandbox.stats()
    assert stats["sandbox_mode"] == 1
    assert stats["accepted"] == 0
    stored = ProbeResult.objects.get()
    assert (stored.integration, stored.ok, stored.error) == ("email", True, "")
    assert stored.latency_ms == pytest.approx(result.latency_ms)
    assert _probe_metric("email") == 1
    assert not ErrorRecord.objects.exists()
    assert not Alert.objects.exists()


def test_the_sheets_probe_writes_a_timestamp_to_the_health_tab_and_never_to_orders(
    sheets_sandbox: Any, settings: Any
) -> None:
    first = probe_run("sheets")
    second = probe_run("sheets")

    assert first.ok and second.ok, (first.error, second.error)
    assert first.detail.startswith("wrote ") and first.detail.endswith(" to _health!A1:B1")
    health = sheets_sandbox.values(SHEETS_TEST_SPREADSHEET, "_health")
    assert len(health) == 1 and health[0][0] == "last probe"
    written = timezone.datetime.fromisoformat(health[0][1])
    assert abs(timezone.now() - written) < timedelta(minutes=1)
    # The orders tab still holds only the header the sandbox made it with.
    assert sheets_sandbox.values(SHEETS_TEST_SPREADSHEET, "Orders") == [HEADER]
    assert not [call for call in sheets_sandbox.calls if "Orders" in call["path"]]
    # The tab was added once; the second probe found it.
    assert sheets_sandbox.stats()["sheet_batch_update"] == 1
    assert _probe_metric("sheets") == 2


def test_the_sheets_probe_refuses_a_health_tab_that_is_the_orders_tab(
    sheets_sandbox: Any, settings: Any
) -> None:
    settings.SHEETS_HEALTH_WORKSHEET = "orders"

    result = probe_run("sheets")

    assert not result.ok
    assert result.error.startswith("ImproperlyConfigured: ")
    assert sheets_sandbox.calls == []


def test_the_sns_probe_publishes_a_message_marked_probe(aws_sandbox: dict[str, Any]) -> None:
    result = probe_run("sns")

    assert result.ok, result.error
    assert result.detail.startswith("published message ")
    messages = _receive(aws_sandbox["queue_url"])
    assert len(messages) == 1
    attributes = messages[0]["MessageAttributes"]
    assert attributes["probe"] == {"StringValue": "true", "DataType": "String"}
    assert attributes["event_type"]["StringValue"] == "monitoring.probe"
    body = json.loads(messages[0]["Body"])
    assert body["probe"] is True and body["event_type"] == "monitoring.probe"


def test_the_stripe_probe_reads_the_balance(stripe_api: str) -> None:
    result = probe_run("stripe")

    assert result.ok, result.error
    assert result.detail.startswith("balance read (")
    assert ProbeResult.objects.get().integration == "stripe"
    assert _probe_metric("stripe") == 1


def test_probe_all_runs_every_probe_in_force_and_probe_latest_shows_the_last_of_each(
    all_sandboxes: Any, settings: Any
) -> None:
    results = probe_all("api")

    assert [r.integration for r in results] == list(PROBES)
    assert all(r.ok for r in results), [r.error for r in results]
    assert {r.trigger for r in results} == {"api"}
    again = probe_run("email")
    latest = probe_latest()
    assert list(latest) == list(PROBES)
    assert latest["email"] == again
    assert latest["stripe"] == results[3]

    settings.INTEGRATIONS = {k: v for k, v in settings.INTEGRATIONS.items() if k != "sheets"}
    assert probe_names() == ["email", "sns", "stripe"]
    with pytest.raises(ValueError, match="no probe named 'sheets'"):
        probe_run("sheets")


def test_probe_latest_answers_none_for_a_probe_never_run() -> None:
    assert probe_latest() == dict.fromkeys(PROBES)


def test_an_unknown_probe_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no probe named 'fax'"):
        probe_run("fax")
    assert not ProbeResult.objects.exists()


# --- failing probes ---------------------------------------------------------------------------


def test_repeated_failures_are_recorded_each_time_and_alerted_once(
    sendgrid_sandbox: Any, aws_sandbox: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    sendgrid_sandbox.set_faults(fail_next=3, status=503)

    with django_capture_on_commit_callbacks(execute=True):
        results = [probe_run("email", trigger="schedule") for _ in range(3)]

    assert [r.ok for r in results] == [False, False, False]
    assert results[0].error.startswith("ServiceUnavailableError: HTTP 503: ")
    assert all(r.latency_ms > 0 for r in results)
    errors = ErrorRecord.objects.filter(source="probe", integration="email")
    assert errors.count() == 3
    assert errors.first().error_class == "ServiceUnavailableError"
    alert = Alert.objects.get()
    assert (alert.subject, alert.kind, alert.occurrences) == ("email", "probe_failed", 3)
    assert alert.kinds == {"probe_failed": 3}
    assert "email probe failed" in alert.message
    # Published once, to the operators' alerts topic.
    alert.refresh_from_db()
    assert alert.published_at is not None, alert.publish_error
    published = _receive(aws_sandbox["alerts_queue_url"])
    assert len(published) == 1
    assert json.loads(published[0]["Body"])["kind"] == "probe_failed"
    assert _probe_metric("email") == 3
    assert sendgrid_sandbox.stats()["faulted"] == 3


def test_a_probe_of_an_unreachable_provider_fails_without_raising(stripe_api: str, settings: Any) -> None:
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{_closed_port()}"

    result = probe_run("stripe")

    assert not result.ok
    assert result.error.startswith("GatewayError: Stripe could not be reached")
    assert ErrorRecord.objects.get(source="probe").integration == "stripe"
    assert Alert.objects.get().subject == "stripe"


def test_a_failing_sheets_probe_is_recorded(sheets_sandbox: Any) -> None:
    sheets_sandbox.set_faults(fail_next=5, status=500)

    result = probe_run("sheets")

    assert not result.ok
    assert "HTTP 500" in result.error
    assert sheets_sandbox.values(SHEETS_TEST_SPREADSHEET, "Orders") == []  # never even created


def test_a_failing_sns_probe_names_the_missing_topic(aws_sandbox: dict[str, Any], settings: Any) -> None:
    settings.SNS_TOPIC_ARN = aws_sandbox["topic_arn"] + "-gone"

    result = probe_run("sns")

    assert not result.ok
    assert result.error.startswith("NotFound: ")


class LeakyAdapter(FakeAdapter):
    """An adapter whose failure message carries the configured secret and a card number."""

    def probe(self) -> str:
        from django.conf import settings

        raise ProbeFailed(
            f"refused key {settings.SENDGRID_API_KEY} for card 4242 4242 4242 4242",
            error_class="Unauthorized",
        )


def test_no_secret_reaches_the_result_the_error_record_or_the_alert(settings: Any) -> None:
    settings.SENDGRID_API_KEY = "a-very-secret-key-of-the-tests"  # configured, not key-shaped
    path = f"{__name__}.LeakyAdapter"
    settings.INTEGRATIONS = {
        **settings.INTEGRATIONS,
        "email": {**settings.INTEGRATIONS["email"], "adapter": path},
    }

    result = probe_run("email")

    texts = [result.error, ErrorRecord.objects.get().message, Alert.objects.get().message]
    for text in texts:
        assert "refused key [redacted] for card [card]" in text
        assert "a-very-secret-key" not in text and "4242 4242" not in text


# --- the command ------------------------------------------------------------------------------


def test_the_command_prints_one_line_per_probe(all_sandboxes: Any) -> None:
    out = io.StringIO()

    call_command("probe", stdout=out)

    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == list(PROBES)
    assert all(line.split()[1] == "ok" and line.split()[3] == "ms" for line in lines), lines
    assert "sandbox send accepted (200)" in lines[0]
    assert set(ProbeResult.objects.values_list("trigger", flat=True)) == {"command"}


def test_the_command_exits_1_when_a_probe_fails(sendgrid_sandbox: Any, stripe_api: str) -> None:
    sendgrid_sandbox.set_faults(fail_next=1, status=401)
    out = io.StringIO()

    with pytest.raises(CommandError, match=r"1 probe\(s\) failed: email") as failure:
        call_command("probe", "email", "stripe", stdout=out)

    assert failure.value.returncode == 1
    email, stripe = out.getvalue().splitlines()
    assert email.split()[:2] == ["email", "FAILED"] and "HTTP 401" in email
    assert stripe.split()[:2] == ["stripe", "ok"]


def test_the_command_refuses_an_unknown_probe() -> None:
    with pytest.raises(CommandError, match="no probe named fax"):
        call_command("probe", "fax", stdout=io.StringIO())
    assert not ProbeResult.objects.exists()


# --- the tasks and their schedules ------------------------------------------------------------


def test_the_scheduled_task_probes_everything_then_waits_for_the_interval(
    all_sandboxes: Any, settings: Any
) -> None:
    settings.PROBE_INTERVAL_MINUTES = 10

    summary = tasks.probe_all()

    assert summary == "; ".join(
        f"{r.integration} ok in {r.latency_ms:.0f} ms" for r in reversed(ProbeResult.objects.all())
    )
    assert set(ProbeResult.objects.values_list("trigger", flat=True)) == {"schedule"}
    assert tasks.probe_all().startswith("skipped: the probes ran at ")
    assert ProbeResult.objects.count() == len(PROBES)
    # Ten minutes later they are due again.
    ProbeResult.objects.update(at=timezone.now() - timedelta(minutes=10))
    assert "skipped" not in tasks.probe_all()
    assert ProbeResult.objects.count() == 2 * len(PROBES)


def test_the_scheduled_task_does_nothing_when_probes_are_off(settings: Any) -> None:
    settings.PROBE_INTERVAL_MINUTES = 0

    assert tasks.probe_all().startswith("probes are off")
    assert not ProbeResult.objects.exists()


def test_housekeeping_publishes_pending_alerts(aws_sandbox: dict[str, Any]) -> None:
    """(Pruning old results is the retention task's: tests/monitoring/test_retention.py.)"""
    alert = Alert.objects.create(
        subject="sns", kind="probe_failed", kinds={"probe_failed": 1}, message="down", last_at=timezone.now()
    )

    assert tasks.housekeeping() == "published 1 pending alert(s)"

    alert.refresh_from_db()
    assert alert.published_at is not None
    assert len(_receive(aws_sandbox["alerts_queue_url"])) == 1
    assert tasks.housekeeping() == "published 0 pending alert(s)"


def test_the_schedules_migration_creates_both_schedules_once() -> None:
    from django.apps import apps
    from django_q.models import Schedule

    migration = importlib.import_module("monitoring.migrations.0002_schedules")
    migration.create_schedules(apps, None)
    migration.create_schedules(apps, None)  # idempotent

    schedules = {s.name: s for s in Schedule.objects.filter(name__startswith="monitoring-")}
    assert set(schedules) == {"monitoring-probes", "monitoring-housekeeping"}
    assert schedules["monitoring-probes"].func == "monitoring.tasks.probe_all"
    assert schedules["monitoring-housekeeping"].func == "monitoring.tasks.housekeeping"
    for schedule in schedules.values():
        assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 5, -1)
        assert callable(import_string(schedule.func))
    # It runs after monitoring's first migration and django_q's Schedule table (pytest runs
    # without migrations, so the dependencies are checked to name migrations that exist).
    dependencies = dict(migration.Migration.dependencies)
    assert dependencies["monitoring"] == "0001_initial"
    for app, name in migration.Migration.dependencies:
        importlib.import_module(f"{app}.migrations.{name}")

    migration.remove_schedules(apps, None)
    assert not Schedule.objects.filter(name__startswith="monitoring-").exists()
