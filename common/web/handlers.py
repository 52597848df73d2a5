"""How errors leave over HTTP: DRF's exception handler and Django's `handler400/403/404/500` views,
all answering the one envelope (`common.errors`)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from common.errors import STATUS, CortexError, ErrorCode, error_body

logger = logging.getLogger(__name__)


def _flatten(detail: Any) -> Any:
    """DRF's ErrorDetail tree as plain JSON: lists of messages keyed by field."""
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def _validation_code(detail: Any) -> ErrorCode:
    codes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        else:
            codes.add(getattr(node, "code", "invalid"))

    walk(detail)
    return ErrorCode.PAYLOAD_TOO_LARGE if "too_large" in codes else ErrorCode.INVALID_INPUT


_CODES: dict[type[exceptions.APIException], ErrorCode] = {
    exceptions.ParseError: ErrorCode.MALFORMED_BODY,
    exceptions.AuthenticationFailed: ErrorCode.INVALID_TOKEN,
    exceptions.NotAuthenticated: ErrorCode.NOT_AUTHENTICATED,
    exceptions.PermissionDenied: ErrorCode.PERMISSION_DENIED,
    exceptions.NotFound: ErrorCode.NOT_FOUND,
    exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    exceptions.NotAcceptable: ErrorCode.NOT_ACCEPTABLE,
    exceptions.UnsupportedMediaType: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    exceptions.Throttled: ErrorCode.THROTTLED,
}


def _api_code(exc: exceptions.APIException) -> ErrorCode:
    """A specific code the raiser chose (`AuthenticationFailed(..., code="invalid_credentials")`)
    when it is one of ours, else the code of the exception's class."""
    specific = getattr(exc.detail, "code", None)
    if specific and specific != exc.default_code:
        try:
            return ErrorCode(specific)
        except ValueError:
            pass
    for klass, value in _CODES.items():
        if isinstance(exc, klass):
            return value
    by_status = next((code for code, status_code in STATUS.items() if status_code == exc.status_code), None)
    return by_status or (ErrorCode.INTERNAL_ERROR if exc.status_code >= 500 else ErrorCode.BAD_REQUEST)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = CortexError(ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large.")
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, (InvalidToken, TokenError)):
        exc = exceptions.AuthenticationFailed("The token is invalid or expired.")

    headers: dict[str, str] = {}
    if isinstance(exc, CortexError):
        set_rollback()
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return Response(exc.body(), status=exc.status, headers=headers)

    if not isinstance(exc, exceptions.APIException):
        view = context.get("view")
        logger.exception("Unhandled error in %s", view.__class__.__name__ if view else "?")
        set_rollback()
        return Response(
            error_body(ErrorCode.INTERNAL_ERROR, "An internal error occurred."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(max(1, int(wait)))

    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        code = _validation_code(detail)
        too_large = code == ErrorCode.PAYLOAD_TOO_LARGE
        body = error_body(
            code, "The request body is too large." if too_large else "The request is invalid.", _flatten(detail)
        )
        status_code = 413 if too_large else 400
    else:
        code = _api_code(exc)
        message = exc.detail if isinstance(exc.detail, str) else str(exc.default_detail)
        if isinstance(exc, exceptions.Throttled):
            message = "Too many requests; retry later."
        body = error_body(code, str(message))
        status_code = exc.status_code

    set_rollback()
    return Response(body, status=status_code, headers=headers)


def json_error(status_code: int, code: ErrorCode, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    if isinstance(exception, RequestDataTooBig):
        return json_error(413, ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large.")
    return json_error(400, ErrorCode.BAD_REQUEST, "The request is invalid.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(403, ErrorCode.PERMISSION_DENIED, "You may not do this.")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(404, ErrorCode.NOT_FOUND, "Not found.")


def server_error(request: HttpRequest) -> JsonResponse:
    return json_error(500, ErrorCode.INTERNAL_ERROR, "An internal error occurred.")
