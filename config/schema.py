"""drf-spectacular postprocessing: the OpenAPI schema promises every answer the API can give.

The views document their own successes and domain errors; the answers that come from the
machinery around every view are added here, in the one error shape (`Error`), so a client (and
schemathesis's status-code check) knows them:

- 400 where the operation takes input (a body, query or path parameters): invalid input, a body
  that is not JSON (`parse_error`);
- 401 and 403 where credentials are read: a missing, invalid or expired credential, a missing
  scope or role, a session request without its CSRF token;
- 404 where a path parameter names something;
- 413 and 415 where there is a body: larger than DATA_UPLOAD_MAX_MEMORY_SIZE, not JSON;
- 429 everywhere: the rate limits.

And what drf-spectacular leaves out although the API enforces it:

- `GET /api/monitoring/errors` is the cursor page it returns, not a bare array;
- an optional query parameter may be sent empty (`?state=`): DRF reads an empty value of a
  field that is not required as "not given" (`allowEmptyValue`);
- a nested list of a request (`many=True`) has the bounds its serializer enforces
  (`allow_empty=False`, `min_length`, `max_length` -> `minItems`, `maxItems`).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

ERROR_SCHEMA_NAME = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error answer: a stable code, a message for people, and for invalid input the "
    "fields at fault.",
    "properties": {
        "code": {
            "type": "string",
            "description": "Stable machine-readable code, e.g. `invalid`, `parse_error`.",
        },
        "message": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {}, "description": "Only for invalid input."},
    },
    "required": ["code", "message"],
}
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DESCRIPTIONS = {
    "400": "Invalid input, or a body that is not JSON (`parse_error`).",
    "401": "Missing, invalid or expired credentials.",
    "403": "Authenticated, but not allowed (role, scope, or a session request without its CSRF token).",
    "404": "Nothing the caller may see has this id.",
    "409": "Conflicts with the current state.",
    "413": "The request body is larger than the server accepts.",
    "415": "The request body is not `application/json`.",
    "429": "Rate limited: retry after the `Retry-After` header's seconds.",
}
RETRY_AFTER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}
}
# Domain answers an operation gives that its view does not declare yet (the view's own
# extend_schema is the better place; a view that declares the status keeps its own text).
OPERATION_ANSWERS = {
    ("post", "/api/orders"): {
        "409": "An anonymous client already holds the most unpaid items it may (`hold_limit_exceeded`)."
    },
}
# Operations answering a page of results (`next`/`previous` cursors) that their view declares as
# a list: operation id -> the schema of one item.
CURSOR_PAGES = {"monitoring_errors": "ErrorRecord"}


def _error_response(status: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
    }
    if status == "429":
        response["headers"] = RETRY_AFTER
    return response


def _page_of(item: str) -> dict[str, Any]:
    cursor = {"type": "string", "format": "uri", "nullable": True}
    return {
        "type": "object",
        "required": ["next", "previous", "results"],
        "properties": {
            "next": cursor,
            "previous": cursor,
            "results": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
        },
    }


def _answers_for(operation: dict[str, Any], path_parameters: list[dict[str, Any]]) -> list[str]:
    parameters = [*path_parameters, *operation.get("parameters", [])]
    has_body = "requestBody" in operation
    answers = []
    if has_body or parameters:
        answers.append("400")
    if operation.get("security"):
        answers += ["401", "403"]
    if any(parameter.get("in") == "path" for parameter in parameters):
        answers.append("404")
    if has_body:
        answers += ["413", "415"]
    answers.append("429")
    return answers


def _list_bounds(generator: Any, schemas: dict[str, Any]) -> None:
    """minItems/maxItems of each nested list the serializers behind the components enforce."""
    for component in generator.registry._components.values():
        serializer = component.object
        schema = schemas.get(component.name)
        if component.type != "schemas" or schema is None or not hasattr(serializer, "fields"):
            continue
        for name, field in serializer.fields.items():
            prop = schema.get("properties", {}).get(name)
            if not isinstance(field, serializers.ListSerializer) or not prop or prop.get("type") != "array":
                continue
            minimum = max(field.min_length or 0, 0 if field.allow_empty else 1)
            if minimum:
                prop["minItems"] = minimum
            if field.max_length is not None:
                prop["maxItems"] = field.max_length


def _empty_means_absent(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "query" and not parameter.get("required"):
            parameter["allowEmptyValue"] = True


def document_error_answers(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """POSTPROCESSING_HOOKS entry: add the error answers and fix declared pages (see the module)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_SCHEMA_NAME, ERROR_SCHEMA)
    _list_bounds(generator, schemas)
    for path, path_item in result.get("paths", {}).items():
        path_parameters = path_item.get("parameters", [])
        for method in METHODS:
            operation = path_item.get(method)
            if operation is None:
                continue
            _empty_means_absent(operation)
            responses = operation.setdefault("responses", {})
            for status in _answers_for(operation, path_parameters):
                responses.setdefault(status, _error_response(status))
            for status, description in OPERATION_ANSWERS.get((method, path), {}).items():
                responses.setdefault(status, _error_response(status) | {"description": description})
            item = CURSOR_PAGES.get(operation.get("operationId", ""))
            if item is not None and item in schemas and "200" in responses:
                for content in responses["200"].get("content", {}).values():
                    content["schema"] = _page_of(item)
    return result
