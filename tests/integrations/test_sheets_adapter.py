"""The Sheets adapter against the Sheets sandbox, through the real gspread and google-auth.

What matters most is the number of API calls per batch: Google allows 60 writes a minute per
service account, so a batch must cost one append (new rows) and at most one batch update
(rows already there), plus one read, however many deliveries it holds.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings

from integrations.adapters.base import DeliveryRequest, IntegrationAdapter
from integrations.adapters.sheets import (
    HEADER,
    SheetsAdapter,
    UnexpectedAnswer,
    classify,
    forget_connections,
)
from orders.money import decimal_text

COUNTED = ("read", "metadata", "append", "update", "batch_update", "sheet_batch_update")


def delivery(
    order_id: uuid.UUID,
    *,
    status: str = "paid",
    version: int = 2,
    intent_id: str | None = "auto",
    name: str = "Ada Lovelace",
    currency: str = "EUR",
    total_minor: int = 2900,
) -> DeliveryRequest:
    order = {
        "id": str(order_id),
        "status": status,
        "email": "ada@example.com",
        "customer_name": name,
        "currency": currency,
        "subtotal_minor": total_minor,
        "shipping_minor": 0,
        "total_minor": total_minor,
        "lines": [
            {"sku": "MUG", "name": "Mug", "quantity": 2, "unit_price_minor": 1000, "line_total_minor": 2000},
            {"sku": "TEE", "name": "Tee", "quantity": 1, "unit_price_minor": 900, "line_total_minor": 900},
        ],
        "shipping_address": {"name": name},
        "created_at": "2025-03-14T15:09:26.535897+00:00",
        "updated_at": "2025-03-14T15:10:00+00:00",
        "version": version,
    }
    data = (
        {}
        if intent_id is None
        else {"intent_id": f"pi_{order_id.hex[:12]}" if intent_id == "auto" else intent_id}
    )
    return DeliveryRequest(
        delivery_id=uuid.uuid4(),
        idempotency_key=f"{order_id}:sheets:{version}",
        event_type=f"order.{status}",
        order_id=order_id,
        order_version=version,
        payload={
            "order": order,
            "event": {"from_status": "pending_payment", "to_status": status, "actor": "system", "data": data},
        },
    )


def counts(sandbox: Any) -> dict[str, int]:
    stats = sandbox.stats()
    return {kind: stats[kind] for kind in COUNTED}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {kind: after[kind] - before[kind] for kind in COUNTED if after[kind] != before[kind]}


def rows(sandbox: Any) -> list[list[str]]:
    return sandbox.values(django_settings.SHEETS_SPREADSHEET_ID)


def row_of(sandbox: Any, order_id: uuid.UUID) -> tuple[int, list[str]]:
    matches = [(n, row) for n, row in enumerate(rows(sandbox), start=1) if row and row[0] == str(order_id)]
    assert len(matches) == 1, f"{order_id} is on {len(matches)} rows"
    return matches[0]


@pytest.fixture
def adapter(sheets_sandbox: Any) -> SheetsAdapter:
    return SheetsAdapter()


def test_it_is_an_integration_adapter() -> None:
    adapter = SheetsAdapter()

    assert isinstance(adapter, IntegrationAdapter)
    assert adapter.name == "sheets"
    assert adapter.max_batch >= 50


def test_a_batch_of_new_orders_is_one_read_and_one_append(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    orders = [uuid.uuid4() for _ in range(50)]
    batch = [delivery(order_id) for order_id in orders]

    outcomes = adapter.deliver(batch)

    assert [o.delivery_id for o in outcomes] == [d.delivery_id for d in batch]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    # The first batch of a process also opens the spreadsheet (two metadata reads, one token).
    assert counts(sheets_sandbox) == {
        "read": 1,
        "metadata": 2,
        "append": 1,
        "update": 0,
        "batch_update": 0,
        "sheet_batch_update": 0,
    }
    assert sheets_sandbox.stats()["token"] == 1
    sheet = rows(sheets_sandbox)
    assert sheet[0] == HEADER
    assert len(sheet) == 51
    for outcome, order_id in zip(outcomes, orders, strict=True):
        number, _row = row_of(sheets_sandbox, order_id)
        assert outcome.external_id == f"Orders!A{number}:I{number}"
    assert sheet[1] == [
        str(orders[0]),
        "2025-03-14",
        "Ada Lovelace <ada@example.com>",
        "2\N{MULTIPLICATION SIGN} Mug, 1\N{MULTIPLICATION SIGN} Tee",
        "29.00",
        "EUR",
        "paid",
        f"pi_{orders[0].hex[:12]}",
        "2",
    ]
    append = next(call for call in sheets_sandbox.calls if call["kind"] == "append")
    assert append["query"]["valueInputOption"] == "RAW"


def test_status_updates_are_one_read_and_one_batch_update(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    orders = [uuid.uuid4() for _ in range(50)]
    first = adapter.deliver([delivery(order_id) for order_id in orders])
    before = counts(sheets_sandbox)

    refunds = [delivery(order_id, status="refunded", version=3, intent_id=None) for order_id in orders[:10]]
    outcomes = adapter.deliver(refunds)

    assert all(o.ok for o in outcomes)
    assert delta(before, counts(sheets_sandbox)) == {"read": 1, "batch_update": 1}
    assert len(rows(sheets_sandbox)) == 51  # no new rows
    for outcome, earlier, order_id in zip(outcomes, first[:10], orders[:10], strict=True):
        assert outcome.external_id == earlier.external_id
        _, row = row_of(sheets_sandbox, order_id)
        # Status and version change; the payment id the refund event did not repeat stays.
        assert row[6:] == ["refunded", f"pi_{order_id.hex[:12]}", "3"]
    assert row_of(sheets_sandbox, orders[10])[1][6] == "paid"


def test_redelivering_a_batch_writes_nothing_and_duplicates_nothing(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    batch = [delivery(uuid.uuid4()) for _ in range(20)]
    first = adapter.deliver(batch)
    before = counts(sheets_sandbox)

    again = adapter.deliver(batch)

    assert [o.external_id for o in again] == [o.external_id for o in first]
    assert all(o.ok for o in again)
    assert delta(before, counts(sheets_sandbox)) == {"read": 1}
    assert len(rows(sheets_sandbox)) == 21


def test_new_and_known_orders_in_one_batch(sheets_sandbox: Any, adapter: SheetsAdapter) -> None:
    known = [uuid.uuid4() for _ in range(3)]
    adapter.deliver([delivery(order_id) for order_id in known])
    before = counts(sheets_sandbox)
    fresh = [uuid.uuid4() for _ in range(4)]

    outcomes = adapter.deliver(
        [delivery(order_id, status="cancelled", version=5) for order_id in known]
        + [delivery(order_id) for order_id in fresh]
    )

    assert all(o.ok for o in outcomes)
    assert delta(before, counts(sheets_sandbox)) == {"read": 1, "append": 1, "batch_update": 1}
    assert [row[6] for row in rows(sheets_sandbox)[1:]] == ["cancelled"] * 3 + ["paid"] * 4


def test_the_same_order_twice_in_a_batch_is_one_row_with_its_latest_status(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    order_id = uuid.uuid4()
    paid = delivery(order_id, status="paid", version=2, intent_id="pi_first")
    refunded = delivery(order_id, status="refunded", version=4, intent_id=None)

    outcomes = adapter.deliver([refunded, paid])  # in any order

    assert all(o.ok for o in outcomes)
    assert outcomes[0].external_id == outcomes[1].external_id == "Orders!A2:I2"
    assert counts(sheets_sandbox)["append"] == 1
    assert len(rows(sheets_sandbox)) == 2
    assert rows(sheets_sandbox)[1][0] == str(order_id)
    assert rows(sheets_sandbox)[1][6:] == ["refunded", "pi_first", "4"]


def test_an_old_event_retried_after_a_newer_one_does_not_turn_the_status_back(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    order_id = uuid.uuid4()
    adapter.deliver([delivery(order_id, status="refunded", version=4)])
    before = counts(sheets_sandbox)

    outcomes = adapter.deliver([delivery(order_id, status="paid", version=2)])

    assert outcomes[0].ok
    assert outcomes[0].external_id == "Orders!A2:I2"
    assert delta(before, counts(sheets_sandbox)) == {"read": 1}
    assert row_of(sheets_sandbox, order_id)[1][6:] == ["refunded", f"pi_{order_id.hex[:12]}", "4"]


def test_rows_duplicated_by_a_concurrent_writer_are_all_kept_in_step(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    order_id = uuid.uuid4()
    adapter.deliver([delivery(order_id)])
    adapter.deliver([delivery(uuid.uuid4())])
    # Two workers appending the same new order at once would leave two rows.
    sheets_sandbox.state.get(django_settings.SHEETS_SPREADSHEET_ID).sheet("Orders").write(
        4, 1, [rows(sheets_sandbox)[1]]
    )

    outcomes = adapter.deliver([delivery(order_id, status="refunded", version=3)])

    assert outcomes[0].external_id == "Orders!A2:I2"
    assert [row[6] for row in rows(sheets_sandbox) if row[0] == str(order_id)] == ["refunded", "refunded"]


def test_503_fails_the_whole_batch_transiently_and_a_retry_succeeds(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    adapter.deliver([delivery(uuid.uuid4())])  # opens the spreadsheet
    batch = [delivery(uuid.uuid4()) for _ in range(5)]
    sheets_sandbox.set_faults(fail_next=1, status=503)

    outcomes = adapter.deliver(batch)

    assert all(not o.ok for o in outcomes)
    assert {(o.error.transient, o.error.provider_status) for o in outcomes if o.error} == {(True, 503)}
    assert all(o.backoff_seconds == 0 for o in outcomes)
    assert len(rows(sheets_sandbox)) == 2

    retried = adapter.deliver(batch)

    assert all(o.ok for o in retried)
    assert len(rows(sheets_sandbox)) == 7


def test_a_failed_append_fails_only_the_new_orders(sheets_sandbox: Any, adapter: SheetsAdapter) -> None:
    known = uuid.uuid4()
    adapter.deliver([delivery(known)])
    fresh = delivery(uuid.uuid4())
    update = delivery(known, status="refunded", version=3)
    sheets_sandbox.set_faults(fail_next=1, status=503, kinds=["append"])

    outcomes = adapter.deliver([fresh, update])

    assert outcomes[0].error is not None and outcomes[0].error.transient
    assert outcomes[1].ok
    assert row_of(sheets_sandbox, known)[1][6] == "refunded"
    assert adapter.deliver([fresh])[0].external_id == "Orders!A3:I3"


def test_429_is_transient_with_the_backoff_google_asked_for(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    adapter.deliver([delivery(uuid.uuid4())])
    sheets_sandbox.set_faults(burst_429=1, retry_after=17)

    outcomes = adapter.deliver([delivery(uuid.uuid4()) for _ in range(3)])

    for outcome in outcomes:
        assert outcome.error is not None
        assert outcome.error.transient
        assert outcome.error.provider_status == 429
        assert outcome.backoff_seconds == 17


def test_429_without_retry_after_backs_off_by_default(sheets_sandbox: Any, adapter: SheetsAdapter) -> None:
    sheets_sandbox.set_faults(burst_429=1, retry_after=None)

    outcomes = adapter.deliver([delivery(uuid.uuid4())])

    assert outcomes[0].error is not None and outcomes[0].error.transient
    assert outcomes[0].backoff_seconds == 30


@pytest.mark.usefixtures("still_clock")
def test_write_quota_exhausted_on_the_append_spares_the_update_call(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    known = uuid.uuid4()
    adapter.deliver([delivery(known)])
    sheets_sandbox.set_faults(write_quota_per_minute=1)  # the first append used it up
    before = counts(sheets_sandbox)

    outcomes = adapter.deliver([delivery(uuid.uuid4()), delivery(known, status="refunded", version=3)])

    assert all(o.error is not None and o.error.provider_status == 429 for o in outcomes)
    assert all(o.backoff_seconds > 0 for o in outcomes)
    assert delta(before, counts(sheets_sandbox)) == {"read": 1}
    assert sheets_sandbox.stats()["faults_served"] == 1  # the batch update was not even tried


def test_400_is_permanent(sheets_sandbox: Any, adapter: SheetsAdapter) -> None:
    sheets_sandbox.set_faults(fail_next=1, status=400)

    outcomes = adapter.deliver([delivery(uuid.uuid4()) for _ in range(2)])

    assert all(
        o.error is not None and not o.error.transient and o.error.provider_status == 400 for o in outcomes
    )


def test_a_missing_spreadsheet_is_permanent(sheets_sandbox: Any, adapter: SheetsAdapter) -> None:
    sheets_sandbox.state.auto_create = False
    try:
        outcomes = adapter.deliver([delivery(uuid.uuid4())])
    finally:
        sheets_sandbox.state.auto_create = True

    assert outcomes[0].error is not None
    assert not outcomes[0].error.transient
    assert outcomes[0].error.provider_status == 404


def test_a_spreadsheet_without_the_tab_gets_it_with_a_header(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    sheets_sandbox.create_spreadsheet(django_settings.SHEETS_SPREADSHEET_ID, sheets=["Sheet1"])
    order_id = uuid.uuid4()

    outcomes = adapter.deliver([delivery(order_id)])

    assert outcomes[0].external_id == "Orders!A2:I2"
    assert rows(sheets_sandbox)[0] == HEADER
    assert rows(sheets_sandbox)[1][0] == str(order_id)
    assert counts(sheets_sandbox)["sheet_batch_update"] == 1
    assert counts(sheets_sandbox)["append"] == 1  # the header came in the same request


def test_an_unreachable_api_is_transient(settings: Any, sheets_sandbox: Any) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.SHEETS_API_BASE = f"http://127.0.0.1:{port}"

    outcomes = SheetsAdapter().deliver([delivery(uuid.uuid4())])

    assert outcomes[0].error is not None
    assert outcomes[0].error.transient


@pytest.mark.parametrize(
    "key",
    [
        "not json",
        json.dumps({"type": "service_account", "client_email": "x@example.com"}),
        json.dumps(
            {"client_email": "x@example.com", "private_key": "not a key", "token_uri": "http://x/token"}
        ),
    ],
)
def test_bad_credentials_are_permanent(settings: Any, sheets_sandbox: Any, key: str) -> None:
    settings.GOOGLE_SERVICE_ACCOUNT_JSON = key

    outcomes = SheetsAdapter().deliver([delivery(uuid.uuid4())])

    assert outcomes[0].error is not None
    assert not outcomes[0].error.transient
    assert outcomes[0].error.error_class == "ImproperlyConfigured"
    assert sheets_sandbox.stats()["requests"] == 0


def test_production_without_a_key_is_a_configuration_error(settings: Any, sheets_sandbox: Any) -> None:
    settings.PRODUCTION = True
    settings.GOOGLE_SERVICE_ACCOUNT_JSON = ""  # the sandbox app's throwaway key is not there

    outcomes = SheetsAdapter().deliver([delivery(uuid.uuid4())])

    assert outcomes[0].error is not None and not outcomes[0].error.transient
    assert "GOOGLE_SERVICE_ACCOUNT_JSON" in outcomes[0].error.message


def test_a_configured_key_is_used(settings: Any, sheets_sandbox: Any) -> None:
    from sandbox.sheets import throwaway_service_account

    info = {
        **throwaway_service_account(sheets_sandbox.url),
        "client_email": "configured@example.iam.gserviceaccount.com",
    }
    settings.GOOGLE_SERVICE_ACCOUNT_JSON = json.dumps(info)
    forget_connections()

    outcomes = SheetsAdapter().deliver([delivery(uuid.uuid4())])

    assert outcomes[0].ok
    assert sheets_sandbox.stats()["token"] == 1


def test_a_malformed_delivery_fails_alone(sheets_sandbox: Any, adapter: SheetsAdapter) -> None:
    good = delivery(uuid.uuid4())
    bad = DeliveryRequest(
        delivery_id=uuid.uuid4(),
        idempotency_key="bad",
        event_type="order.paid",
        order_id=uuid.uuid4(),
        order_version=1,
        payload={"order": {"id": "x"}, "event": {}},
    )

    outcomes = adapter.deliver([bad, good])

    assert outcomes[0].error is not None and outcomes[0].error.error_class == "InvalidPayload"
    assert not outcomes[0].error.transient
    assert outcomes[1].ok
    assert len(rows(sheets_sandbox)) == 2


def test_text_that_looks_like_a_formula_is_stored_as_text(
    sheets_sandbox: Any, adapter: SheetsAdapter
) -> None:
    order_id = uuid.uuid4()

    adapter.deliver([delivery(order_id, name='=HYPERLINK("http://evil.example","x")')])

    assert row_of(sheets_sandbox, order_id)[1][2].startswith("=HYPERLINK(")
    assert all(call["query"].get("valueInputOption") in {None, "RAW"} for call in sheets_sandbox.calls)


@pytest.mark.usefixtures("still_clock")
def test_later_batches_reuse_the_client(sheets_sandbox: Any, adapter: SheetsAdapter) -> None:
    for _ in range(3):
        SheetsAdapter().deliver([delivery(uuid.uuid4())])

    stats = sheets_sandbox.stats()
    assert (stats["token"], stats["metadata"], stats["read"], stats["append"]) == (1, 2, 3, 3)
    assert stats["writes_per_minute_max"] == 3


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (2900, "EUR", "29.00"),
        (5, "usd", "0.05"),
        (1200, "JPY", "1200"),
        (12345, "KWD", "12.345"),
        (-150, "GBP", "-1.50"),
    ],
)
def test_totals_are_plain_decimals(minor: int, currency: str, text: str) -> None:
    assert decimal_text(minor, currency) == text


def test_an_append_whose_answer_cannot_be_read_is_retried_not_dropped() -> None:
    # A retry is safe: it reads column A first and updates what the lost answer had written.
    error, backoff = classify(UnexpectedAnswer("append answered no updatedRange"))

    assert error.transient
    assert backoff == 0
