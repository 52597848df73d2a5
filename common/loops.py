"""`run_until_stopped`: the loop of every long-running management command (housekeeping, the
memory outbox worker): run a step, wait, repeat until SIGTERM or SIGINT.

A failing step (the database or a service is down) is logged and tried again after the wait; the
database connections are closed after every step, so a restarted database is reconnected to and
no idle connection is held while waiting.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections


def run_until_stopped(
    step: Callable[[], str | None],
    *,
    every: float,
    name: str,
    log: Callable[[str], Any],
    woken: threading.Event | None = None,
) -> None:
    """Call `step` every `every` seconds until a stop signal; `log` gets what it returns, if anything.
    With `woken` (set by a wake-up, `common.wakeups.listen_in_thread`), the step also runs as soon as
    it is set; `every` is then the fallback poll."""
    stop = threading.Event()
    waiting = woken or stop

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()
        waiting.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    log(f"{name}: running every {every:g}s")
    while not stop.is_set():
        if woken is not None:
            woken.clear()  # one that comes during the step runs the next one at once
        try:
            said = step()
            if said:
                log(said)
        except Exception as exc:  # noqa: BLE001 - the database or a service is down: try again next time
            log(f"{name} failed: {exc!r}")
        finally:
            connections.close_all()
        waiting.wait(every)
    log(f"{name}: stopped")
