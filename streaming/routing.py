"""Channels routes of the streaming app; `cortex_site.asgi` mounts them."""

from __future__ import annotations

import inspect
from typing import Any
from urllib.parse import urlsplit

from channels.routing import URLRouter
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.urls import path

from common.web import daphne_compat
from common.web.asgi import ObservedApp, RequestGuard
from streaming.consumers import EventSocketConsumer, EventStream

daphne_compat.install()


DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(value: str, *, default_scheme: str = "") -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, lower-cased, the port made explicit; None if malformed.
    A value without a scheme (a bare host in `WS_ALLOWED_ORIGINS`) takes `default_scheme`."""
    if "://" not in value and default_scheme:
        value = f"{default_scheme}://{value}"
    try:
        parsed = urlsplit(value.strip())
        scheme, host, port = parsed.scheme.lower(), (parsed.hostname or "").lower(), parsed.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or DEFAULT_PORTS[scheme]


def _header(scope: Any, name: bytes) -> str | None:
    value = next((value for key, value in scope.get("headers", ()) if key == name), None)
    return value.decode("latin1") if value is not None else None


def own_origin(scope: Any) -> tuple[str, str, int] | None:
    """The origin of this server's own pages, as the handshake reached it: its `Host` (checked
    against ALLOWED_HOSTS before this runs: `common.web.asgi.RequestGuard`) and its scheme (`wss`,
    or https from a TLS proxy that says so when BEHIND_TLS_PROXY trusts it)."""
    secure = scope.get("scheme") == "wss"
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy and (_header(scope, b"x-forwarded-proto") or "").split(",")[0].strip().lower() == "https":
        secure = True
    host = _header(scope, b"host")
    if host is None:
        return None
    return _origin(host, default_scheme="https" if secure else "http")


def origin_allowed(scope: Any, origin: str) -> bool:
    """The whole origin (scheme, host, port) is this server's own or listed in WS_ALLOWED_ORIGINS:
    a page on another port or scheme of the same host is another origin (and the browser would
    send it the stream cookie, which is not port-bound)."""
    parsed = _origin(origin)
    if parsed is None:
        return False
    listed = {_origin(entry, default_scheme="https") for entry in settings.CORTEX["WS_ALLOWED_ORIGINS"]}
    return parsed == own_origin(scope) or parsed in listed


class StreamOriginValidator(OriginValidator):
    """Browsers must come from this server's own origin or one of `WS_ALLOWED_ORIGINS`, compared
    whole (`origin_allowed`).

    A handshake without `Origin` is not from a browser (browsers always send it on WebSockets),
    so cross-site WebSocket hijacking cannot apply; such API clients authenticate with a bearer
    token or ticket like any other, and are let through.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        origin = _header(scope, b"origin")
        if origin is None or origin_allowed(scope, origin):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


http_urlpatterns: list = [path("output/stream", EventStream.asgi(), name="output-stream")]


class StreamsFirst:
    """Outermost (`cortex_site.asgi`): `GET /output/stream` goes straight to its plain ASGI app
    (`streaming.consumers.EventStream.direct`), which observes itself (`common.web.asgi.Observation`:
    the request id, the access log line and the metrics `ObservedApp` gives every other request).
    An idle stream is then suspended in its own frame and the server's `receive`, nothing else:
    `ObservedApp`, `RequestGuard`, Channels' routers and this layer return or are skipped, where
    each would keep a suspended frame (and `ObservedApp` a wrapped `send` and its cells) for the
    stream's whole life, about 1.5 KB on every open stream. Only what `RequestGuard` would hand on
    untouched goes this way (an allowed `Host`, no body); anything else, and every other path, goes
    to `application` (`ObservedApp` and all below it, `/output/stream` included, which Channels'
    URL router then serves with the same stream).

    `__call__` is a plain function that returns the application's coroutine (marked as a coroutine
    function, so servers call it as ASGI 3): this layer adds no frame either."""

    def __init__(self, application: ObservedApp, *, guard: RequestGuard) -> None:
        self.application = application
        self.guard = guard
        self.sse = EventStream.direct

    @inspect.markcoroutinefunction
    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] == "http" and scope["path"] == "/output/stream" and self.guard.lets_through(scope):
            return self.sse(scope, receive, send, self.application)
        return self.application(scope, receive, send)


websocket_urlpatterns: list = [path("output/ws", EventSocketConsumer.as_asgi(), name="output-ws")]

websocket_application = StreamOriginValidator(URLRouter(websocket_urlpatterns), [])  # origin_allowed decides
