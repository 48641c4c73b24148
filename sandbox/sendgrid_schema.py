"""SendGrid's published JSON schema for a v3 Mail Send request body, for the stand-in and tests.

`schemas/sendgrid_mail_send.json` is the request schema of `POST /v3/mail/send` from
github.com/sendgrid/sendgrid-oai (commit bef1536aeed2eb7b1ad4fde110a8ec65c583c4c5,
`spec/paths/mail_send/mail_send.json`, its `$ref`s into `spec/components/schemas.json` inlined;
the file's `$comment` says exactly what was done). `published_schema()` is that text as published.

`request_schema()` is what the stand-in validates with: the published schema with the few
corrections below, where the published text contradicts SendGrid's own documentation and
libraries (the stand-in must not refuse what SendGrid accepts):
- top-level `custom_args` is published as `"type": "string"`, but it is an object of strings
  (the personalization-level one is; SendGrid's libraries send an object; the docs say
  "Key/value pairs must be strings");
- `subject` and `content` are published as required, but SendGrid accepts a request without
  them when a `template_id` supplies them, or without `subject` when every personalization has
  one (its documented errors say so); the stand-in checks those conditions itself.

Validation uses `jsonschema` (a requirement of the project) when it can be imported; without it
`schema_errors` finds nothing and the stand-in's own rules still apply.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "sendgrid_mail_send.json"
SOURCE_REPO = "sendgrid/sendgrid-oai"
SOURCE_COMMIT = "bef1536aeed2eb7b1ad4fde110a8ec65c583c4c5"


@cache
def _published() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def published_schema() -> dict[str, Any]:
    """The request schema as SendGrid publishes it (a copy)."""
    return copy.deepcopy(_published())


@cache
def _corrected() -> dict[str, Any]:
    schema = copy.deepcopy(_published())
    schema["properties"]["custom_args"] = {
        "type": "object",
        "description": schema["properties"]["custom_args"].get("description", ""),
        "additionalProperties": {"type": "string"},
    }
    schema["required"] = [name for name in schema["required"] if name not in {"subject", "content"}]
    return schema


def request_schema() -> dict[str, Any]:
    """The schema the stand-in validates with (the published one, corrected as the module says)."""
    return copy.deepcopy(_corrected())


@cache
def _validator(published: bool) -> Any:
    try:
        from jsonschema import Draft4Validator, FormatChecker
    except ImportError:  # the stand-in runs without it; its own rules still apply
        return None
    schema = _published() if published else _corrected()
    # OpenAPI 3.0 schema objects are a JSON Schema draft 4 dialect.
    return Draft4Validator(schema, format_checker=FormatChecker())


def _field(path: Any) -> str | None:
    parts = [str(part) for part in path]
    return ".".join(parts) or None


def _message(error: Any) -> str:
    """A short message (jsonschema's own repeats the whole value, which can be megabytes)."""
    rule, limit = error.validator, error.validator_value
    short = {
        "maxItems": f"must have at most {limit} items",
        "minItems": f"must have at least {limit} items",
        "maxProperties": f"must have at most {limit} members",
        "minLength": f"must be at least {limit} characters long",
        "maxLength": f"must be at most {limit} characters long",
        "type": f"must be of type {limit}",
        "format": f"is not a valid {limit}",
        "enum": f"must be one of {limit}",
        "uniqueItems": "must not repeat an item",
    }.get(rule)
    return short or error.message[:200]


def schema_errors(body: Any, *, published: bool = False) -> list[dict[str, Any]]:
    """Where `body` breaks the schema: [{"field": "personalizations.0.to", "message": ...}], in
    document order; empty when it fits (or when jsonschema is not installed). `published=True`
    checks against the schema exactly as published, without the corrections."""
    validator = _validator(published)
    if validator is None:
        return []
    errors = []
    for error in sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path]):
        field = _field(error.absolute_path)
        message = _message(error)
        if error.validator == "required" and isinstance(error.instance, dict):
            # One error per missing member, at the object that misses it: name the member.
            missing = next(
                (n for n in error.validator_value if n not in error.instance and repr(n) in error.message),
                None,
            )
            if missing is not None:
                field = f"{field}.{missing}" if field else missing
                message = "is required"
        errors.append({"field": field, "message": message})
    return errors
