"""The error envelope as OpenAPI: plain dictionaries, importable from the settings (no Django)."""

from __future__ import annotations

from typing import Any

from common.errors import ErrorCode

ENVELOPE = "ErrorEnvelope"
ENVELOPE_REF = {"$ref": f"#/components/schemas/{ENVELOPE}"}

DESCRIPTIONS = {
    400: "Invalid input (`invalid_input` with `fields`, `malformed_body`)",
    401: "No, invalid or expired credentials",
    403: "Forbidden",
    404: "Not found, or not yours",
    405: "Method not allowed",
    409: "Conflict (`idempotency_conflict`: the key was used with another body; `turn_in_progress`: `turn_policy` reject)",
    413: "The request body is too large",
    415: "The body is not JSON",
    429: "Throttled: retry after `Retry-After` seconds",
    503: "A required service is unavailable",
}


def envelope_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "enum": [code.value for code in ErrorCode]},
                    "message": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": True},
                },
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    }


def error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": ENVELOPE_REF}},
    }
    if status == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
    return response
