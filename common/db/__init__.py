"""Sync ORM work from async code, on a worker thread that keeps its SQLite connection.

Channels' `database_sync_to_async` closes the thread's connection before and after every call
(`CONN_MAX_AGE` is 0): on SQLite each call opens the file again, registers Django's SQL functions
and runs the PRAGMAs, which costs more than most reads (the streams' reads at open were most of
an open's CPU). `db_call` keeps a clean SQLite connection with its thread and hands PostgreSQL's
back to the pool.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

P = ParamSpec("P")
T = TypeVar("T")


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
