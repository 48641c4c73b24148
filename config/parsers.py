"""The one way a JSON request body is read, for the API (DRF's only parser) and for plain views.

Why not DRF's own `JSONParser`: it lets `RecursionError` through (a body of 100,000 `[` answered
500, and enough of them page on-call), decodes with whatever charset the client claims, and reads
a body of any size (DRF reads the request stream itself, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE
never applies). Here a body is refused before it is decoded when it is larger than
DATA_UPLOAD_MAX_MEMORY_SIZE (413), and is otherwise UTF-8 (RFC 8259), strict JSON (no NaN or
Infinity) and at most JSON_MAX_DEPTH arrays and objects deep (400 `parse_error`).
"""

from __future__ import annotations

import json
from typing import IO, Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

# Deeper than any body our API takes (an order is three levels), far below Python's recursion
# limit, so neither the decoder nor a serializer walking the result can run out of stack.
JSON_MAX_DEPTH = 64


class JsonBodyError(ValueError):
    """The body is not JSON this server reads; the message says why, for the client."""


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is too large."


def body_limit() -> int | None:
    """Django's own limit on a request body held in memory (None: no limit)."""
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def too_large_message(limit: int) -> str:
    return f"The request body is larger than {limit} bytes."


def _refuse_constant(name: str) -> Any:
    raise JsonBodyError(f"{name} is not a JSON value.")


def _depth_within(value: Any, limit: int) -> bool:
    """Whether no array or object in `value` is nested deeper than `limit` (no recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def parse_json(raw: bytes | str, *, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """The JSON value in `raw`; `JsonBodyError` (a ValueError) when it is not one we accept."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonBodyError(f"The body is not valid UTF-8 (byte {exc.start}).") from exc
    else:
        text = raw
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise JsonBodyError(f"The JSON is nested deeper than {max_depth} levels.") from exc
    except json.JSONDecodeError as exc:
        raise JsonBodyError(
            f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from exc
    if not _depth_within(value, max_depth):
        raise JsonBodyError(f"The JSON is nested deeper than {max_depth} levels.")
    return value


class JsonParser(BaseParser):
    """DRF's parser for `application/json`: `parse_json` on a body no larger than the limit."""

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self, stream: IO[bytes] | None, media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        if stream is None:
            return None
        limit = body_limit()
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise BodyTooLarge(too_large_message(limit))
        try:
            return parse_json(raw)
        except JsonBodyError as exc:
            raise ParseError(str(exc)) from exc
