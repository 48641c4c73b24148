"""The Google Sheets adapter: one row per order in a spreadsheet tab, kept up to date (an upsert).

Each `deliver` call costs at most three Sheets API requests, however many deliveries it holds:

1. one read (`values:batchGet` of columns A and I: order ids and the order version each row shows),
2. one `values:append` (`append_rows`, valueInputOption RAW) with a row for every order not yet
   in the sheet,
3. one `values:batchUpdate` setting status, payment id and version of the orders already there.

(The first call of a process also fetches a token and the spreadsheet's metadata twice; the
client and worksheet are then kept per configuration, so later batches skip those.)

The same order twice in a batch (paid, then refunded) is written once, as its latest version.
A row already showing the same or a newer version is left alone, so re-delivering a batch
writes nothing and an old event retried after a newer one never turns the status back.
RAW input keeps every cell a string, so customer-controlled text is never run as a formula.

Columns: order id, created date, customer ("name <email>"), items ("2x Mug, 1x Tee", with a multiplication sign), total
("29.00"), currency, status, payment id, and the order version the row shows.

Settings: SHEETS_API_BASE (https://sheets.googleapis.com in production; another base, such as a
local stand-in, receives the Sheets and Drive calls gspread makes), SHEETS_SPREADSHEET_ID,
SHEETS_WORKSHEET, GOOGLE_SERVICE_ACCOUNT_JSON (the key file's JSON, whose token_uri says where
tokens come from; required), SHEETS_TIMEOUT_SECONDS, SHEETS_HEALTH_WORKSHEET.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

import gspread
import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
from google.oauth2.service_account import Credentials as ServiceAccountCredentials
from gspread.exceptions import APIError, GSpreadException, SpreadsheetNotFound, WorksheetNotFound
from gspread.http_client import HTTPClient
from gspread.utils import InsertDataOption, ValueInputOption

from integrations.adapters.base import (
    DeliveryError,
    DeliveryOutcome,
    DeliveryRequest,
    ProbeFailed,
    probe_timeout_seconds,
)
from orders.money import decimal_text

SHEETS_API = "https://sheets.googleapis.com"
GOOGLE_APIS = "https://www.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]

HEADER = ["Order ID", "Created", "Customer", "Items", "Total", "Currency", "Status", "Payment ID", "Version"]
LAST_COLUMN = "I"
STATUS_COLUMN, PAYMENT_COLUMN, VERSION_COLUMN = "G", "H", "I"
# Positions of those columns in a row list.
STATUS_AT, PAYMENT_AT, VERSION_AT = 6, 7, 8
DEFAULT_BACKOFF_SECONDS = 30.0
TIMES = "\N{MULTIPLICATION SIGN}"
_ROW_OF_RANGE = re.compile(r"!\$?[A-Za-z]+\$?(\d+)")


# --- Configuration and the client ------------------------------------------------------------


@dataclass(frozen=True)
class SheetsConfig:
    api_base: str
    spreadsheet_id: str
    worksheet: str
    service_account_json: str
    timeout_seconds: float

    @classmethod
    def from_settings(cls) -> SheetsConfig:
        return cls(
            api_base=str(settings.SHEETS_API_BASE).rstrip("/"),
            spreadsheet_id=str(settings.SHEETS_SPREADSHEET_ID),
            worksheet=str(settings.SHEETS_WORKSHEET),
            service_account_json=str(settings.GOOGLE_SERVICE_ACCOUNT_JSON or ""),
            timeout_seconds=float(settings.SHEETS_TIMEOUT_SECONDS),
        )

    @property
    def uses_google(self) -> bool:
        return self.api_base == SHEETS_API

    def service_account_info(self) -> dict[str, Any]:
        """The configured service account key (GOOGLE_SERVICE_ACCOUNT_JSON), checked."""
        if not self.service_account_json.strip():
            raise ImproperlyConfigured("GOOGLE_SERVICE_ACCOUNT_JSON is required to write to Google Sheets.")
        try:
            info = json.loads(self.service_account_json)
        except ValueError as exc:
            raise ImproperlyConfigured(f"GOOGLE_SERVICE_ACCOUNT_JSON is not JSON: {exc}") from exc
        missing = [
            key
            for key in ("client_email", "private_key", "token_uri")
            if not isinstance(info, dict) or not info.get(key)
        ]
        if missing:
            raise ImproperlyConfigured(
                f"GOOGLE_SERVICE_ACCOUNT_JSON is not a service account key (missing {', '.join(missing)})."
            )
        return info


class OffGoogleCredentials(ServiceAccountCredentials):
    """Service-account credentials for an API base other than Google's: they make no call beside
    the key's token_uri (google-auth otherwise looks up a "regional access boundary" at
    iamcredentials.googleapis.com, which such a base does not stand in for)."""

    def _is_regional_access_boundary_lookup_required(self) -> bool:
        return False


class RedirectingHTTPClient(HTTPClient):
    """gspread's HTTP client, with Google's API prefixes rewritten to `api_base`.

    gspread copies its URL constants when it is imported, so patching `gspread.urls` changes
    nothing; every request goes through `request()`, which is the one place to redirect.
    """

    api_base: str = SHEETS_API

    def request(self, method: str, endpoint: str, *args: Any, **kwargs: Any) -> requests.Response:
        if self.api_base != SHEETS_API:
            for prefix in (SHEETS_API, GOOGLE_APIS):
                if endpoint.startswith(prefix):
                    endpoint = self.api_base + endpoint[len(prefix) :]
                    break
        return super().request(method, endpoint, *args, **kwargs)


def http_client_for(api_base: str) -> type[HTTPClient]:
    """gspread's HTTP client class sending every Google API call to `api_base`."""
    return type("RedirectingHTTPClient", (RedirectingHTTPClient,), {"api_base": api_base})


def credentials_for(config: SheetsConfig, info: dict[str, Any]) -> ServiceAccountCredentials:
    """Credentials from a service account key, for Google or for another API base."""
    credentials_class = ServiceAccountCredentials if config.uses_google else OffGoogleCredentials
    return credentials_class.from_service_account_info(info, scopes=SCOPES)


@dataclass
class _Connection:
    client: gspread.Client
    worksheets: dict[tuple[str, str], gspread.Worksheet] = field(default_factory=dict)


_connections: dict[tuple[str, str, float], _Connection] = {}
_connections_lock = threading.Lock()


def _connection(config: SheetsConfig) -> _Connection:
    """One authorised gspread client per (API base, key, timeout) for the process: the token and
    the spreadsheet metadata are fetched once, not once per batch."""
    info = config.service_account_info()
    fingerprint = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()
    key = (config.api_base, fingerprint, config.timeout_seconds)
    with _connections_lock:
        connection = _connections.get(key)
        if connection is None:
            try:
                credentials = credentials_for(config, info)
            except ValueError as exc:  # a malformed private key
                raise ImproperlyConfigured(f"GOOGLE_SERVICE_ACCOUNT_JSON is not usable: {exc}") from exc
            client = gspread.Client(auth=credentials, http_client=http_client_for(config.api_base))
            client.set_timeout(config.timeout_seconds)
            connection = _connections[key] = _Connection(client=client)
        return connection


def forget_connections() -> None:
    """Drop every cached client (tests do this between cases; a new key or base needs no call)."""
    with _connections_lock:
        for connection in _connections.values():
            connection.client.http_client.session.close()
        _connections.clear()


# --- Rows ------------------------------------------------------------------------------------


def _created_date(value: Any) -> str:
    text = str(value or "")
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        return text[:10]


def _customer(order: Mapping[str, Any]) -> str:
    name = str(order.get("customer_name") or "").strip()
    address = str(order.get("email") or "").strip()
    if name and address:
        return f"{name} <{address}>"
    return name or address


def _items(order: Mapping[str, Any]) -> str:
    return ", ".join(f"{line['quantity']}{TIMES} {line['name']}" for line in order.get("lines") or [])


def _payment_id(request: DeliveryRequest) -> str:
    event = request.payload.get("event") or {}
    data = event.get("data") or {}
    return str(data.get("intent_id") or data.get("payment_intent_id") or "")


def order_row(request: DeliveryRequest, *, payment_id: str = "") -> list[str]:
    """The sheet row for the order in `request` (raises KeyError/TypeError/ValueError if malformed)."""
    order = request.order
    currency = str(order["currency"]).upper()
    return [
        str(order.get("id") or request.order_id),
        _created_date(order.get("created_at")),
        _customer(order),
        _items(order),
        decimal_text(int(order["total_minor"]), currency),
        currency,
        str(order["status"]),
        payment_id,
        str(request.order_version),
    ]


@dataclass
class _Plan:
    """What a batch means for one order: its newest row and every delivery it settles."""

    order_id: str
    version: int
    row: list[str]
    delivery_ids: list[uuid.UUID]


def _plan(requests_: list[DeliveryRequest], outcomes: dict[uuid.UUID, DeliveryOutcome]) -> dict[str, _Plan]:
    plans: dict[str, _Plan] = {}
    payments: dict[str, tuple[int, str]] = {}
    for request in requests_:
        try:
            payment_id = _payment_id(request)
            row = order_row(request, payment_id=payment_id)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            outcomes[request.delivery_id] = DeliveryOutcome(
                delivery_id=request.delivery_id,
                error=DeliveryError(
                    transient=False, error_class="InvalidPayload", message=f"not an order snapshot: {exc!r}"
                ),
            )
            continue
        order_id = row[0]
        version = request.order_version
        if payment_id and version >= payments.get(order_id, (-1, ""))[0]:
            payments[order_id] = (version, payment_id)
        plan = plans.get(order_id)
        if plan is None:
            plans[order_id] = _Plan(order_id, version, row, [request.delivery_id])
        else:
            plan.delivery_ids.append(request.delivery_id)
            if version >= plan.version:
                plan.version, plan.row = version, row
    for order_id, plan in plans.items():
        if not plan.row[PAYMENT_AT] and order_id in payments:
            plan.row[PAYMENT_AT] = payments[order_id][1]  # a refund event may not repeat the payment id
    return plans


@dataclass
class _SheetIndex:
    """What one read of the sheet tells: the rows of each order id and the version each row shows."""

    empty: bool
    rows_of: dict[str, list[int]] = field(default_factory=dict)
    versions: dict[int, int] = field(default_factory=dict)


# --- Errors ----------------------------------------------------------------------------------


class UnexpectedAnswer(Exception):
    """The API said yes but not what was expected (e.g. an append without its updated range).
    Transient: the next attempt reads column A and finds whatever was written."""


def _retry_after(response: requests.Response | None) -> float:
    value = response.headers.get("Retry-After", "") if response is not None else ""
    if value.strip().isdigit():
        return max(float(value), 1.0)
    if value:
        try:
            return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 1.0)
        except (TypeError, ValueError):
            pass
    return DEFAULT_BACKOFF_SECONDS


def classify(exc: BaseException) -> tuple[DeliveryError, float]:
    """An exception of a Sheets call as a delivery error and the backoff it asks for."""
    cause = exc.__cause__ if isinstance(exc, PermissionError | SpreadsheetNotFound) else exc
    if isinstance(cause, APIError):
        status = cause.response.status_code
        message = str(cause.error.get("message") or cause)
        error = DeliveryError.from_http(status, message, error_class=type(exc).__name__)
        return error, (_retry_after(cause.response) if status == 429 else 0.0)
    if isinstance(exc, requests.ConnectionError | requests.Timeout | TransportError | UnexpectedAnswer):
        return DeliveryError(transient=True, error_class=type(exc).__name__, message=str(exc)[:1000]), 0.0
    if isinstance(exc, RefreshError):
        # The token endpoint refused the key (invalid_grant...) unless it says to try again.
        return DeliveryError(
            transient=bool(getattr(exc, "retryable", False)),
            error_class="RefreshError",
            message=str(exc)[:1000],
        ), 0.0
    if isinstance(exc, requests.RequestException):
        return DeliveryError(transient=True, error_class=type(exc).__name__, message=str(exc)[:1000]), 0.0
    # Bad configuration: no key, a malformed key, a missing spreadsheet or no access to it.
    return DeliveryError(
        transient=False, error_class=type(exc).__name__, message=str(exc)[:1000] or repr(exc)
    ), 0.0


_FAILURES = (
    UnexpectedAnswer,
    GSpreadException,
    PermissionError,
    GoogleAuthError,
    requests.RequestException,
    ImproperlyConfigured,
)


# --- The adapter -----------------------------------------------------------------------------


def _sheet_ref(title: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", title):
        return title
    return "'" + title.replace("'", "''") + "'"


class SheetsAdapter:
    """Upserts one row per order into SHEETS_WORKSHEET of SHEETS_SPREADSHEET_ID."""

    name: ClassVar[str] = "sheets"
    # One batch is one append request; Sheets allows 60 writes a minute per service account.
    max_batch: ClassVar[int] = 500

    def __init__(self, config: SheetsConfig | None = None) -> None:
        self._config = config

    @property
    def config(self) -> SheetsConfig:
        return self._config or SheetsConfig.from_settings()

    def deliver(self, requests: list[DeliveryRequest]) -> list[DeliveryOutcome]:
        if not requests:
            return []
        config = self.config
        outcomes: dict[uuid.UUID, DeliveryOutcome] = {}
        plans = _plan(requests, outcomes)
        if plans:
            try:
                worksheet = self._worksheet(config)
                index = self._existing(worksheet)
            except _FAILURES as exc:
                self._fail(plans.values(), exc, outcomes, config=config)
            else:
                self._write(worksheet, plans, index, outcomes, config=config)
        return [outcomes[request.delivery_id] for request in requests]

    def probe(self) -> str:
        """Write the time to A1:B1 of the health tab (SHEETS_HEALTH_WORKSHEET, "_health") of the
        configured spreadsheet, adding the tab if it is missing. The orders tab is never touched."""
        config = self.config
        title = str(settings.SHEETS_HEALTH_WORKSHEET or "_health")
        if title.casefold() == config.worksheet.casefold():
            raise ProbeFailed(
                f"SHEETS_HEALTH_WORKSHEET is the orders tab ({title!r}); the probe will not write there",
                error_class="ImproperlyConfigured",
            )
        health = replace(config, worksheet=title, timeout_seconds=probe_timeout_seconds())
        stamp = timezone.now().isoformat(timespec="seconds")
        try:
            worksheet = self._worksheet(health)
            # gspread puts the tab's own name in front of the range.
            worksheet.update([["last probe", stamp]], "A1:B1", value_input_option=ValueInputOption.raw)
        except _FAILURES as exc:
            error, _backoff = classify(exc)
            if not error.transient:
                # The tab or the spreadsheet may be gone or renamed: look again next time.
                with _connections_lock:
                    for connection in _connections.values():
                        connection.worksheets.pop((health.spreadsheet_id, title), None)
            raise ProbeFailed.from_error(error) from exc
        return f"wrote {stamp} to {title}!A1:B1"

    # --- steps ---

    def _worksheet(self, config: SheetsConfig) -> gspread.Worksheet:
        connection = _connection(config)
        key = (config.spreadsheet_id, config.worksheet)
        worksheet = connection.worksheets.get(key)
        if worksheet is None:
            spreadsheet = connection.client.open_by_key(config.spreadsheet_id)
            try:
                worksheet = spreadsheet.worksheet(config.worksheet)
            except WorksheetNotFound:
                # A new tab gets its header with the first append (column A is empty).
                worksheet = spreadsheet.add_worksheet(config.worksheet, rows=1000, cols=len(HEADER))
            connection.worksheets[key] = worksheet
        return worksheet

    @staticmethod
    def _existing(worksheet: gspread.Worksheet) -> _SheetIndex:
        """One read: the rows holding each order id (column A) and the version each shows (I)."""
        ref = _sheet_ref(worksheet.title)
        answer = worksheet.spreadsheet.values_batch_get(
            [f"{ref}!A:A", f"{ref}!{VERSION_COLUMN}:{VERSION_COLUMN}"], params={"majorDimension": "COLUMNS"}
        )
        ranges = answer.get("valueRanges", [])
        ids = (ranges[0].get("values") or [[]])[0] if ranges else []
        version_cells = (ranges[1].get("values") or [[]])[0] if len(ranges) > 1 else []
        index = _SheetIndex(empty=not any(ids))
        for number, value in enumerate(ids, start=1):
            if value:
                index.rows_of.setdefault(str(value), []).append(number)
        for number, value in enumerate(version_cells, start=1):
            if str(value).strip().isdigit():
                index.versions[number] = int(value)
        return index

    def _write(
        self,
        worksheet: gspread.Worksheet,
        plans: dict[str, _Plan],
        index: _SheetIndex,
        outcomes: dict[uuid.UUID, DeliveryOutcome],
        *,
        config: SheetsConfig,
    ) -> None:
        ref = _sheet_ref(worksheet.title)
        new = [plan for plan in plans.values() if plan.order_id not in index.rows_of]
        updates: list[tuple[_Plan, list[int]]] = []
        for plan in plans.values():
            rows = index.rows_of.get(plan.order_id)
            if rows is None:
                continue
            stale_rows = [row for row in rows if index.versions.get(row, -1) < plan.version]
            if stale_rows:
                updates.append((plan, stale_rows))
            else:
                # The sheet already shows this version or a newer one: nothing to write.
                self._succeed(plan, f"{ref}!A{rows[0]}:{LAST_COLUMN}{rows[0]}", outcomes)

        throttled: DeliveryError | None = None
        backoff = 0.0
        if new:
            values = [plan.row for plan in new]
            with_header = index.empty  # an empty tab: the header goes first, in the same request
            if with_header:
                values = [list(HEADER), *values]
            try:
                answer = worksheet.append_rows(
                    values,
                    value_input_option=ValueInputOption.raw,
                    insert_data_option=InsertDataOption.insert_rows,
                    table_range="A1",
                )
                first = self._first_row(answer)
            except _FAILURES as exc:
                error, backoff = self._fail(new, exc, outcomes, config=config)
                if error.provider_status == 429:
                    throttled = error
            else:
                first += 1 if with_header else 0
                for offset, plan in enumerate(new):
                    self._succeed(plan, f"{ref}!A{first + offset}:{LAST_COLUMN}{first + offset}", outcomes)

        if updates:
            if throttled is not None:
                # Told to slow down: do not spend another request of the quota now.
                for plan, _rows in updates:
                    for delivery_id in plan.delivery_ids:
                        outcomes[delivery_id] = DeliveryOutcome(
                            delivery_id=delivery_id, error=throttled, backoff_seconds=backoff
                        )
                return
            data = []
            for plan, rows in updates:
                status, payment_id, version = plan.row[STATUS_AT], plan.row[PAYMENT_AT], plan.row[VERSION_AT]
                for row in rows:
                    if payment_id:
                        data.append(
                            {
                                "range": f"{STATUS_COLUMN}{row}:{VERSION_COLUMN}{row}",
                                "values": [[status, payment_id, version]],
                            }
                        )
                    else:
                        data.append({"range": f"{STATUS_COLUMN}{row}", "values": [[status]]})
                        data.append({"range": f"{VERSION_COLUMN}{row}", "values": [[version]]})
            try:
                worksheet.batch_update(data, value_input_option=ValueInputOption.raw)
            except _FAILURES as exc:
                self._fail([plan for plan, _rows in updates], exc, outcomes, config=config)
            else:
                for plan, rows in updates:
                    self._succeed(plan, f"{ref}!A{rows[0]}:{LAST_COLUMN}{rows[0]}", outcomes)

    @staticmethod
    def _first_row(answer: Mapping[str, Any]) -> int:
        updated = str((answer.get("updates") or {}).get("updatedRange") or "")
        match = _ROW_OF_RANGE.search(updated)
        if match is None:
            # Written, but where is unknown: a retry reads column A and finds the rows.
            raise UnexpectedAnswer(f"append answered no updatedRange: {str(answer)[:300]}")
        return int(match[1])

    @staticmethod
    def _succeed(plan: _Plan, external_id: str, outcomes: dict[uuid.UUID, DeliveryOutcome]) -> None:
        for delivery_id in plan.delivery_ids:
            outcomes[delivery_id] = DeliveryOutcome(delivery_id=delivery_id, external_id=external_id)

    @staticmethod
    def _fail(
        plans: Any, exc: BaseException, outcomes: dict[uuid.UUID, DeliveryOutcome], *, config: SheetsConfig
    ) -> tuple[DeliveryError, float]:
        error, backoff = classify(exc)
        if not error.transient:
            # The spreadsheet or tab may have changed (deleted, renamed, access revoked): look again.
            with _connections_lock:
                for connection in _connections.values():
                    connection.worksheets.pop((config.spreadsheet_id, config.worksheet), None)
        for plan in plans:
            for delivery_id in plan.delivery_ids:
                outcomes[delivery_id] = DeliveryOutcome(
                    delivery_id=delivery_id, error=error, backoff_seconds=backoff
                )
        return error, backoff
