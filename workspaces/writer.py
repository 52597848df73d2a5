"""Group commit: the inputs of one process are written by one thread, many per transaction.

With one writer thread per request (Django's sync views under ASGI), every input is its own
`BEGIN IMMEDIATE ... COMMIT` and 32 concurrent requests wait on SQLite's write lock with its
growing busy-handler sleeps; each thread also opens its own connection. Here an async request
hands its input to the process's writer thread and awaits the outcome. The thread takes everything
queued so far (up to `INPUT_BATCH_SIZE`) and writes it in one transaction
(`services.messages_create`): a burst costs one lock, one commit and one fsync instead of one per
input, and the thread keeps its connection open for its lifetime (closed and reopened only after
a failed batch).

Nothing changes in what a client is promised: the future resolves only after the commit, so a 200
still means "stored"; the event and outbox rows are in the same transaction as the message; the
per-user sequence is allocated under the same locks. On PostgreSQL several core processes each
have their own writer and still write concurrently (row locks on the event cursors, taken in user
id order, keep them apart).

`caller_loop()` tells code running in the writer thread (the transaction's on-commit hooks) which
event loop its inputs came from, so live events are handed to that loop rather than a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

_local = threading.local()


def caller_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop whose inputs the current writer batch serves (None outside the writer)."""
    return getattr(_local, "loop", None)


class _Job:
    __slots__ = ("future", "loop", "request")

    def __init__(self, request: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()


def _settle(jobs: list[_Job], outcomes: list[Any]) -> None:
    """On the jobs' event loop: every waiting request of a batch answered in one loop callback."""
    for job, outcome in zip(jobs, outcomes, strict=True):
        if job.future.done():  # the request was cancelled (its client left): nothing to answer
            continue
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


class InputWriter:
    """One daemon thread that writes queued inputs in batches (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cortex-input-writer", daemon=True)
                self._thread.start()
                if connection.vendor == "sqlite" and settings.CORTEX["SQLITE_CHECKPOINT_MS"] > 0:
                    _checkpointer.ensure()

    async def submit(self, request: Any) -> Any:
        """Queue one input and wait until its transaction has committed (or failed).

        With `INPUT_GROUP_COMMIT` off (in-process tests, whose database lives in the test's own
        transaction), the input is written on the caller's sync thread instead, as a batch of one.
        """
        if not settings.CORTEX["INPUT_GROUP_COMMIT"]:
            from workspaces import services

            outcome = (await sync_to_async(services.messages_create)(requests=[request]))[0]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        job = _Job(request, asyncio.get_running_loop())
        self._ensure_thread()
        self._queue.put(job)
        # Not `shield`ed: a request cancelled while queued is still written (it may already be in
        # the transaction), as before; only its answer is dropped.
        return await job.future

    def _run(self) -> None:
        from workspaces import services  # the writer is started lazily, after the apps are ready

        limit = settings.CORTEX["INPUT_BATCH_SIZE"]
        checkpoint_off = connection.vendor == "sqlite" and settings.CORTEX["SQLITE_CHECKPOINT_MS"] > 0
        configured: Any = None  # the raw connection whose automatic checkpoint is off
        # BENCH_BATCH_TRACE=<path>: one line per batch (its size) in <path>.<pid> (bench/README).
        trace = os.environ.get("BENCH_BATCH_TRACE")
        sizes = open(f"{trace}.{os.getpid()}", "a", buffering=1) if trace else None  # noqa: SIM115 - for the thread's life
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < limit:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if sizes is not None:
                sizes.write(f"{len(jobs)}\n")
            # A batch serves the loop of its first job; in a server process there is only one.
            _local.loop = jobs[0].loop
            try:
                if checkpoint_off and (connection.connection is None or connection.connection is not configured):
                    # The commit that fills SQLite's WAL past `wal_autocheckpoint` pages runs the
                    # checkpoint itself (copying the WAL into the database, with its fsyncs) before
                    # it returns: here, every input of that batch would wait for it. The
                    # checkpointer thread below does it instead, off the inputs' path.
                    connection.ensure_connection()
                    with connection.cursor() as cursor:
                        cursor.execute("PRAGMA wal_autocheckpoint=0")
                    configured = connection.connection
                outcomes = services.messages_create(requests=[job.request for job in jobs])
                if checkpoint_off:
                    _checkpointer.committed()
            except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
                logger.exception("input batch of %d failed", len(jobs))
                outcomes = [exc] * len(jobs)  # type: ignore[list-item]  # handed to each waiting request
                # The thread keeps its connection for its lifetime (no reconnect per batch); after a
                # failure it starts over with a fresh one (the database may have dropped it).
                connection.close()
            finally:
                _local.loop = None
            # One wake-up of each loop per batch (not one per input, as `concurrent.futures` results
            # awaited through `wrap_future` cost: a lock, a condition and a loop callback each).
            by_loop: dict[asyncio.AbstractEventLoop, tuple[list[_Job], list[Any]]] = {}
            for job, outcome in zip(jobs, outcomes, strict=True):
                entry = by_loop.setdefault(job.loop, ([], []))
                entry[0].append(job)
                entry[1].append(outcome)
            for loop, (batch, results) in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, batch, results)
                except RuntimeError:  # that loop is closed: nobody is waiting there any more
                    pass


class _Checkpointer:
    """SQLite's WAL checkpoints for the input writer, on their own thread and connection: PASSIVE
    (it copies what no reader still needs, and never waits for or blocks a writer or a reader),
    after the writer commits, at most once per `SQLITE_CHECKPOINT_MS`. The writer's connection has
    its automatic checkpoint off; other processes keep theirs."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._due = threading.Event()

    def ensure(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cortex-wal-checkpoint", daemon=True)
                self._thread.start()

    def committed(self) -> None:
        """The writer committed: a checkpoint is due (soon, not in the commit's own call)."""
        self._due.set()

    def _run(self) -> None:
        interval = settings.CORTEX["SQLITE_CHECKPOINT_MS"] / 1000
        failing = False
        while True:
            self._due.wait()
            self._due.clear()
            try:
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                failing = False
            except Exception as exc:  # noqa: BLE001 - retried after the next commit; SQLite's own bound stays
                if not failing:
                    logger.warning("WAL checkpoint failed: %s", exc)
                failing = True
            finally:
                connection.close()
            time.sleep(interval)


_checkpointer = _Checkpointer()
writer = InputWriter()
