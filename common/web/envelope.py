"""`error_envelope`: the outermost Django middleware.

- Any error answer that is not JSON already becomes the envelope, in every mode: in debug mode
  Django answers an unknown path or a crash with its HTML debug page (the `handler404`/`handler500`
  views are used only outside debug), and plain views answer a wrong method with an empty 405.
  The admin and the docs keep their own pages.
- It names the route (`config/workspace/<str:workspace_id>`, never the raw path) for the metrics
  that `common.web.asgi.ObservedApp` records.

`error_envelope` is sync and async capable (Django's full stack, and the in-process test client);
`AsyncErrorEnvelope` is the same, async only, for the API's stack (`API_MIDDLEWARE`), which runs
no middleware that could cost a thread hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from common.errors import ErrorCode
from common.web.asgi import UNMATCHED
from common.web.handlers import json_error

OWN_PAGES = ("/admin/", "/docs", "/static/")

_BY_STATUS: dict[int, tuple[ErrorCode, str]] = {
    400: (ErrorCode.BAD_REQUEST, "The request is invalid."),
    401: (ErrorCode.NOT_AUTHENTICATED, "Authentication credentials were not provided."),
    403: (ErrorCode.PERMISSION_DENIED, "You may not do this."),
    404: (ErrorCode.NOT_FOUND, "Not found."),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed."),
    406: (ErrorCode.NOT_ACCEPTABLE, "Not acceptable."),
    409: (ErrorCode.CONFLICT, "The request conflicts with the current state."),
    413: (ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large."),
    415: (ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Unsupported media type."),
    429: (ErrorCode.THROTTLED, "Too many requests; retry later."),
    503: (ErrorCode.SERVICE_UNAVAILABLE, "A required service is unavailable."),
}
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def _observed(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    state = getattr(request, "scope", {}).get("cortex")
    if state is not None:
        match = request.resolver_match
        state.route = match.route if match is not None else UNMATCHED
    if response.status_code < 400 or request.path.startswith(OWN_PAGES):
        return response
    if response.get("Content-Type", "").startswith("application/json"):
        return response
    status = response.status_code
    code, message = _BY_STATUS.get(
        status,
        (ErrorCode.INTERNAL_ERROR, "An internal error occurred.")
        if status >= 500
        else (ErrorCode.BAD_REQUEST, "The request is invalid."),
    )
    enveloped = json_error(status, code, message)
    for name in _KEPT_HEADERS:
        if name in response:
            enveloped[name] = response[name]
    return enveloped


def error_envelope(
    get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]],
) -> Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]:
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            return _observed(request, await get_response(request))

        return markcoroutinefunction(middleware)

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        return _observed(request, get_response(request))  # type: ignore[arg-type]  # a sync chain

    return sync_middleware


error_envelope.sync_capable = True  # type: ignore[attr-defined]
error_envelope.async_capable = True  # type: ignore[attr-defined]


class AsyncErrorEnvelope:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return _observed(request, await self.get_response(request))
