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
our own closes the open event sockets with 1001 first, whatever daphne's trigger does.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import Any

SERVER_CLOSE_CODES = frozenset({1001, 1008, 1011, 1012, 1013})


# Open WebSocket consumers of this process (each has an async `going_away()`).
open_sockets: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False


async def _close_open_sockets() -> None:
    await asyncio.gather(*(socket.going_away() for socket in list(open_sockets)), return_exceptions=True)


def install() -> None:
    """Patch daphne if this process is a daphne server (twisted is never imported otherwise)."""
    global _installed
    module = sys.modules.get("daphne.ws_protocol")
    if module is None or _installed:
        return
    _installed = True
    from twisted.internet import defer, reactor

    add_trigger: Any = reactor.addSystemEventTrigger  # twisted's stub mistypes its (phase, event, callable)
    add_trigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(_close_open_sockets()))
    )
    original = module.WebSocketProtocol.serverClose

    def serverClose(self, code: int | None = None) -> None:  # noqa: N802 (daphne's name)
        if code in SERVER_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code=code)

    module.WebSocketProtocol.serverClose = serverClose
