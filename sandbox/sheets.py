"""A stand-in for the Google Sheets API v4 (and Google's OAuth token endpoint) on 127.0.0.1.

No emulator of Google Sheets exists on any registry, so the project ships this one. It speaks
enough of the real API for gspread 6 with service-account credentials:

- `POST /token`: the OAuth 2.0 JWT-bearer grant. Any well-formed assertion (three base64url
  parts, a JSON header and a JSON claim set with `iss` and `aud`) gets an access token; the
  signature is not checked. Every API call must carry `Authorization: Bearer <token>` with a
  token issued here (401 in Google's error format otherwise, which makes google-auth refresh).
- `GET /v4/spreadsheets/{id}`: metadata, `sheets[].properties` with `gridProperties`.
- `GET|PUT /v4/spreadsheets/{id}/values/{range}`, `POST .../values/{range}:append`,
  `POST .../values:batchUpdate`, `GET .../values:batchGet`, `POST .../values/{range}:clear`.
- `POST /v4/spreadsheets/{id}:batchUpdate`: addSheet, deleteSheet, updateSheetProperties.

Spreadsheets are created on demand for any id, with one tab (`worksheet`, default "Orders")
holding a header row. Cells are kept and returned as strings, the way the real API returns
formatted values (RAW numbers come back as "29", booleans as "TRUE").

For tests and operators it also serves:

- `GET /`: an HTML inbox of every spreadsheet's rows, with the call counts.
- `GET /favicon.ico`: a small icon (sandbox/favicon.py), so a browser's tab has one.
- `GET /_sandbox/spreadsheets/{id}`: the values of each tab as JSON.
- `POST /_sandbox/spreadsheets` ({"spreadsheetId"?, "title"?, "sheets"?: ["Orders"]}): create one.
- `GET /_sandbox/stats`: calls counted by kind (read, metadata, append, update, batch_update,
  sheet_batch_update, clear, token), `total_writes` and `writes_per_minute_max` (the most
  write requests in any 60 s window, the quantity Google's 60-per-minute quota limits).
- `POST /_sandbox/faults` ({"fail_next": N, "status": 503, "latency_ms": 0, "burst_429": N,
  "retry_after": 30, "write_quota_per_minute": 0, "kinds": null}): the next N API calls fail
  with `status`, the next N answer 429 (with Retry-After), every call waits `latency_ms`;
  `kinds` (e.g. ["append"]) limits fail_next and burst_429 to those kinds of call; a write
  quota above 0 answers 429 to writes beyond it in any 60 s window, like the real quota.
- `POST /_sandbox/reset`: forget spreadsheets, counts and faults (issued tokens stay valid).

Runs in a thread (`SheetsSandbox(port=0).start()`, for tests) or as a process
(`manage.py sandbox_sheets --port 8426`, for `make run`). Development and test tooling only.
"""

from __future__ import annotations

import base64
import binascii
import collections
import functools
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox import favicon

DEFAULT_WORKSHEET = "Orders"
# The same as integrations.adapters.sheets.HEADER (a test keeps them equal).
DEFAULT_HEADER = [
    "Order ID",
    "Created",
    "Customer",
    "Items",
    "Total",
    "Currency",
    "Status",
    "Payment ID",
    "Version",
]
DEFAULT_ROWS = 1000
DEFAULT_COLUMNS = 26
TOKEN_LIFETIME_SECONDS = 3600
WRITE_KINDS = ("append", "update", "batch_update", "sheet_batch_update", "clear")

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An answer in Google's error format: {"error": {"code", "message", "status"}}."""

    def __init__(self, code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "status": _GOOGLE_STATUS.get(self.code, "UNKNOWN"),
            }
        }


# --- A1 notation ---------------------------------------------------------------------------------

_CELL = re.compile(r"^(?P<col>[A-Za-z]*)(?P<row>\d*)$")


def column_letter(index: int) -> str:
    """1 → "A", 27 → "AA"."""
    letters = ""
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def column_index(letters: str) -> int:
    """ "A" → 1, "AA" → 27."""
    index = 0
    for char in letters.upper():
        index = index * 26 + (ord(char) - ord("A") + 1)
    return index


def quote_sheet(title: str) -> str:
    """A sheet title as it appears in a range: bare when simple, quoted otherwise."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", title):
        return title
    return "'" + title.replace("'", "''") + "'"


@dataclass(frozen=True)
class A1Range:
    """A parsed range: 1-based inclusive bounds; None means open (to the sheet's edge)."""

    sheet: str | None
    start_row: int
    start_col: int
    end_row: int | None
    end_col: int | None

    @classmethod
    def parse(cls, text: str) -> A1Range:
        text = text.strip()
        sheet: str | None = None
        cells = text
        if text.startswith("'"):
            end = 1
            while True:
                end = text.find("'", end)
                if end == -1:
                    raise ApiError(400, f"Unable to parse range: {text}")
                if text[end + 1 : end + 2] == "'":
                    end += 2
                    continue
                break
            sheet = text[1:end].replace("''", "'")
            rest = text[end + 1 :]
            if rest and not rest.startswith("!"):
                raise ApiError(400, f"Unable to parse range: {text}")
            cells = rest[1:]
        elif "!" in text:
            sheet, cells = text.split("!", 1)
        elif not _looks_like_cells(text):
            sheet, cells = text, ""
        if not cells:
            return cls(sheet, 1, 1, None, None)
        first, _, last = cells.partition(":")
        start = _CELL.match(first)
        end = _CELL.match(last) if last else start
        if start is None or end is None or not (first.strip()):
            raise ApiError(400, f"Unable to parse range: {text}")
        start_col = column_index(start["col"]) if start["col"] else 1
        start_row = int(start["row"]) if start["row"] else 1
        end_col = column_index(end["col"]) if end["col"] else None
        end_row = int(end["row"]) if end["row"] else None
        if not last and not start["row"]:
            end_row = None  # "A" alone: the whole column
        if (end_row is not None and end_row < start_row) or (end_col is not None and end_col < start_col):
            raise ApiError(400, f"Unable to parse range: {text}")
        return cls(sheet, start_row, start_col, end_row, end_col)


def _looks_like_cells(text: str) -> bool:
    first, _, last = text.partition(":")
    return all(
        part and (match := _CELL.match(part)) is not None and len(match["col"]) <= 3
        for part in ([first, last] if last else [first])
    ) and bool(re.search(r"\d", text) or ":" in text)


def a1(sheet: str, start_row: int, start_col: int, end_row: int, end_col: int) -> str:
    start = f"{column_letter(start_col)}{start_row}"
    end = f"{column_letter(end_col)}{end_row}"
    return f"{quote_sheet(sheet)}!{start}" if start == end else f"{quote_sheet(sheet)}!{start}:{end}"


def cell_text(value: Any) -> str:
    """A cell value as the real API answers it (formatted): True → "TRUE", 29.0 → "29"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return f"{value:.15g}"
    return str(value)


# --- State ---------------------------------------------------------------------------------------


@dataclass
class Sheet:
    sheet_id: int
    title: str
    index: int
    row_count: int = DEFAULT_ROWS
    column_count: int = DEFAULT_COLUMNS
    rows: list[list[str]] = field(default_factory=list)

    def properties(self) -> dict[str, Any]:
        return {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": self.index,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
        }

    def used_rows(self) -> int:
        """The last row holding any value (0 for an empty sheet)."""
        for number in range(len(self.rows), 0, -1):
            if any(self.rows[number - 1]):
                return number
        return 0

    def used_columns(self) -> int:
        return max((len(row) for row in self.rows), default=0)

    def write(self, start_row: int, start_col: int, values: list[list[str]]) -> tuple[int, int]:
        """Write `values` with its top-left at (start_row, start_col); answers (rows, columns) written."""
        width = max((len(row) for row in values), default=0)
        if not values or width == 0:
            return 0, 0
        last_row = start_row + len(values) - 1
        last_col = start_col + width - 1
        self.row_count = max(self.row_count, last_row)
        self.column_count = max(self.column_count, last_col)
        while len(self.rows) < last_row:
            self.rows.append([])
        for offset, row in enumerate(values):
            target = self.rows[start_row - 1 + offset]
            if len(target) < last_col:
                target.extend([""] * (last_col - len(target)))
            for col_offset, value in enumerate(row):
                target[start_col - 1 + col_offset] = value
        self._trim()
        return len(values), width

    def clear(self, bounds: A1Range) -> None:
        end_row = bounds.end_row or len(self.rows)
        for number in range(bounds.start_row, min(end_row, len(self.rows)) + 1):
            row = self.rows[number - 1]
            end_col = bounds.end_col or len(row)
            for col in range(bounds.start_col, min(end_col, len(row)) + 1):
                row[col - 1] = ""
        self._trim()

    def read(self, bounds: A1Range) -> list[list[str]]:
        """Values inside `bounds`, trailing empty rows and cells dropped (as the API does)."""
        end_row = min(bounds.end_row or self.row_count, len(self.rows))
        out: list[list[str]] = []
        for number in range(bounds.start_row, end_row + 1):
            row = self.rows[number - 1]
            end_col = bounds.end_col or len(row)
            cells = row[bounds.start_col - 1 : end_col]
            while cells and cells[-1] == "":
                cells.pop()
            out.append(cells)
        while out and not out[-1]:
            out.pop()
        return out

    def _trim(self) -> None:
        for row in self.rows:
            while row and row[-1] == "":
                row.pop()


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    title: str
    sheets: list[Sheet] = field(default_factory=list)
    next_sheet_id: int = 0

    def add_sheet(self, title: str, *, rows: int = DEFAULT_ROWS, columns: int = DEFAULT_COLUMNS) -> Sheet:
        if any(sheet.title == title for sheet in self.sheets):
            raise ApiError(400, f'A sheet with the name "{title}" already exists. Please enter another name.')
        sheet = Sheet(
            sheet_id=self.next_sheet_id,
            title=title,
            index=len(self.sheets),
            row_count=rows,
            column_count=columns,
        )
        self.next_sheet_id += 1
        self.sheets.append(sheet)
        return sheet

    def sheet(self, title: str | None) -> Sheet:
        if title is None:
            if not self.sheets:
                raise ApiError(400, "The spreadsheet has no sheets.")
            return self.sheets[0]
        for sheet in self.sheets:
            if sheet.title == title:
                return sheet
        raise ApiError(400, f"Unable to parse range: {quote_sheet(title)}")

    def metadata(self) -> dict[str, Any]:
        return {
            "spreadsheetId": self.spreadsheet_id,
            "properties": {"title": self.title, "locale": "en_US", "timeZone": "Etc/GMT"},
            "sheets": [{"properties": sheet.properties()} for sheet in self.sheets],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{self.spreadsheet_id}/edit",
        }


@dataclass
class Faults:
    fail_next: int = 0
    status: int = 503
    latency_ms: int = 0
    burst_429: int = 0
    retry_after: int | None = 30
    write_quota_per_minute: int = 0
    # Which kinds of call fail_next and burst_429 apply to (e.g. ["append"]); None: every call.
    kinds: list[str] | None = None

    def applies_to(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    def as_dict(self) -> dict[str, Any]:
        return {
            "fail_next": self.fail_next,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "burst_429": self.burst_429,
            "retry_after": self.retry_after,
            "write_quota_per_minute": self.write_quota_per_minute,
            "kinds": self.kinds,
        }


class SheetsState:
    """Everything the sandbox keeps; every method takes the lock."""

    def __init__(
        self,
        *,
        worksheet: str = DEFAULT_WORKSHEET,
        header: Iterable[str] | None = None,
        auto_create: bool = True,
    ) -> None:
        self.worksheet = worksheet
        self.header = list(DEFAULT_HEADER if header is None else header)
        self.auto_create = auto_create
        self.lock = threading.RLock()
        self.tokens: set[str] = set()
        self.spreadsheets: dict[str, Spreadsheet] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        self.write_times: list[float] = []
        self.calls: list[dict[str, Any]] = []
        self.faults = Faults()

    # --- admin ---

    def reset(self) -> None:
        with self.lock:
            self.spreadsheets.clear()
            self.counts.clear()
            self.write_times.clear()
            self.calls.clear()
            self.faults = Faults()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        with self.lock:
            for name, value in changes.items():
                if not hasattr(self.faults, name):
                    raise ValueError(f"unknown fault {name!r}")
                if name == "kinds":
                    self.faults.kinds = None if value is None else [str(kind) for kind in value]
                elif value is None and name == "retry_after":
                    self.faults.retry_after = None
                else:
                    setattr(self.faults, name, int(value))
            return self.faults.as_dict()

    def create(
        self, spreadsheet_id: str | None = None, *, title: str | None = None, sheets: list[str] | None = None
    ) -> Spreadsheet:
        with self.lock:
            spreadsheet_id = spreadsheet_id or secrets.token_urlsafe(30)
            if spreadsheet_id in self.spreadsheets:
                return self.spreadsheets[spreadsheet_id]
            spreadsheet = Spreadsheet(
                spreadsheet_id=spreadsheet_id, title=title or f"Sandbox {spreadsheet_id}"
            )
            for name in sheets if sheets is not None else [self.worksheet]:
                sheet = spreadsheet.add_sheet(name)
                if name == self.worksheet and self.header:
                    sheet.write(1, 1, [list(self.header)])
            self.spreadsheets[spreadsheet_id] = spreadsheet
            return spreadsheet

    def get(self, spreadsheet_id: str) -> Spreadsheet:
        with self.lock:
            spreadsheet = self.spreadsheets.get(spreadsheet_id)
            if spreadsheet is None:
                if not self.auto_create:
                    raise ApiError(404, "Requested entity was not found.")
                spreadsheet = self.create(spreadsheet_id)
            return spreadsheet

    def values(self, spreadsheet_id: str, sheet: str | None = None) -> list[list[str]]:
        """The stored rows of one tab (the configured worksheet by default), header included."""
        with self.lock:
            spreadsheet = self.spreadsheets.get(spreadsheet_id)
            if spreadsheet is None:
                return []
            return [
                list(row) for row in spreadsheet.sheet(sheet or self.worksheet).read(A1Range.parse("A1:ZZZ"))
            ]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            stats: dict[str, Any] = {
                kind: self.counts.get(kind, 0)
                for kind in ("read", "metadata", *WRITE_KINDS, "token", "unauthorized", "faults_served")
            }
            stats["total_writes"] = len(self.write_times)
            stats["writes_per_minute_max"] = _max_in_window(self.write_times, 60.0)
            stats["requests"] = sum(self.counts.get(kind, 0) for kind in ("read", "metadata", *WRITE_KINDS))
            return stats

    # --- auth ---

    def issue_token(self, form: dict[str, list[str]]) -> dict[str, Any]:
        grant = (form.get("grant_type") or [""])[0]
        assertion = (form.get("assertion") or [""])[0]
        if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise _OAuthError("unsupported_grant_type", f"Unsupported grant type: {grant!r}")
        claims = _decode_assertion(assertion)
        token = "ya29.sandbox-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens.add(token)
            self.counts["token"] += 1
        return {
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "token_type": "Bearer",
            "scope": claims.get("scope", ""),
        }

    def check_token(self, header: str | None) -> None:
        scheme, _, token = (header or "").partition(" ")
        with self.lock:
            if scheme.lower() != "bearer" or token not in self.tokens:
                self.counts["unauthorized"] += 1
                raise ApiError(
                    401,
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                    "login cookie or other valid authentication credential.",
                )

    # --- faults and counting ---

    def admit(self, kind: str) -> float:
        """Apply injected faults to one API call of `kind`; answers the latency to wait first."""
        with self.lock:
            faults = self.faults
            if faults.burst_429 > 0 and faults.applies_to(kind):
                faults.burst_429 -= 1
                self.counts["faults_served"] += 1
                raise self._too_many("Quota exceeded (sandbox burst_429).")
            if faults.fail_next > 0 and faults.applies_to(kind):
                faults.fail_next -= 1
                self.counts["faults_served"] += 1
                raise ApiError(faults.status, f"Injected failure ({faults.status}) from the Sheets sandbox.")
            if kind in WRITE_KINDS and faults.write_quota_per_minute > 0:
                now = time.time()  # the wall clock, like Google's per-minute quota (and tests can stop it)
                recent = sum(1 for at in self.write_times if at > now - 60.0)
                if recent >= faults.write_quota_per_minute:
                    self.counts["faults_served"] += 1
                    raise self._too_many(
                        "Quota exceeded for quota metric 'Write requests' and limit "
                        "'Write requests per minute per user' of service 'sheets.googleapis.com'."
                    )
            return faults.latency_ms / 1000.0

    def _too_many(self, message: str) -> ApiError:
        headers = {} if self.faults.retry_after is None else {"Retry-After": str(self.faults.retry_after)}
        return ApiError(429, message, headers=headers)

    def count(
        self, kind: str, method: str, path: str, query: dict[str, list[str]], *, rows: int | None = None
    ) -> None:
        """Count one answered call; `rows` is how many rows an append wrote (kept on its record)."""
        with self.lock:
            self.counts[kind] += 1
            if kind in WRITE_KINDS:
                self.write_times.append(time.time())
            call: dict[str, Any] = {
                "kind": kind,
                "method": method,
                "path": unquote(path),
                "query": {k: v[-1] for k, v in query.items()},
            }
            if rows is not None:
                call["rows"] = rows
            self.calls.append(call)


def _max_in_window(times: list[float], window: float) -> int:
    best = 0
    start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class _OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _b64_json(part: str) -> dict[str, Any]:
    padded = part + "=" * (-len(part) % 4)
    decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")
    return decoded


def _decode_assertion(assertion: str) -> dict[str, Any]:
    """The claims of a well-formed JWT (signature not checked: any key is welcome here)."""
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        raise _OAuthError("invalid_grant", "Invalid JWT: expected three base64url parts.")
    try:
        header = _b64_json(parts[0])
        claims = _b64_json(parts[1])
    except (ValueError, binascii.Error) as exc:
        raise _OAuthError("invalid_grant", f"Invalid JWT: {exc}") from exc
    if header.get("alg") not in {"RS256", "ES256"}:
        raise _OAuthError("invalid_grant", "Invalid JWT: unsupported signing algorithm.")
    if not claims.get("iss") or not claims.get("aud"):
        raise _OAuthError("invalid_grant", "Invalid JWT: iss and aud are required.")
    return claims


# --- The Sheets API ------------------------------------------------------------------------------

_SPREADSHEET = re.compile(r"^/v4/spreadsheets/(?P<id>[^/:]+)(?P<rest>.*)$")


class SheetsApi:
    """Routes one API request to the state; answers (status, JSON body)."""

    def __init__(self, state: SheetsState) -> None:
        self.state = state

    def classify(self, method: str, rest: str) -> str:
        if rest in {"", "/"}:
            return "metadata" if method == "GET" else "unknown"
        if rest == ":batchUpdate":
            return "sheet_batch_update"
        if rest == "/values:batchGet":
            return "read"
        if rest == "/values:batchUpdate":
            return "batch_update"
        if rest.startswith("/values/"):
            if rest.endswith(":append"):
                return "append"
            if rest.endswith(":clear"):
                return "clear"
            return {"GET": "read", "PUT": "update"}.get(method, "unknown")
        return "unknown"

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        match = _SPREADSHEET.match(path)
        if match is None:
            raise ApiError(404, f"Method not found: {method} {path}")
        spreadsheet_id = unquote(match["id"])
        rest = match["rest"]
        kind = self.classify(method, rest)
        if kind == "unknown":
            raise ApiError(404, f"Method not found in the sandbox: {method} {path}")
        latency = self.state.admit(kind)
        if latency:
            threading.Event().wait(latency)
        with self.state.lock:
            spreadsheet = self.state.get(spreadsheet_id)
            answer = self._dispatch(kind, spreadsheet, rest, query, body)
            rows = answer["updates"]["updatedRows"] if kind == "append" else None
            self.state.count(kind, method, path, query, rows=rows)
            return 200, answer

    def _dispatch(
        self, kind: str, spreadsheet: Spreadsheet, rest: str, query: dict[str, list[str]], body: Any
    ) -> Any:
        if kind == "metadata":
            return spreadsheet.metadata()
        if kind == "sheet_batch_update":
            return self._sheet_batch_update(spreadsheet, body)
        if kind == "batch_update":
            return self._values_batch_update(spreadsheet, body)
        if kind == "read" and rest == "/values:batchGet":
            ranges = query.get("ranges", [])
            if not ranges:
                raise ApiError(400, "ranges is required.")
            return {
                "spreadsheetId": spreadsheet.spreadsheet_id,
                "valueRanges": [self._get(spreadsheet, text, query) for text in ranges],
            }
        range_text = unquote(rest[len("/values/") :])
        if kind == "append":
            return self._append(spreadsheet, range_text.removesuffix(":append"), query, body)
        if kind == "clear":
            bounds = A1Range.parse(range_text.removesuffix(":clear"))
            sheet = spreadsheet.sheet(bounds.sheet)
            sheet.clear(bounds)
            return {"spreadsheetId": spreadsheet.spreadsheet_id, "clearedRange": range_text}
        if kind == "read":
            return self._get(spreadsheet, range_text, query)
        return self._update(spreadsheet, range_text, query, body)

    # --- values ---

    def _get(self, spreadsheet: Spreadsheet, range_text: str, query: dict[str, list[str]]) -> dict[str, Any]:
        bounds = A1Range.parse(range_text)
        sheet = spreadsheet.sheet(bounds.sheet)
        rows = sheet.read(bounds)
        end_row = bounds.end_row or sheet.row_count
        end_col = bounds.end_col or sheet.column_count
        answer: dict[str, Any] = {
            "range": a1(sheet.title, bounds.start_row, bounds.start_col, end_row, end_col),
            "majorDimension": (query.get("majorDimension") or ["ROWS"])[0],
        }
        if answer["majorDimension"] == "COLUMNS":
            width = max((len(row) for row in rows), default=0)
            rows = [[row[col] if col < len(row) else "" for row in rows] for col in range(width)]
            for column in rows:
                while column and column[-1] == "":
                    column.pop()
        if rows:
            answer["values"] = rows
        return answer

    @staticmethod
    def _input_values(
        query: dict[str, list[str]], body: Any, *, option: str | None = None
    ) -> list[list[str]]:
        option = option or (query.get("valueInputOption") or [""])[0]
        if option not in {"RAW", "USER_ENTERED"}:
            raise ApiError(400, "'valueInputOption' is required but not specified")
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received.")
        values = body.get("values", [])
        if not isinstance(values, list) or not all(isinstance(row, list) for row in values):
            raise ApiError(400, "Invalid values: expected a list of rows.")
        rows = [[cell_text(value) for value in row] for row in values]
        if (body.get("majorDimension") or "ROWS") == "COLUMNS":
            width = max((len(column) for column in rows), default=0)
            rows = [[column[r] if r < len(column) else "" for column in rows] for r in range(width)]
        return rows

    def _update(
        self,
        spreadsheet: Spreadsheet,
        range_text: str,
        query: dict[str, list[str]],
        body: Any,
        option: str | None = None,
    ) -> dict[str, Any]:
        values = self._input_values(query, body, option=option)
        bounds = A1Range.parse(range_text)
        sheet = spreadsheet.sheet(bounds.sheet)
        self._check_fits(bounds, values)
        rows, columns = sheet.write(bounds.start_row, bounds.start_col, values)
        answer: dict[str, Any] = {
            "spreadsheetId": spreadsheet.spreadsheet_id,
            "updatedRange": a1(
                sheet.title,
                bounds.start_row,
                bounds.start_col,
                bounds.start_row + max(rows, 1) - 1,
                bounds.start_col + max(columns, 1) - 1,
            ),
            "updatedRows": rows,
            "updatedColumns": columns,
            "updatedCells": sum(len(row) for row in values),
        }
        return answer

    @staticmethod
    def _check_fits(bounds: A1Range, values: list[list[str]]) -> None:
        if bounds.end_row is not None and bounds.start_row + len(values) - 1 > bounds.end_row:
            raise ApiError(
                400, "Requested writing within range, but tried writing to more rows than the range."
            )
        width = max((len(row) for row in values), default=0)
        if bounds.end_col is not None and bounds.start_col + width - 1 > bounds.end_col:
            raise ApiError(
                400, "Requested writing within range, but tried writing to more columns than the range."
            )

    def _values_batch_update(self, spreadsheet: Spreadsheet, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received.")
        option = body.get("valueInputOption") or ""
        data = body.get("data") or []
        # Validate everything first: a batch update applies all of its ranges or none.
        for item in data:
            if not isinstance(item, dict) or "range" not in item:
                raise ApiError(400, "Each data item needs a range and values.")
            bounds = A1Range.parse(item["range"])
            spreadsheet.sheet(bounds.sheet)
            self._check_fits(bounds, self._input_values({}, item, option=option))
        responses = [self._update(spreadsheet, item["range"], {}, item, option=option) for item in data]
        return {
            "spreadsheetId": spreadsheet.spreadsheet_id,
            "totalUpdatedRows": sum(r["updatedRows"] for r in responses),
            "totalUpdatedColumns": max((r["updatedColumns"] for r in responses), default=0),
            "totalUpdatedCells": sum(r["updatedCells"] for r in responses),
            "totalUpdatedSheets": len({r["updatedRange"].split("!")[0] for r in responses}),
            "responses": responses,
        }

    def _append(
        self, spreadsheet: Spreadsheet, range_text: str, query: dict[str, list[str]], body: Any
    ) -> dict[str, Any]:
        values = self._input_values(query, body)
        insert = (query.get("insertDataOption") or ["OVERWRITE"])[0]
        if insert not in {"OVERWRITE", "INSERT_ROWS"}:
            raise ApiError(400, f"Invalid value at 'insert_data_option' ({insert})")
        bounds = A1Range.parse(range_text)
        sheet = spreadsheet.sheet(bounds.sheet)
        # The table is every row used so far; new rows go right after its last row.
        used = sheet.used_rows()
        start_row = max(used + 1, bounds.start_row)
        table_range = a1(sheet.title, 1, 1, used, max(sheet.used_columns(), 1)) if used else None
        rows, columns = sheet.write(start_row, bounds.start_col, values)
        answer: dict[str, Any] = {
            "spreadsheetId": spreadsheet.spreadsheet_id,
            "updates": {
                "spreadsheetId": spreadsheet.spreadsheet_id,
                "updatedRange": a1(
                    sheet.title,
                    start_row,
                    bounds.start_col,
                    start_row + max(rows, 1) - 1,
                    bounds.start_col + max(columns, 1) - 1,
                ),
                "updatedRows": rows,
                "updatedColumns": columns,
                "updatedCells": sum(len(row) for row in values),
            },
        }
        if table_range:
            answer["tableRange"] = table_range
        return answer

    # --- structure ---

    def _sheet_batch_update(self, spreadsheet: Spreadsheet, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise ApiError(400, "Invalid requests: expected a list.")
        replies: list[dict[str, Any]] = []
        for request in body["requests"]:
            if not isinstance(request, dict) or len(request) != 1:
                raise ApiError(400, "Each request must hold exactly one kind.")
            ((name, params),) = request.items()
            if name == "addSheet":
                properties = params.get("properties", {})
                grid = properties.get("gridProperties", {})
                sheet = spreadsheet.add_sheet(
                    properties.get("title") or f"Sheet{spreadsheet.next_sheet_id + 1}",
                    rows=int(grid.get("rowCount", DEFAULT_ROWS)),
                    columns=int(grid.get("columnCount", DEFAULT_COLUMNS)),
                )
                replies.append({"addSheet": {"properties": sheet.properties()}})
            elif name == "deleteSheet":
                sheet_id = params.get("sheetId")
                spreadsheet.sheets = [s for s in spreadsheet.sheets if s.sheet_id != sheet_id]
                for index, sheet in enumerate(spreadsheet.sheets):
                    sheet.index = index
                replies.append({})
            elif name == "updateSheetProperties":
                properties = params.get("properties", {})
                target = next(
                    (s for s in spreadsheet.sheets if s.sheet_id == properties.get("sheetId")), None
                )
                if target is None:
                    raise ApiError(400, f"No grid with id: {properties.get('sheetId')}")
                if "title" in properties:
                    target.title = properties["title"]
                grid = properties.get("gridProperties", {})
                target.row_count = int(grid.get("rowCount", target.row_count))
                target.column_count = int(grid.get("columnCount", target.column_count))
                replies.append({})
            else:
                raise ApiError(400, f"The sandbox does not support the {name!r} request.")
        return {"spreadsheetId": spreadsheet.spreadsheet_id, "replies": replies}


# --- HTTP ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm and the client's
    # delayed ACK hold every answer back by about 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # --- plumbing ---

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        raw = self._read_body()
        state = self.server.state
        try:
            if path == "/token" and method == "POST":
                self._token(raw)
            elif path == "/" and method == "GET":
                self._send(200, _inbox_html(state).encode(), "text/html; charset=utf-8")
            elif path == "/favicon.ico" and method == "GET":
                self._send(200, favicon.favicon_ico(favicon.SHEETS), favicon.CONTENT_TYPE)
            elif path.startswith("/_sandbox/"):
                self._admin(method, path, raw)
            elif path.startswith("/v4/spreadsheets/"):
                state.check_token(self.headers.get("Authorization"))
                body = self._json(raw) if raw else None
                status, answer = self.server.api.handle(method, path, query, body)
                self._send_json(status, answer)
            else:
                raise ApiError(404, f"Not found: {method} {path}")
        except ApiError as exc:
            self._send_json(exc.code, exc.body(), headers=exc.headers)
        except _OAuthError as exc:
            self._send_json(400, {"error": exc.error, "error_description": exc.description})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    @staticmethod
    def _json(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc

    def _token(self, raw: bytes) -> None:
        form = parse_qs(raw.decode("utf-8", "replace"))
        self._send_json(200, self.server.state.issue_token(form), headers={"Cache-Control": "no-store"})

    def _admin(self, method: str, path: str, raw: bytes) -> None:
        state = self.server.state
        body = self._json(raw) if raw else {}
        if path == "/_sandbox/stats" and method == "GET":
            self._send_json(200, state.stats())
        elif path == "/_sandbox/reset" and method == "POST":
            state.reset()
            self._send_json(200, {"reset": True})
        elif path == "/_sandbox/faults" and method == "POST":
            try:
                self._send_json(200, state.set_faults(**body))
            except (TypeError, ValueError) as exc:
                raise ApiError(400, str(exc)) from exc
        elif path == "/_sandbox/spreadsheets" and method == "POST":
            spreadsheet = state.create(
                body.get("spreadsheetId"), title=body.get("title"), sheets=body.get("sheets")
            )
            self._send_json(200, spreadsheet.metadata())
        elif path.startswith("/_sandbox/spreadsheets/") and method == "GET":
            spreadsheet_id = unquote(path.removeprefix("/_sandbox/spreadsheets/"))
            with state.lock:
                spreadsheet = state.spreadsheets.get(spreadsheet_id)
                if spreadsheet is None:
                    raise ApiError(404, f"No spreadsheet {spreadsheet_id!r} in the sandbox.")
                sheets = {
                    sheet.title: state.values(spreadsheet_id, sheet.title) for sheet in spreadsheet.sheets
                }
            self._send_json(
                200, {"spreadsheetId": spreadsheet_id, "title": spreadsheet.title, "sheets": sheets}
            )
        else:
            raise ApiError(404, f"Not found: {method} {path}")

    def _send_json(self, status: int, body: Any, *, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json; charset=UTF-8", headers=headers)

    def _send(
        self, status: int, payload: bytes, content_type: str, *, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _inbox_html(state: SheetsState) -> str:
    stats = state.stats()
    with state.lock:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>Sheets sandbox</title>",
            "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse;"
            "margin-bottom:2rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;font-size:.85rem}"
            "th{background:#f3f3f3}</style></head><body>",
            "<h1>Google Sheets sandbox</h1>",
            "<p>" + " · ".join(f"{html.escape(k)}: {v}" for k, v in stats.items()) + "</p>",
        ]
        if not state.spreadsheets:
            parts.append("<p>No spreadsheet has been written yet.</p>")
        for spreadsheet in state.spreadsheets.values():
            parts.append(
                f"<h2>{html.escape(spreadsheet.title)} <small>({html.escape(spreadsheet.spreadsheet_id)})</small></h2>"
            )
            for sheet in spreadsheet.sheets:
                rows = sheet.read(A1Range.parse("A1:ZZZ"))
                parts.append(
                    f"<h3>{html.escape(sheet.title)} — {max(len(rows) - 1, 0)} data rows</h3><table>"
                )
                for number, row in enumerate(rows, start=1):
                    tag = "th" if number == 1 else "td"
                    cells = "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in row)
                    parts.append(f"<tr><th>{number}</th>{cells}</tr>")
                parts.append("</table>")
        parts.append("</body></html>")
    return "".join(parts)


# --- A throwaway service account key ---------------------------------------------------------


@functools.cache
def _throwaway_private_key() -> str:
    """An RSA key made at run time, once per process (never stored, never a real Google key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def throwaway_service_account(api_base: str) -> dict[str, Any]:
    """A service account key whose token_uri is the token endpoint of the stand-in at `api_base`
    (the sandbox app puts one in GOOGLE_SERVICE_ACCOUNT_JSON when that is empty)."""
    return {
        "type": "service_account",
        "project_id": "cis-sandbox",
        "private_key_id": "sandbox",
        "private_key": _throwaway_private_key(),
        "client_email": "orders-sync@cis-sandbox.iam.gserviceaccount.com",
        "client_id": "100000000000000000000",
        "token_uri": f"{api_base.rstrip('/')}/token",
    }


# --- The server ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SheetsState) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.api = SheetsApi(state)


class SheetsSandbox:
    """The sandbox on 127.0.0.1:`port` (0: any free port), served from a daemon thread."""

    def __init__(
        self,
        port: int = 0,
        *,
        worksheet: str = DEFAULT_WORKSHEET,
        header: Iterable[str] | None = None,
        auto_create: bool = True,
    ) -> None:
        self.port = port
        self.state = SheetsState(worksheet=worksheet, header=header, auto_create=auto_create)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def bind(self) -> str:
        """Open the listening socket (port 0: any free one); answers the base URL."""
        self._bound()
        return self.url

    def _bound(self) -> _Server:
        if self._server is None:
            self._server = _Server(("127.0.0.1", self.port), self.state)
            self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self._server

    def start(self) -> str:
        """Serve from a daemon thread; answers the base URL once it accepts connections."""
        server = self._bound()
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="sheets-sandbox", daemon=True
        )
        self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        """Serve from the calling thread until `stop()` (from another thread or a signal handler)."""
        self._bound().serve_forever()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # --- accessors for tests ---

    def reset(self) -> None:
        self.state.reset()

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return self.state.set_faults(**faults)

    def create_spreadsheet(
        self, spreadsheet_id: str | None = None, *, sheets: list[str] | None = None
    ) -> str:
        return self.state.create(spreadsheet_id, sheets=sheets).spreadsheet_id

    def values(self, spreadsheet_id: str, sheet: str | None = None) -> list[list[str]]:
        return self.state.values(spreadsheet_id, sheet)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    @property
    def calls(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.calls)
