"""The ASGI layers: `ObservedApp`, `RequestGuard`, `ApiASGIHandler` and `LeanRoutes`.

`ObservedApp` is the ASGI layer around the core and the MCP services that gives every request an id,
one access log line and its metrics.

It sits outside Channels' router, so the SSE and WebSocket consumers are covered as well as the
Django views. Per request it costs a context-variable set, a wrapped `send` and a few counter
increments: no database, no allocation beyond the header.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import ImproperlyConfigured, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http.request import split_domain_port, validate_host
from django.urls import resolve, set_script_prefix
from django.utils.module_loading import import_string

from common import metrics
from common.errors import ErrorCode, error_body
from common.logs import REQUEST_ID, request_id_from

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_logger = logging.getLogger("cortex.access")

UNMATCHED = "<unmatched>"


_labelled: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _children(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The labelled counter and histogram, looked up once per (method, route, status): `labels()`
    costs a lock and a validation each time (3 us); the set is bounded by the routes."""
    key = (method, route, status)
    children = _labelled.get(key)
    if children is None:
        code = str(status)
        children = _labelled[key] = (
            metrics.HTTP_REQUESTS.labels(method, route, code),
            metrics.HTTP_LATENCY.labels(method, route, code),
        )
    return children


_delivered_children: dict[str, Any] = {}


def _delivered(transport: str) -> Any:
    """The delivered-events counter of a transport: `labels()` (a lock and a lookup) once, not on
    every event a stream writes (a seventh of the fan-out's CPU was the metric)."""
    child = _delivered_children.get(transport)
    if child is None:
        child = _delivered_children[transport] = metrics.EVENTS_DELIVERED.labels(transport)
    return child


def _ambiguous_length(scope: Scope) -> bool:
    """Two different Content-Lengths, or one with Transfer-Encoding (a helper: the set would stay in
    the guard's frame for the whole request, an SSE stream's included)."""
    lengths = {value for key, value in scope.get("headers", ()) if key == b"content-length"}
    return len(lengths) > 1 or bool(lengths and _header(scope, b"transfer-encoding") is not None)


class Observation:
    """One request's request id, access log line and metrics (`ObservedApp`). `sent` is applied to
    every message the application sends (the `X-Request-ID` header, the status, the stream
    counters), `finish` once the request is over. `scope["cortex"]` is this object: Django's
    envelope names the route on it (`common.web.envelope`). Slots, not a dict and a closure's cells:
    an open stream keeps its observation for its whole life."""

    __slots__ = ("observed", "request_id", "route", "scope", "started", "status", "stream", "token")

    def __init__(self, observed: ObservedApp, scope: Scope) -> None:
        incoming = next((value for name, value in scope.get("headers", ()) if name == b"x-request-id"), None)
        request_id = request_id_from(incoming)
        self.token = REQUEST_ID.set(request_id)
        self.observed = observed
        self.scope = scope
        self.route: str | None = None
        self.status: int | None = None
        self.stream: str | None = None
        self.request_id = request_id  # the context variable's own string; the header is made when sent
        scope["cortex"] = self  # shared by the copies Channels' router makes of the scope
        self.started = time.perf_counter()

    def sent(self, message: Message) -> Message:
        """What goes to the server for `message`, recorded."""
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            headers.append((b"x-request-id", self.request_id.encode()))
            message = {**message, "headers": headers}
            if self.observed.record and message["status"] == 200:
                for name, value in headers:
                    if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                        self.stream = "sse"
                        metrics.OPEN_STREAMS.labels("sse").inc()
                        break
        elif kind == "http.response.body":
            if self.stream == "sse" and message.get("body", b"").startswith(b"id:"):
                _delivered("sse").inc()
        elif kind == "websocket.send":
            if self.stream == "websocket":
                _delivered("websocket").inc()
        elif kind == "websocket.accept":
            self.status = 101
            if self.observed.record:
                self.stream = "websocket"
                metrics.OPEN_STREAMS.labels("websocket").inc()
        elif kind == "websocket.close" and self.status is None:
            self.status = 403  # refused before the handshake
        return message

    def finish(self) -> None:
        """The request is over: its metrics and its access log line."""
        observed, scope = self.observed, self.scope
        elapsed = time.perf_counter() - self.started
        status = self.status or 500
        route = self.route or observed.routes.get(scope.get("path", ""), UNMATCHED)
        stream = self.stream
        if observed.record:
            count, latency = _children(scope.get("method", "WS"), route, status)
            count.inc()
            if stream is None:
                latency.observe(elapsed)
            else:
                metrics.OPEN_STREAMS.labels(stream).dec()
            if status == 429:
                metrics.THROTTLED.labels(route).inc()
        if observed.access_log and access_logger.isEnabledFor(logging.INFO):
            # The path without its query string: `?ticket=` and search terms stay out of logs.
            access_logger.info(
                "%s %s %s %.1fms",
                scope.get("method", "WEBSOCKET"),
                scope.get("path", ""),
                status,
                elapsed * 1000,
                extra={
                    "service": observed.service,
                    "method": scope.get("method", "WEBSOCKET"),
                    "path": scope.get("path", ""),
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
        REQUEST_ID.reset(self.token)


class ObservedApp:
    """`service`: "core" records HTTP and stream metrics; a service name (memory, cognition) only
    takes the request id from the caller and logs its access line. `routes`: the paths served by
    Channels consumers, which are routes in themselves (Django views name theirs through
    `common.web.envelope`). An application may also observe itself (`Observation`, as the SSE
    stream does: `streaming.routing.StreamsFirst`), without this layer's frame and wrapped `send`."""

    def __init__(
        self, app: ASGIApp, *, service: str = "core", routes: Iterable[str] = (), access_log: bool = True
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.service = service
        self.routes = {path: path.lstrip("/") for path in routes}
        self.record = service == "core"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        observation = Observation(self, scope)
        sent = observation.sent

        async def observed_send(message: Message) -> None:
            await send(sent(message))

        # The server's own send stays reachable (common.web.daphne_compat reads daphne's buffer through it).
        observed_send.__wrapped__ = send  # type: ignore[attr-defined]
        try:
            await self.app(scope, receive, observed_send)
        finally:
            observation.finish()


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers", ()) if key == name), None)


def _host_allowed(scope: Scope) -> bool:
    host = _header(scope, b"host")
    if host is None:  # HTTP/1.0: the address the server listens on, as Django does
        server = scope.get("server")
        if not server:
            return False
        host = f"{server[0]}:{server[1]}".encode()
    domain, _port = split_domain_port(host.decode("latin-1"))
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


async def _refuse(send: Send, status: int, code: ErrorCode, message: str) -> None:
    """An envelope answer, and the connection closed after it: what the client may still be sending
    is never read."""
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read (whole, in one message), then the client's own
    messages (its disconnect)."""
    first: Message | None = {"type": "http.request", "body": body, "more_body": False}

    async def replay() -> Message:
        nonlocal first
        if first is not None:
            message, first = first, None
            return message
        return await receive()

    return replay


class RequestGuard:
    """What is refused before any view, consumer or middleware runs, on every path (the API's
    stack, Django's full stack, the streams):

    - a `Host` that is not in `ALLOWED_HOSTS`: 400 (a WebSocket handshake: refused). Django checks
      it only when something calls `request.get_host()`, which no API path did, so a page on any
      domain could rebind its name to 127.0.0.1 and use `make run`'s API with the demo user;
    - a body over `MAX_REQUEST_BYTES`: 413 before more than that is read. Django's handlers read
      the whole body (to a temporary file, of any size) before anything looks at it, so a
      multi-GB POST to `/auth/login` filled the disk before its 401. A `Content-Length` over the
      limit is refused before a byte of the body is read; a chunked body is read up to the limit
      and refused at the chunk that passes it (it is short enough to hold, and is handed on);
    - an ambiguous body length (`Content-Length` with `Transfer-Encoding`, or two different
      `Content-Length`s): 400, whatever the HTTP parser below let through (h11 does).

    `loopback_limits`: larger bounds for some paths, for loopback peers only (the relay of
    `/internal/events`, whose sender is the deployment's own turn worker).
    """

    def __init__(self, app: ASGIApp, *, loopback_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.loopback_limits = loopback_limits or {}

    def _limit(self, scope: Scope) -> int:
        larger = self.loopback_limits.get(scope.get("path", ""))
        if larger is not None:
            try:
                if ipaddress.ip_address((scope.get("client") or ("",))[0]).is_loopback:
                    return larger
            except ValueError:
                pass
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    @staticmethod
    def lets_through(scope: Scope) -> bool:
        """An HTTP request this layer would hand on untouched: an allowed `Host` and no body
        (neither `Content-Length` nor `Transfer-Encoding`). An application that serves such
        requests without this layer's frame (`streaming.routing.StreamsFirst`) asks this first."""
        return (
            _header(scope, b"content-length") is None
            and _header(scope, b"transfer-encoding") is None
            and _host_allowed(scope)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if not _host_allowed(scope):
            if kind == "http":
                await _refuse(send, 400, ErrorCode.BAD_REQUEST, "This server does not answer to that Host.")
            else:
                await receive()  # websocket.connect; closing before accepting refuses the handshake (403)
                await send({"type": "websocket.close", "code": 1008})
            return
        if kind == "http":
            limit = self._limit(scope)
            if _ambiguous_length(scope):
                # RFC 9112 6.3: an ambiguous length. httptools refuses it; h11 passes it on, and a
                # proxy that believes the other header would smuggle a second request past us.
                await _refuse(
                    send, 400, ErrorCode.BAD_REQUEST, "Ambiguous body length (Content-Length and Transfer-Encoding)."
                )
                return
            length = _header(scope, b"content-length")
            if length is not None:  # the server reads no more than it announces
                if not length.isdigit():
                    await _refuse(send, 400, ErrorCode.BAD_REQUEST, "Invalid Content-Length.")
                    return
                if int(length) > limit:
                    await _refuse(send, 413, ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large.")
                    return
            elif _header(scope, b"transfer-encoding") is not None:
                bounded = await self._read_bounded(receive, send, limit)
                if bounded is None:
                    return
                receive = bounded
        await self.app(scope, receive, send)

    @staticmethod
    async def _read_bounded(receive: Receive, send: Send, limit: int) -> Receive | None:
        """A chunked body, read while it stays within `limit`; then handed on whole. None: refused
        (413) or the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # http.disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, 413, ErrorCode.PAYLOAD_TOO_LARGE, "The request body is too large.")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return _replaying(b"".join(chunks), receive)


# Idle per-request sync threads kept for reuse (more are made, and dropped, under bursts).
SYNC_THREADS_KEPT = 32


class _SyncThread(ThreadPoolExecutor):
    """One request's sync thread (reused across requests); remembers whether anything ran on it."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="cortex-api")
        self.used = False

    def submit(self, *args, **kwargs):
        self.used = True
        return super().submit(*args, **kwargs)


class _RequestProcessed(Exception):
    pass


class ApiASGIHandler(ASGIHandler):
    """Django for the API, without thread hops a request does not need.

    - Middleware: `API_MIDDLEWARE`, async only (Django sends every hook of a sync-capable
      middleware through `sync_to_async`).
    - Sync code of a request (sync views, the async ORM) runs on a reused thread instead of a new
      one per request (`ThreadSensitiveContext` with a pooled executor).
    - Django's request signals exist to close the database connections of the request's sync
      thread. `request_started` is not sent (the previous request on the thread closed them at its
      end); `request_finished` (`response.close()`) runs on that thread when the request used it,
      and on the event loop when it did not, where it has nothing to close: an async view that
      never left the loop (POST /input) costs no hop at all.
    The rest (body, request, disconnect, response) is Django's `ASGIHandler.handle`.
    """

    def __init__(self) -> None:
        self._idle: list[_SyncThread] = []
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list = []
        self._template_response_middleware: list = []
        self._exception_middleware: list = []
        handler = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for path in reversed(settings.API_MIDDLEWARE):
            middleware = import_string(path)
            if getattr(middleware, "sync_capable", True) or not getattr(middleware, "async_capable", False):
                raise ImproperlyConfigured(f"API_MIDDLEWARE must be async-only middleware: {path} is not")
            handler = convert_exception_to_response(middleware(handler))
        self._middleware_chain = handler

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self._idle.pop() if self._idle else _SyncThread()
        thread.used = False
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self._handle(scope, receive, send, thread)
        finally:
            if len(self._idle) < SYNC_THREADS_KEPT:
                self._idle.append(thread)
            else:
                thread.shutdown(wait=False)

    async def _handle(self, scope, receive, send, thread: _SyncThread) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        with closing(body_file):
            set_script_prefix(get_script_prefix(scope))
            request, response = self.create_request(scope, body_file)
            if request is None:
                await self.send_response(response, send)  # type: ignore[arg-type]  # the error response
            else:
                response = None
                try:
                    try:
                        async with asyncio.TaskGroup() as tasks:
                            tasks.create_task(self.listen_for_disconnect(receive))
                            response = await self.run_get_response(request)
                            await self.send_response(response, send)
                            raise _RequestProcessed
                    except* (_RequestProcessed, RequestAborted):
                        pass
                except BaseExceptionGroup as group:
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            finish = response.close if response is not None else self._request_finished
            if thread.used:
                await sync_to_async(finish)()
            else:
                finish()

    def _request_finished(self) -> None:
        signals.request_finished.send(sender=self.__class__)


class _NotLean(BaseException):
    """The lean view left the request to the full path. A `BaseException`, so that no layer of the
    API's middleware chain (nor `convert_exception_to_response`) turns it into an answer."""


class LeanRoutes(ApiASGIHandler):
    """Some API requests served from the ASGI scope by their view's `lean` method, without
    Channels' router, `ThreadSensitiveContext`, a body spooled to a temporary file, URL resolution,
    the view's class-based dispatch, or a task listening for the client's disconnect.

    For a `POST` to one of `paths` (a path whose view is an `AsyncAPIView` with a `lean` method, as
    `POST /input`'s `InputApi`), the request's body is read, Django's `ASGIRequest` is made from the
    scope (the same `META`, headers and body the view would see) and the API's own middleware chain
    (`API_MIDDLEWARE`: the error envelope and the route name for the metrics, the security
    headers) runs with the view's `lean` method in place of Django's URL resolution and view call.
    Everything around it is Django's `ASGIHandler`'s own: `get_response_async` (the 4xx/5xx log
    line, an exception turned into the 500 envelope), `send_response`, `response.close()` (the
    `request_finished` signal). When `lean` answers None (it serves only what it is sure of, and
    then has counted and written nothing), the request, its body replayed, goes to `app` (Channels'
    router, Django's full handler and the DRF view) as if this layer did not exist: every refusal,
    error envelope and header stays the full path's.

    The one difference seen from outside: a client that leaves while its request runs. Django's
    handler then cancels the view; here it runs to its end (the writer already wrote an input whose
    client left once it was queued) and its answer is dropped by the server.
    """

    def __init__(self, app: ASGIApp, *, paths: Iterable[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self._matches: dict[str, Any] = {}
        super().__init__()

    async def __call__(self, scope, receive, send) -> None:  # untyped, as ApiASGIHandler's
        if (
            scope["type"] != "http"
            or scope["path"] not in self.paths
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:  # as Django's `read_body` (`RequestGuard` has bounded the body's size)
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        request, _error = self.create_request(scope, io.BytesIO(body))  # an error: the full path answers it
        if request is None:
            await self._full_path(scope, body, receive, send)
            return
        try:
            response = await self.get_response_async(request)
        except _NotLean:
            await self._full_path(scope, body, receive, send)
            return
        await self.send_response(response, send)
        # Not `response.close()`: it closes the request (a JSON body has no files to close) and sends
        # `request_finished`, whose receivers clean up what a request left on its thread: database
        # connections (code on the event loop cannot hold one; a user-cache miss closes its own),
        # Django's per-context caches (the lean path uses none: the throttles share one client) and
        # the URLconf `get_response_async` set (an asgiref `Local`, copied on write into this
        # request's own task context, which ends with it). 7% of the input path's samples for nothing.

    async def _full_path(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        await self.app(scope, _replaying(body, receive), send)

    async def _get_response_async(self, request: Any) -> Any:  # the innermost step of the chain
        match = self._matches.get(request.path_info)
        if match is None:
            match = self._matches[request.path_info] = resolve(request.path_info)
        request.resolver_match = match  # the route's name for the metrics (`common.web.envelope`)
        view_class = getattr(match.func, "view_class", None)
        if view_class is None or not hasattr(view_class, "lean"):
            raise _NotLean
        view = view_class(**getattr(match.func, "view_initkwargs", {}))
        view.setup(request, *match.args, **match.kwargs)
        view.args, view.kwargs = match.args, match.kwargs
        response = await view.lean(request, *match.args, **match.kwargs)
        if response is None:
            raise _NotLean
        return response
