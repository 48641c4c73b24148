"""The Google Sheets sandbox, driven by the real gspread and google-auth (and plain HTTP for its
admin endpoints): what it must get right for the Sheets adapter's tests to mean anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import gspread
import pytest
import requests
from google.auth.transport.requests import Request

from integrations.adapters import sheets
from sandbox import sheets as sheets_server
from tests.polling import DEADLINE_SECONDS, eventually

ROOT = Path(__file__).resolve().parents[2]


def client_for(url: str) -> gspread.Client:
    """A gspread client the way the adapter builds one: service-account auth, URLs redirected."""
    credentials = sheets.OffGoogleCredentials.from_service_account_info(
        sheets_server.throwaway_service_account(url), scopes=sheets.SCOPES
    )
    return gspread.Client(auth=credentials, http_client=sheets.http_client_for(url))


@pytest.fixture
def gc(sheets_sandbox: Any) -> gspread.Client:
    return client_for(sheets_sandbox.url)


@pytest.fixture
def token(sheets_sandbox: Any) -> str:
    credentials = sheets.OffGoogleCredentials.from_service_account_info(
        sheets_server.throwaway_service_account(sheets_sandbox.url), scopes=sheets.SCOPES
    )
    credentials.refresh(Request())
    return credentials.token


def test_header_matches_the_adapter() -> None:
    assert sheets_server.DEFAULT_HEADER == sheets.HEADER


def test_token_endpoint_grants_a_token_for_a_service_account_assertion(sheets_sandbox: Any) -> None:
    credentials = sheets.OffGoogleCredentials.from_service_account_info(
        sheets_server.throwaway_service_account(sheets_sandbox.url), scopes=sheets.SCOPES
    )
    credentials.refresh(Request())  # google-auth signs a JWT and posts it to token_uri

    assert credentials.token.startswith("ya29.sandbox-")
    assert credentials.expiry is not None
    assert sheets_sandbox.stats()["token"] == 1
    answer = requests.get(
        f"{sheets_sandbox.url}/v4/spreadsheets/any-id",
        headers={"Authorization": f"Bearer {credentials.token}"},
        timeout=5,
    )
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "not-a-jwt"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "e30.e30.c2ln"},
        {"grant_type": "client_credentials"},
    ],
)
def test_token_endpoint_refuses_what_is_not_a_jwt_bearer_grant(
    sheets_sandbox: Any, form: dict[str, str]
) -> None:
    answer = requests.post(f"{sheets_sandbox.url}/token", data=form, timeout=5)

    assert answer.status_code == 400
    assert answer.json()["error"] in {"invalid_grant", "unsupported_grant_type"}
    assert sheets_sandbox.stats()["token"] == 0


@pytest.mark.parametrize("authorization", [None, "Bearer made-up-token", "Basic dXNlcjpwYXNz"])
def test_api_calls_need_a_token_from_its_token_endpoint(
    sheets_sandbox: Any, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.get(f"{sheets_sandbox.url}/v4/spreadsheets/demo", headers=headers, timeout=5)

    assert answer.status_code == 401
    assert answer.json()["error"]["status"] == "UNAUTHENTICATED"
    assert sheets_sandbox.stats()["unauthorized"] == 1
    assert sheets_sandbox.stats()["metadata"] == 0


def test_a_client_whose_token_was_forgotten_gets_a_new_one(sheets_sandbox: Any, gc: gspread.Client) -> None:
    gc.open_by_key("s1")
    with sheets_sandbox.state.lock:
        sheets_sandbox.state.tokens.clear()  # as if the sandbox process had restarted

    gc.open_by_key("s1")  # google-auth refreshes on the 401 and repeats the call

    stats = sheets_sandbox.stats()
    assert stats["token"] == 2
    assert stats["unauthorized"] == 1


def test_metadata_of_a_spreadsheet_created_on_demand(sheets_sandbox: Any, gc: gspread.Client) -> None:
    spreadsheet = gc.open_by_key("brand-new")
    worksheet = spreadsheet.worksheet("Orders")

    assert [ws.title for ws in spreadsheet.worksheets()] == ["Orders"]
    assert worksheet.row_count == 1000
    assert worksheet.col_count == 26
    assert worksheet.id == 0
    assert worksheet.row_values(1) == sheets.HEADER
    assert sheets_sandbox.stats()["metadata"] == 3  # open_by_key, worksheet(), worksheets()


def test_append_get_update_answer_strings_like_the_real_api(sheets_sandbox: Any, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key("values").worksheet("Orders")

    answer = worksheet.append_rows([["a", 1, 2.5, True], ["b", 10, 0.1, False]])

    assert answer["updates"]["updatedRange"] == "Orders!A2:D3"
    assert answer["updates"]["updatedRows"] == 2
    assert answer["tableRange"] == "Orders!A1:I1"
    assert worksheet.get_values("A2:D3") == [["a", "1", "2.5", "TRUE"], ["b", "10", "0.1", "FALSE"]]

    worksheet.update([["x", "y"]], "B3:C3")
    assert worksheet.row_values(3) == ["b", "x", "y", "FALSE"]

    worksheet.batch_update([{"range": "A2", "values": [["a2"]]}, {"range": "D3", "values": [["z"]]}])
    assert worksheet.col_values(1) == ["Order ID", "a2", "b"]
    assert worksheet.row_values(3) == ["b", "x", "y", "z"]

    ranges = worksheet.spreadsheet.values_batch_get(
        ["Orders!A:A", "'Orders'!D2:D"], params={"majorDimension": "COLUMNS"}
    )
    assert [r.get("values") for r in ranges["valueRanges"]] == [[["Order ID", "a2", "b"]], [["TRUE", "z"]]]
    assert sheets_sandbox.values("values")[1:] == [["a2", "1", "2.5", "TRUE"], ["b", "x", "y", "z"]]


def test_append_lands_after_the_last_used_row_and_grows_the_grid(
    sheets_sandbox: Any, gc: gspread.Client
) -> None:
    worksheet = gc.open_by_key("grow").worksheet("Orders")

    worksheet.append_rows([[str(n)] for n in range(1200)])
    answer = worksheet.append_rows([["last"]], table_range="A1")

    assert answer["updates"]["updatedRange"] == "Orders!A1202"
    assert gc.open_by_key("grow").worksheet("Orders").row_count == 1202


def test_add_sheet_and_reading_a_missing_tab(sheets_sandbox: Any, gc: gspread.Client) -> None:
    spreadsheet = gc.open_by_key("tabs")

    added = spreadsheet.add_worksheet("Refunds", rows=10, cols=3)

    assert [ws.title for ws in spreadsheet.worksheets()] == ["Orders", "Refunds"]
    assert added.row_count == 10
    assert sheets_sandbox.stats()["sheet_batch_update"] == 1
    with pytest.raises(gspread.exceptions.WorksheetNotFound):
        spreadsheet.worksheet("Nope")
    with pytest.raises(gspread.exceptions.APIError) as raised:
        spreadsheet.values_get("Nope!A1")
    assert raised.value.response.status_code == 400


def test_writes_need_a_value_input_option(sheets_sandbox: Any, token: str) -> None:
    answer = requests.put(
        f"{sheets_sandbox.url}/v4/spreadsheets/s/values/Orders!A2",
        json={"values": [["x"]]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_faults_fail_the_next_calls_then_clear(sheets_sandbox: Any, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key("faults").worksheet("Orders")
    answer = requests.post(
        f"{sheets_sandbox.url}/_sandbox/faults", json={"fail_next": 2, "status": 503}, timeout=5
    )
    assert answer.json()["fail_next"] == 2

    for _ in range(2):
        with pytest.raises(gspread.exceptions.APIError) as raised:
            worksheet.append_rows([["x"]])
        assert raised.value.response.status_code == 503
        assert raised.value.error["status"] == "UNAVAILABLE"
    worksheet.append_rows([["x"]])

    stats = sheets_sandbox.stats()
    assert stats["faults_served"] == 2
    assert stats["append"] == 1
    assert sheets_sandbox.values("faults")[1:] == [["x"]]


def test_burst_429_answers_too_many_requests_with_retry_after(
    sheets_sandbox: Any, gc: gspread.Client
) -> None:
    worksheet = gc.open_by_key("quota").worksheet("Orders")
    sheets_sandbox.set_faults(burst_429=1, retry_after=17)

    with pytest.raises(gspread.exceptions.APIError) as raised:
        worksheet.col_values(1)

    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "17"
    assert raised.value.error["status"] == "RESOURCE_EXHAUSTED"
    assert worksheet.col_values(1) == ["Order ID"]


@pytest.mark.usefixtures("still_clock")
def test_write_quota_per_minute_is_enforced_when_asked(sheets_sandbox: Any, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key("quota").worksheet("Orders")
    sheets_sandbox.set_faults(write_quota_per_minute=3)

    for n in range(3):
        worksheet.append_rows([[str(n)]])
    with pytest.raises(gspread.exceptions.APIError) as raised:
        worksheet.append_rows([["too many"]])

    assert raised.value.response.status_code == 429
    assert worksheet.col_values(1) == ["Order ID", "0", "1", "2"]  # reads are not writes
    assert sheets_sandbox.stats()["writes_per_minute_max"] == 3


def test_latency_delays_each_api_call(sheets_sandbox: Any, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key("slow").worksheet("Orders")
    sheets_sandbox.set_faults(latency_ms=2000)
    # The sandbox holds each answer back for longer than this client waits, at any speed.
    gc.set_timeout(0.2)

    with pytest.raises(requests.exceptions.ReadTimeout):
        worksheet.col_values(1)
    sheets_sandbox.set_faults(latency_ms=0)
    gc.set_timeout(None)
    assert worksheet.col_values(1) == ["Order ID"]


@pytest.mark.usefixtures("still_clock")
def test_stats_count_calls_by_kind(sheets_sandbox: Any, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key("counted").worksheet("Orders")  # 2 metadata
    worksheet.append_rows([["a"], ["b"]])  # 1 append, however many rows
    worksheet.append_rows([["c"]])
    worksheet.update([["x"]], "B2")  # 1 update
    worksheet.batch_update([{"range": "C2", "values": [["y"]]}, {"range": "C3", "values": [["z"]]}])  # 1
    worksheet.col_values(1)  # 1 read

    stats = requests.get(f"{sheets_sandbox.url}/_sandbox/stats", timeout=5).json()

    assert {k: stats[k] for k in ("metadata", "append", "update", "batch_update", "read", "token")} == {
        "metadata": 2,
        "append": 2,
        "update": 1,
        "batch_update": 1,
        "read": 1,
        "token": 1,
    }
    assert stats["total_writes"] == 4
    assert stats["writes_per_minute_max"] == 4
    assert stats["requests"] == 7
    appends = [call for call in sheets_sandbox.calls if call["kind"] == "append"]
    assert appends[0]["query"]["valueInputOption"] == "RAW"


def test_reset_forgets_spreadsheets_counts_and_faults_but_not_tokens(
    sheets_sandbox: Any, gc: gspread.Client
) -> None:
    gc.open_by_key("gone").worksheet("Orders").append_rows([["a"]])
    sheets_sandbox.set_faults(latency_ms=5, fail_next=3)

    answer = requests.post(f"{sheets_sandbox.url}/_sandbox/reset", timeout=5)

    assert answer.status_code == 200
    assert sheets_sandbox.values("gone") == []
    assert sheets_sandbox.stats()["append"] == 0
    assert sheets_sandbox.state.faults.fail_next == 0
    assert gc.open_by_key("gone").worksheet("Orders").col_values(1) == ["Order ID"]
    assert sheets_sandbox.stats()["token"] == 0  # the old token still works


def test_admin_create_and_json_view_of_a_spreadsheet(sheets_sandbox: Any, gc: gspread.Client) -> None:
    created = requests.post(
        f"{sheets_sandbox.url}/_sandbox/spreadsheets",
        json={"spreadsheetId": "admin-made", "title": "Ledger", "sheets": ["Sheet1", "Orders"]},
        timeout=5,
    ).json()
    assert [s["properties"]["title"] for s in created["sheets"]] == ["Sheet1", "Orders"]
    gc.open_by_key("admin-made").worksheet("Sheet1").append_rows([["hello"]])

    view = requests.get(f"{sheets_sandbox.url}/_sandbox/spreadsheets/admin-made", timeout=5).json()

    assert view["title"] == "Ledger"
    assert view["sheets"] == {"Sheet1": [["hello"]], "Orders": [sheets.HEADER]}
    missing = requests.get(f"{sheets_sandbox.url}/_sandbox/spreadsheets/nothing-here", timeout=5)
    assert missing.status_code == 404


def test_inbox_page_shows_rows_escaped(sheets_sandbox: Any, gc: gspread.Client) -> None:
    gc.open_by_key("inbox").worksheet("Orders").append_rows([["<script>x</script>", "Ada <ada@example.com>"]])

    page = requests.get(f"{sheets_sandbox.url}/", timeout=5)

    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "&lt;script&gt;x&lt;/script&gt;" in page.text
    assert "Ada &lt;ada@example.com&gt;" in page.text
    assert "<script>x" not in page.text


def test_without_auto_create_an_unknown_spreadsheet_is_not_found() -> None:
    sandbox = sheets_server.SheetsSandbox(auto_create=False)
    url = sandbox.start()
    try:
        with pytest.raises(gspread.exceptions.SpreadsheetNotFound):
            client_for(url).open_by_key("missing")
    finally:
        sandbox.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Orders!A1:I1", ("Orders", 1, 1, 1, 9)),
        ("'My ''tab'''!B2:C", ("My 'tab'", 2, 2, None, 3)),
        ("A:A", (None, 1, 1, None, 1)),
        ("Orders", ("Orders", 1, 1, None, None)),
        ("Orders!G5", ("Orders", 5, 7, 5, 7)),
    ],
)
def test_a1_ranges(text: str, expected: tuple[Any, ...]) -> None:
    parsed = sheets_server.A1Range.parse(text)

    assert (parsed.sheet, parsed.start_row, parsed.start_col, parsed.end_row, parsed.end_col) == expected


@pytest.mark.slow
def test_management_command_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox_sheets", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_ENV": "development"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        stats = eventually(
            lambda: requests.get(f"{url}/_sandbox/stats", timeout=2).json(), what="the sandbox"
        )
        assert stats["total_writes"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_SECONDS) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
