"""`ObservedApp`: the ASGI layer around the core and the MCP services that gives every request an id,
one access log line and its metrics.

It sits outside Channels' router, so the SSE and WebSocket consumers are covered as well as the
Django views. Per request it costs a context-variable set, a wrapped `send` and a few counter
increments: no database, no allocation beyond the header.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from common import metrics
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


class ObservedApp:
    """`service`: "core" records HTTP and stream metrics; a service name (memory, cognition) only
    takes the request id from the caller and logs its access line. `routes`: the paths served by
    Channels consumers, which are routes in themselves (Django views name theirs through
    `common.middleware`)."""

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
        incoming = next((value for name, value in scope.get("headers", ()) if name == b"x-request-id"), None)
        request_id = request_id_from(incoming)
        token = REQUEST_ID.set(request_id)
        state: dict[str, Any] = {"route": None, "status": None, "stream": None}
        scope["cortex"] = state  # shared by the copies Channels' router makes of the scope
        header = (b"x-request-id", request_id.encode())
        started = time.perf_counter()
        record = self.record

        async def observed_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state["status"] = message["status"]
                headers = list(message.get("headers", ()))
                headers.append(header)
                message = {**message, "headers": headers}
                if record and message["status"] == 200:
                    for name, value in headers:
                        if name.lower() == b"content-type" and value.startswith(b"text/event-stream"):
                            state["stream"] = "sse"
                            metrics.OPEN_STREAMS.labels("sse").inc()
                            break
            elif kind == "http.response.body":
                if state["stream"] == "sse" and message.get("body", b"").startswith(b"id:"):
                    metrics.EVENTS_DELIVERED.labels("sse").inc()
            elif kind == "websocket.send":
                if state["stream"] == "websocket":
                    metrics.EVENTS_DELIVERED.labels("websocket").inc()
            elif kind == "websocket.accept":
                state["status"] = 101
                if record:
                    state["stream"] = "websocket"
                    metrics.OPEN_STREAMS.labels("websocket").inc()
            elif kind == "websocket.close" and state["status"] is None:
                state["status"] = 403  # refused before the handshake
            await send(message)

        # The server's own send stays reachable (streaming.daphne_compat reads daphne's buffer through it).
        observed_send.__wrapped__ = send  # type: ignore[attr-defined]
        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            status = state["status"] or 500
            route = state["route"] or self.routes.get(scope.get("path", ""), UNMATCHED)
            stream = state["stream"]
            if record:
                count, latency = _children(scope.get("method", "WS"), route, status)
                count.inc()
                if stream is None:
                    latency.observe(elapsed)
                else:
                    metrics.OPEN_STREAMS.labels(stream).dec()
                if status == 429:
                    metrics.THROTTLED.labels(route).inc()
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                # The path without its query string: `?ticket=` and search terms stay out of logs.
                access_logger.info(
                    "%s %s %s %.1fms",
                    scope.get("method", "WEBSOCKET"),
                    scope.get("path", ""),
                    status,
                    elapsed * 1000,
                    extra={
                        "service": self.service,
                        "method": scope.get("method", "WEBSOCKET"),
                        "path": scope.get("path", ""),
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            REQUEST_ID.reset(token)
