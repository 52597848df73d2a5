"""The one error type and the one envelope: `{"error": {"code", "message", "fields"?}}`.

`CortexError` is the project's own exception for a refusal a caller should see (Django's `Http404`
and DRF's validation, authentication and throttling errors are the framework's, and leave through
the same handler as the same envelope): a REST view, a stream consumer, an MCP tool and the MCP
client all raise it with an `ErrorCode`, and the
code travels unchanged: as the envelope's `code` over HTTP and WebSocket, and as the JSON-RPC
error's `data` across MCP (`mcp_error` / `CortexError.from_mcp_data`), never parsed out of text.

Over HTTP every error leaves through `common.web.handlers` (DRF's exception handler and Django's
`handler*` views) and, in debug mode too, `common.web.envelope.error_envelope`. This module imports
nothing of Django, so settings and every app can use it.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.StrEnum):
    """Every code a client, a stream or an MCP caller can receive (the schema lists them)."""

    BAD_REQUEST = "bad_request"
    INVALID_INPUT = "invalid_input"
    MALFORMED_BODY = "malformed_body"
    NOT_AUTHENTICATED = "not_authenticated"
    INVALID_TOKEN = "invalid_token"
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_REFRESH_TOKEN = "invalid_refresh_token"
    TOKEN_IN_URL = "token_in_url"
    PERMISSION_DENIED = "permission_denied"
    FORBIDDEN = "forbidden"
    DENIED = "denied"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    CONFLICT = "conflict"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    TURN_IN_PROGRESS = "turn_in_progress"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    THROTTLED = "throttled"
    TOO_MANY_STREAMS = "too_many_streams"
    INTERNAL_ERROR = "internal_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    TOOL_ERROR = "tool_error"
    TIMEOUT = "timeout"
    BUDGET_EXCEEDED = "budget_exceeded"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.MALFORMED_BODY: 400,
    ErrorCode.NOT_AUTHENTICATED: 401,
    ErrorCode.INVALID_TOKEN: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INVALID_REFRESH_TOKEN: 401,
    ErrorCode.TOKEN_IN_URL: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.NOT_ACCEPTABLE: 406,
    ErrorCode.CONFLICT: 409,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.TURN_IN_PROGRESS: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.THROTTLED: 429,
    ErrorCode.TOO_MANY_STREAMS: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.TOOL_ERROR: 502,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.BUDGET_EXCEEDED: 429,
}


class CortexError(Exception):
    """A refusal with a stable code and a message for the caller (never a secret or a traceback).

    `status` defaults to the code's HTTP status; `fields` maps input names to their problems.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        status: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.status = status if status is not None else STATUS[self.code]
        self.fields = fields

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.fields)

    @property
    def permanent(self) -> bool:
        """A refusal of the arguments themselves: the same call will be refused again."""
        return self.status in (400, 404, 413, 415)

    # Across MCP: the code rides in the JSON-RPC error's `data`, as the envelope's inner object.
    def mcp_data(self) -> dict[str, Any]:
        return self.body()["error"]

    @classmethod
    def from_mcp_data(cls, data: Any, message: str) -> CortexError | None:
        """The error a service sent as `data`; None if the data carries no known code."""
        if not isinstance(data, dict):
            return None
        try:
            code = ErrorCode(str(data.get("code")))
        except ValueError:
            return None
        fields = data.get("fields")
        return cls(code, str(data.get("message") or message), fields=fields if isinstance(fields, dict) else None)


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": str(code), "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}
