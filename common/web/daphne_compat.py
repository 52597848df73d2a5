"""Daphne quirks: close codes, and closing WebSockets on shutdown.

Let daphne send the RFC 6455 close codes a server means: 1001, 1008, 1011, 1013.

Daphne closes a WebSocket for the application with autobahn's `sendClose`, which accepts only
1000 and 3000-4999 (the codes an *application* may pick freely) and raises for the protocol's own
codes. A server going away (1001) or refusing a policy violation (1008) is exactly what those
codes are for, so for them we send the same close frame through `sendCloseFrame`, the method
`sendClose` calls after its check. Uvicorn needs nothing: it passes any valid code through.

On shutdown daphne cancels every application so it can say goodbye, but its
`kill_all_applications` raises KeyError (and cancels nothing) while any HTTP keep-alive
connection has a finished application: then WebSockets are simply dropped. A shutdown trigger of
our own ends the open streams first (`common.web.shutdown`: WebSockets closed with 1001, SSE
responses ended), whatever daphne's trigger does.

Daphne applies no backpressure: whatever the application sends is appended to Twisted's
write buffer, so a client that stops reading makes the server's memory grow without bound (the
stream's own queue never fills: each send returns at once). So the streams wait, as uvicorn's
send does, while a daphne connection holds more than a little unsent output (`unsent_bytes`); live
events then pile up in the stream's bounded queue, which cuts the client off once it passes
`STREAM_BUFFER_BYTES`. As a last guard, after each event-stream body chunk or WebSocket frame
the connection is aborted if its unsent bytes pass that bound. The client resumes with its last
event id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from typing import Any

from common.web import shutdown

logger = logging.getLogger(__name__)

SERVER_CLOSE_CODES = frozenset({1001, 1008, 1011, 1012, 1013})


_installed = False


def _unsent_bytes(transport: Any) -> int:
    """Bytes Twisted holds for a TCP connection that the kernel has not taken yet."""
    buffered = getattr(transport, "dataBuffer", b"")
    return len(buffered) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def _transport(protocol: Any) -> Any:
    channel = getattr(protocol, "channel", None)  # an HTTP request: its connection's transport
    if channel is not None:
        return getattr(channel, "transport", None)
    return getattr(protocol, "transport", None)  # a WebSocket protocol


def unsent_bytes(send: Any) -> int | None:
    """Bytes written to a daphne connection and not yet taken by the kernel; None under another
    server. `send` is the ASGI send callable daphne gave the application (a partial holding its
    protocol object), possibly wrapped by middleware that sets `__wrapped__` (common.web.asgi)."""
    while hasattr(send, "__wrapped__"):
        send = send.__wrapped__
    if not isinstance(send, functools.partial) or not send.args:
        return None
    owner = getattr(send.func, "__self__", None)
    if type(owner).__module__ != "daphne.server":
        return None
    transport = _transport(send.args[0])
    return None if transport is None else _unsent_bytes(transport)


def _cut_off_if_stalled(transport: Any, what: str) -> None:
    from django.conf import settings

    if transport is None:
        return
    unsent = _unsent_bytes(transport)
    if unsent > settings.CORTEX["STREAM_BUFFER_BYTES"]:
        logger.info("%s: %d bytes unsent to a client that stopped reading; cutting it off", what, unsent)
        transport.abortConnection()


def install() -> None:
    """Patch daphne if this process is a daphne server (twisted is never imported otherwise)."""
    global _installed
    module = sys.modules.get("daphne.ws_protocol")
    if module is None or _installed:
        return
    _installed = True
    from twisted.internet import defer, reactor

    add_trigger: Any = reactor.addSystemEventTrigger  # twisted's stub mistypes its (phase, event, callable)
    add_trigger("before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(shutdown.close_all())))
    original = module.WebSocketProtocol.serverClose

    def serverClose(self, code: int | None = None) -> None:  # noqa: N802 (daphne's name)
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    module.WebSocketProtocol.serverClose = serverClose

    original_ws_reply = module.WebSocketProtocol.handle_reply

    def ws_handle_reply(self, message: dict) -> None:
        original_ws_reply(self, message)
        if message.get("type") == "websocket.send":
            _cut_off_if_stalled(getattr(self, "transport", None), "WebSocket")

    module.WebSocketProtocol.handle_reply = ws_handle_reply

    http_module = sys.modules.get("daphne.http_protocol")
    if http_module is not None:
        original_http_reply = http_module.WebRequest.handle_reply

        def http_handle_reply(self, message: dict) -> None:
            original_http_reply(self, message)
            kind = message.get("type")
            if kind == "http.response.start":
                # Only event streams: a large file (Swagger UI's 1.4 MB bundle) is also sent in
                # chunks, faster than any client reads it, and must not be cut off.
                self.cortex_event_stream = any(
                    name.lower() == b"content-type" and value.startswith(b"text/event-stream")
                    for name, value in message.get("headers", ())
                )
            elif (
                kind == "http.response.body"
                and message.get("more_body")
                and getattr(self, "cortex_event_stream", False)
                and self.channel is not None
            ):
                _cut_off_if_stalled(self.channel.transport, "Streamed response")

        http_module.WebRequest.handle_reply = http_handle_reply
