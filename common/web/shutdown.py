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
            # Runs between bytecodes of the loop's thread: only schedule, then let uvicorn begin
            # its own shutdown (it closes the listener, then waits for responses to finish).
            loop.call_soon_threadsafe(_spawn, close_all())
            previous(number, frame)

        signal.signal(signum, handler)
