"""Server shutdown: every open stream says goodbye before the server goes.

On SIGTERM (or Ctrl-C) each open stream of this process is ended so its client resumes elsewhere,
with the last event id it saw: a WebSocket is closed with 1001 (going away), an SSE response is
ended (EventSource reconnects by itself after the `retry:` delay).

Neither server does this by itself. Uvicorn closes WebSockets with 1012 and waits for HTTP
responses to finish, which an SSE stream never does, so without this it hangs until killed.
Daphne cancels the applications (and sometimes cannot, see `daphne_compat`). So: under uvicorn we
chain our handler in front of the one uvicorn installs for SIGTERM/SIGINT (uvicorn then drains
in-flight requests as usual); under daphne a reactor shutdown trigger (`daphne_compat`) calls
`close_all`.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import weakref
from typing import Any, Protocol


class Stream(Protocol):
    async def going_away(self) -> None: ...


# Open streams of this process (SSE and WebSocket consumers).
open_streams: weakref.WeakSet[Any] = weakref.WeakSet()
shutting_down = False
_hooked = False
_tasks: set[asyncio.Task] = set()


def register(stream: Stream) -> None:
    """Called by a stream once it is live (in the server's event loop)."""
    open_streams.add(stream)
    _hook_uvicorn_signals()
    if shutting_down:  # opened in the instant between the signal and the listener closing
        _spawn(stream.going_away())


async def close_all() -> None:
    global shutting_down
    shutting_down = True
    await asyncio.gather(*(stream.going_away() for stream in list(open_streams)), return_exceptions=True)


def _spawn(coroutine: Any) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


GOODBYE_SECONDS = 5.0  # at most this long between the signal and the server's own shutdown


def _goodbye_then(shutdown: Any) -> None:
    """Every open stream's goodbye (`close_all`, bounded), then `shutdown` (on the loop's thread)."""
    task = asyncio.get_running_loop().create_task(asyncio.wait_for(close_all(), GOODBYE_SECONDS))
    _tasks.add(task)

    def then(done: asyncio.Task) -> None:
        _tasks.discard(done)
        if not done.cancelled():
            done.exception()  # retrieved: a goodbye that ran out of time still lets the server go
        shutdown()

    task.add_done_callback(then)


def _is_uvicorn_handler(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return type(owner).__module__.startswith("uvicorn.")


def _hook_uvicorn_signals() -> None:
    global _hooked
    if _hooked or threading.current_thread() is not threading.main_thread():
        return
    _hooked = True
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not _is_uvicorn_handler(previous):
            continue

        def handler(number: int, frame: Any, previous: Any = previous) -> None:
            # Runs between bytecodes of the loop's thread: only schedule. Uvicorn's own shutdown
            # (it closes the listener, closes WebSockets with 1012, then waits for responses to
            # finish) begins once every stream has said goodbye, or after GOODBYE_SECONDS: begun at
            # once, it could reach a loaded server's WebSockets before our 1001 did.
            loop.call_soon_threadsafe(_goodbye_then, lambda: previous(number, frame))

        signal.signal(signum, handler)
