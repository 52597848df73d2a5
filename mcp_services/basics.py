"""What the MCP servers (`serving`) share with their callers in the core, without importing the MCP
SDK: every Django process imports these at start-up (the apps' receivers and admin), and importing
the SDK (pydantic models for three protocol revisions) is about 40% of a process's start. So it is
imported by the processes that call or serve MCP: the memory and cognition services, the turn
worker, the outbox's delivery, and the core (at start-up, `operations.health`: its readiness and its
calls run under time limits); not by `manage.py shell`, `migrate`, `create_user` and the other
commands that only touch the database."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

P = ParamSpec("P")
T = TypeVar("T")


def cognition_token() -> str:
    """The one rule for cognition's credential, checked by cognition and sent by every caller: its own
    read-only token (CORTEX_COGNITION_TOKEN), else the service token."""
    return settings.CORTEX["COGNITION_TOKEN"] or settings.CORTEX["SERVICE_TOKEN"] or ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _kept(connection: Any) -> bool:
    """A SQLite connection in a clean state, kept for the thread's next call: opening one costs more
    than most calls (Django registers its SQL functions and runs the PRAGMAs each time), and a file
    database has no pool to give it back to."""
    return (
        connection.vendor == "sqlite"
        and connection.connection is not None
        and not connection.in_atomic_block
        and connection.get_autocommit()
        and not connection.errors_occurred
    )


def db_call(func: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Run a sync ORM function in a worker thread, then release that thread's connection.

    Tools run on the event loop; sync ORM there raises SynchronousOnlyOperation. Worker threads
    are reused, so PostgreSQL connections are closed after each call (handed back to the pool, so
    the pool's size stays the limit); a SQLite connection in a clean state stays with its thread
    (the executor's few threads: a few open files).
    """

    def closing(*args: P.args, **kwargs: P.kwargs) -> T:
        for connection in connections.all(initialized_only=True):
            if not _kept(connection):
                connection.close_if_unusable_or_obsolete()
        try:
            return func(*args, **kwargs)
        finally:
            for connection in connections.all(initialized_only=True):
                if not _kept(connection):
                    connection.close()

    return functools.wraps(func)(sync_to_async(closing, thread_sensitive=False))
