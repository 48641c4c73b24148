"""The operators' page (/ops/): real traffic through the services, then what the page says.

Orders are placed and paid (one card declined) through the payment service, the outbox is
relayed by the commit hook, the email deliveries die on a permanent error, SNS delivers, Sheets
waits. The page must show those counts, the dead letters with working retry buttons, the error
rows, one order's story, and charts drawn on the server with nothing loaded from elsewhere.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client

from integrations import services
from integrations.adapters.base import DeliveryError
from integrations.models import Delivery, DeliveryState
from integrations.resilience import CircuitBreaker, shared_cache
from monitoring.models import Alert, ErrorRecord, ProbeResult
from orders.domain import Actor, Order
from payments import services as payment_services
from tests.integrations.fakes import FakeAdapter
from tests.payments.fakes import FakeGateway

PERMANENT = DeliveryError(
    transient=False,
    error_class="BadRequestError",
    message="400 the from address is not verified",
    provider_status=400,
)
VISA = "pm_card_visa"
DECLINED = "pm_card_chargeCustomerFail"


class _Text(HTMLParser):
    """The text inside the element with a given id (its descendants included)."""

    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.element_id = element_id
        self.depth = 0
        self.parts: list[str] = []
        self.found = False

    VOID = {"input", "br", "img", "meta", "link", "hr", "rect", "line", "circle", "polyline"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("id") == self.element_id:
            self.depth, self.found = 1, True

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def text_of(html: str, element_id: str) -> str:
    parser = _Text(element_id)
    parser.feed(html)
    assert parser.found, f"no element #{element_id} on the page"
    return " ".join(" ".join(parser.parts).split())


@pytest.fixture
def clean_breakers(settings: Any) -> None:
    for name in settings.INTEGRATIONS:
        CircuitBreaker(name).reset()
        for key in (f"pause:{name}", f"ratelimit:{name}", f"dispatch-queued:{name}"):
            shared_cache().delete(key)


@pytest.fixture
def traffic(place: Callable[..., Order], customer: Any, mug: Any, clean_breakers: None) -> dict[str, Any]:
    """Three orders (two paid, one declined); email dead, SNS delivered, Sheets still due."""
    mug.stock = 50
    mug.save()
    gateway = FakeGateway()
    paid = [place(customer=customer) for _ in range(2)]
    declined = place(customer=customer)
    for order in paid:
        payment_services.payment_confirm(
            order_id=order.id, payment_method=VISA, actor=Actor.system("test"), gateway=gateway
        )
    payment_services.payment_confirm(
        order_id=declined.id, payment_method=DECLINED, actor=Actor.system("test"), gateway=gateway
    )
    services.outbox_relay(dispatch=False)  # the commit hook relayed them already; this finds none
    email = services.deliveries_dispatch(
        integration="email", adapter=FakeAdapter(name="email", script=[PERMANENT] * 3)
    )
    sns = services.deliveries_dispatch(integration="sns", adapter=FakeAdapter(name="sns"))
    assert (email.dead, sns.succeeded) == (3, 3)
    return {"paid": paid, "declined": declined}


# --- who may see it ---------------------------------------------------------------------------
@pytest.mark.django_db
def test_only_staff_see_the_page_and_press_its_buttons(customer: Any, client: Client) -> None:
    anonymous = client.get("/ops/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    client.force_login(customer)
    assert client.get("/ops/").status_code == 403
    assert client.get("/ops/?fragment=1").status_code == 403
    assert client.post(f"/ops/deliveries/{uuid.uuid4()}/retry").status_code == 403
    assert client.post("/ops/integrations/email/retry-dead").status_code == 403
    assert client.post("/ops/probes/email").status_code == 403
    assert ProbeResult.objects.count() == 0


@pytest.mark.django_db
def test_a_reader_with_the_monitoring_permission_sees_it_but_cannot_act(
    customer: Any, client: Client
) -> None:
    from django.contrib.auth.models import Permission

    customer.user_permissions.add(Permission.objects.get(codename="view_monitoring"))
    client.force_login(customer)
    assert client.get("/ops/").status_code == 200
    assert client.post("/ops/integrations/email/retry-dead").status_code == 403


@pytest.mark.django_db
def test_the_buttons_need_a_csrf_token(staff: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    assert client.post("/ops/integrations/email/retry-dead").status_code == 403
    assert client.get("/ops/integrations/email/retry-dead").status_code == 405


# --- an empty shop: measured truth, not invented figures ----------------------------------
@pytest.mark.django_db
def test_with_no_traffic_the_page_says_no_data_not_made_up_figures(
    ops_client: Client, clean_breakers: None
) -> None:
    html = ops_client.get("/ops/").content.decode()
    assert "99.9%" not in html and "operational" not in html.lower()
    assert text_of(html, "figure-payment-success").startswith("Payment success no data")
    assert text_of(html, "figure-orders-created") == "Orders created 0"
    email = text_of(html, "integration-email")
    assert "Success (24 h) no data" in email and "p95 latency (24 h) no data" in email
    assert "Last success never" in email and "Last probe: never run" in email
    for empty in (
        "No orders in this window",
        "No payments in this window",
        "No provider calls in this window",
        "Nothing delivered in this window",
    ):
        assert empty in html
    assert "No errors recorded." in html and "No alerts." in html


# --- the page over real traffic ------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # commit hooks run: figures counted, outbox relayed
def test_the_page_shows_measured_traffic_dead_letters_errors_and_charts(
    ops_client: Client, traffic: dict[str, Any]
) -> None:
    response = ops_client.get("/ops/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    html = response.content.decode()

    assert text_of(html, "figure-orders-created") == "Orders created 3"
    assert text_of(html, "figure-orders-paid") == "Orders paid 2"
    assert text_of(html, "figure-orders-payment-failed") == "Payments failed 1"
    assert text_of(html, "figure-payment-success") == "Payment success 66.7% 2 succeeded, 1 failed"
    # Sheets' three deliveries wait in the ledger.
    assert text_of(html, "deliveries-due") == "3"

    email = text_of(html, "integration-email")
    assert "circuit closed" in email
    assert "Dead letters 3" in email and "Dead 3" in email
    assert "BadRequestError" in email and "400 the from address is not verified" in email
    assert "Success (24 h) 0.0%" in email  # nothing succeeded, three failed attempts
    assert email.count("Retry") >= 4  # one per dead letter, and "Retry all 3 dead email deliveries"
    sns = text_of(html, "integration-sns")
    assert "Success (24 h) 100.0%" in sns and "Succeeded (24 h) 3" in sns and "Dead letters 0" in sns
    assert "no data" not in text_of(html, "integration-sns").split("Event → delivered")[1][:40]
    for dead in Delivery.objects.filter(integration="email"):
        assert f'action="/ops/deliveries/{dead.id}/retry"' in html

    errors = text_of(html, "errors-table")
    assert errors.count("BadRequestError") == ErrorRecord.objects.filter(source="delivery").count() == 3
    assert "card_declined" in errors  # the declined payment is recorded too
    assert Alert.objects.filter(subject="email").exists()
    assert "dead_letter" in text_of(html, "alerts")

    # Charts: four inline SVGs with a title and a description, measured totals in words.
    assert html.count('<svg class="chart"') == 4
    orders_chart = text_of(html, "chart-orders")
    assert "3 created, 2 paid, 1 payment failed" in orders_chart
    assert "2 succeeded, 1 failed" in text_of(html, "chart-payments")
    assert "sns: 1 call" in text_of(html, "chart-latency")
    assert re.search(r"<polyline|<circle|<rect[^>]+><title>", html)

    # Nothing from another origin: no CDN script, stylesheet, font or image.
    for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", html):
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", tag), tag
    assert "/static/js/ops.js" in html and "/static/css/ops.css" in html
    assert "<script>" not in html  # no inline script


@pytest.mark.django_db(transaction=True)
def test_retry_buttons_put_dead_letters_back_to_pending(ops_client: Client, traffic: dict[str, Any]) -> None:
    first, *others = Delivery.objects.filter(integration="email").order_by("created_at")
    response = ops_client.post(
        f"/ops/deliveries/{first.id}/retry", {"next": "/ops/?window=24h#integration-email"}, follow=True
    )
    assert response.redirect_chain == [("/ops/?window=24h#integration-email", 302)]
    first.refresh_from_db()
    assert (first.state, first.attempts, first.dead_at) == (DeliveryState.PENDING, 0, None)
    assert (first.earlier_attempts, first.total_attempts) == (1, 1)  # the dead attempt still counts
    assert "is queued again" in response.content.decode()
    assert "Dead letters 2" in text_of(response.content.decode(), "integration-email")

    # Again: it is not dead any more, so it is refused with a message, not an error page.
    again = ops_client.post(f"/ops/deliveries/{first.id}/retry", follow=True)
    assert again.status_code == 200 and "A delivery that is pending is not retried." in again.content.decode()
    assert ops_client.post(f"/ops/deliveries/{uuid.uuid4()}/retry").status_code == 404

    # The integration's "retry all": the other two; a redirect elsewhere is not followed.
    everything = ops_client.post("/ops/integrations/email/retry-dead", {"next": "https://evil.example/"})
    assert everything["Location"] == "/ops/"
    assert set(Delivery.objects.filter(integration="email").values_list("state", flat=True)) == {"pending"}
    assert {d.id for d in others} <= set(
        Delivery.objects.filter(state="pending").values_list("id", flat=True)
    )
    none_left = ops_client.post("/ops/integrations/email/retry-dead", follow=True)
    assert "There were no dead email deliveries to retry." in none_left.content.decode()
    assert ops_client.post("/ops/integrations/nope/retry-dead").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_order_lookup_tells_one_orders_whole_story(ops_client: Client, traffic: dict[str, Any]) -> None:
    order = traffic["declined"]
    html = ops_client.get("/ops/", {"order": str(order.id)}).content.decode()
    story = text_of(html, "story")
    assert str(order.id) in story and "Payment failed" in story
    assert "Created" in story and "Status changed" in story
    assert "card_declined: Your card was declined." in story  # the payment attempt
    for name, state in (("email", "Dead"), ("sns", "Succeeded"), ("sheets", "Pending")):
        assert re.search(rf"{name} order.payment_failed v\d+ {state}", story), (name, story)
    assert "BadRequestError" in story  # the delivery's error, in the order's errors too
    dead = Delivery.objects.get(order_id=order.id, integration="email")
    assert f'action="/ops/deliveries/{dead.id}/retry"' in html

    # Retrying from the story comes back to the story.
    response = ops_client.post(f"/ops/deliveries/{dead.id}/retry", {"next": f"/ops/?order={order.id}#story"})
    assert response["Location"] == f"/ops/?order={order.id}#story"


@pytest.mark.usefixtures("repository")  # reaches the order store
@pytest.mark.django_db
def test_a_bad_or_unknown_order_id_is_a_message_not_an_error(
    ops_client: Client, clean_breakers: None
) -> None:
    bad = ops_client.get("/ops/", {"order": "not-an-id<script>"})
    assert bad.status_code == 200
    message = text_of(bad.content.decode(), "lookup-error")
    assert message.startswith("“not-an-id<script>” is not an order id, a reference or an email address.")
    assert "not-an-id<script>" not in bad.content.decode()  # escaped
    unknown = uuid.uuid4()
    missing = ops_client.get("/ops/", {"order": f"  {unknown} "})
    assert missing.status_code == 200
    assert text_of(missing.content.decode(), "lookup-error") == f"No order {unknown} was found."


@pytest.mark.django_db
def test_the_fragment_is_only_the_live_part_and_the_window_switches(
    ops_client: Client, clean_breakers: None
) -> None:
    fragment = ops_client.get("/ops/", {"fragment": "1", "window": "24h", "source": "delivery"})
    assert fragment.status_code == 200 and fragment["X-Ops-Fragment"] == "1"
    html = fragment.content.decode()
    assert "<html" not in html and 'id="health"' in html and 'id="errors"' in html
    assert "Over the last 24 hours" in html
    # The forms come back to the page with the same filters, never to the fragment.
    assert 'name="next" value="/ops/?window=24h&amp;source=delivery#probes"' in html
    # 24 hours in 96 steps of 15 minutes; an unknown window is the last hour.
    assert ops_client.get("/ops/", {"window": "1y"}).context["window"] == "1h"


@pytest.mark.django_db
def test_the_test_button_runs_a_probe_and_shows_its_result(
    ops_client: Client, sendgrid_sandbox: Any, clean_breakers: None
) -> None:
    response = ops_client.post("/ops/probes/email", {"next": "/ops/#probes"}, follow=True)
    [result] = ProbeResult.objects.all()
    assert (result.integration, result.trigger) == ("email", "button")
    html = response.content.decode()
    assert result.ok, result.error
    assert "The email probe passed in" in html
    row = re.search(r'<tr data-probe="email">.*?</tr>', html, re.S)
    assert row and "passed" in row.group(0) and "(button)" in row.group(0)

    # With SendGrid down, the probe fails and says why.
    sendgrid_sandbox.set_faults(fail_next=1, status=503)
    failed = ops_client.post("/ops/probes/email", follow=True).content.decode()
    assert "The email probe failed after" in failed
    assert ProbeResult.objects.filter(integration="email", ok=False, trigger="button").count() == 1
    assert ops_client.post("/ops/probes/nope").status_code == 404


# --- the SVG charts ---------------------------------------------------------------------------
def test_charts_escape_their_text_and_leave_gaps_where_nothing_was_measured() -> None:
    from datetime import UTC, datetime, timedelta

    from monitoring.charts import Series, bar_chart, line_chart

    times = [datetime(2026, 1, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=i) for i in range(4)]
    svg = line_chart(
        title="<script>alert(1)</script>",
        desc='a "quoted" & <b>bold</b> description',
        times=times,
        series=[Series("<i>x</i>", [1.0, None, 2.0, 3.0])],
    )
    assert "<script>" not in svg and "&lt;script&gt;alert(1)&lt;/script&gt;" in svg
    assert "&lt;b&gt;bold&lt;/b&gt;" in svg and "&lt;i&gt;x&lt;/i&gt;" in svg
    assert re.search(r'<title id="chart-\d+-title">', svg) and re.search(r'<desc id="chart-\d+-desc">', svg)
    assert svg.count("<circle") == 1 and svg.count("<polyline") == 1  # 1 | gap | 2-3
    assert "No data in this window" not in svg
    assert "12:00" in svg
    empty = bar_chart(
        title="t", desc="d", times=times, series=[Series("s", [0, 0, 0, 0])], empty="Nothing yet"
    )
    assert "Nothing yet" in empty and empty.count("<rect") == 1  # the legend's swatch only
    bars = bar_chart(
        title="t", desc="d", times=times, series=[Series("a", [1, 0, 2, 0]), Series("b", [1, 0, 0, 0])]
    )
    assert bars.count("<title>a:") == 2 and bars.count("<title>b:") == 1
