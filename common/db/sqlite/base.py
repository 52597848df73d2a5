"""Django's SQLite backend with one cross-process write turn per database file.

Several processes and threads write the embedded default's one SQLite file (the core's input writer
and its other threads, the turn worker's two database threads, the memory service, the outbox...).
SQLite lets one write at a time, and a connection that finds the write lock taken sleeps in SQLite's
busy handler: 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between tries, whatever the holder
does, so a writer that could have started the moment the holder committed sleeps on for up to the
rest of its current step.

Here the outermost write transaction of every connection first takes an exclusive `flock` on a file
beside the database (`<name>.writeturn`), then runs `BEGIN IMMEDIATE`, and lets the file go as soon
as the transaction has committed or rolled back (or the connection closed). A waiter is woken by the
kernel when the holder lets go, not at SQLite's next back-off. `flock` (not `fcntl`/`lockf` record
locks, which belong to the process and would not separate two of its threads) belongs to the open
file description: each connection opens the file itself, so two threads of one process take turns
too, and a process that dies (even by SIGKILL) lets go with its descriptors.

- The wait keeps the meaning of the connection's `timeout` (settings: 20 s): a wait that passes it
  ends in `OperationalError("database is locked")`, as SQLite's own does. A blocking `flock` has no
  timeout, so the blocked call runs on a waiter thread (`_Waiters`, kept and reused) while the
  connection's thread waits for it with the timeout; a wait given up hands its descriptor to the
  waiter thread, which closes it (letting the turn go at once if it got it). An uncontended turn is
  one non-blocking `flock` call, no thread.
- SQLite's lock stays the authority: the turn only orders the project's own writers. Anything else
  that writes the file (a plain `sqlite3` connection, the `sqlite3` shell) meets SQLite's busy
  handler as before, and so does the holder's `BEGIN IMMEDIATE` against it (with what is left of the
  timeout).
- Nested atomics (savepoints) take nothing more. A write statement outside any transaction (Django's
  autocommit `save()`/`update()`/`delete()` of one table) takes the turn for that statement.
- `set_autocommit(False)` without `atomic` (SQLite's own deferred transactions) is not covered: the
  project does not use it, and it still meets SQLite's busy handler.
- In-memory databases and `OPTIONS["write_turn"]` False (settings: `SQLITE_WRITE_TURN=0`; on by
  default) run Django's backend unchanged.

`BENCH_LOCK_TRACE=<path>`: every write transaction appends one line to `<path>.<pid>` (the turn's
wait, `BEGIN IMMEDIATE`'s wait, the body, the thread and the project's frame that opened it);
summary: `.venv/bin/python -m bench.lock_trace <path>`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3 as Database
import threading
import time
from typing import Any

from django.db.backends.sqlite3 import base as sqlite3_base

_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class _Wait:
    """One blocking `flock` on a waiter thread; `fd` is the waiter's until it hands it back."""

    __slots__ = ("abandoned", "done", "error", "fd", "lock")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
        with self.lock:
            if not self.abandoned:
                self.done.set()
                return
        os.close(self.fd)  # given up meanwhile: the turn (if taken) goes with the descriptor

    def abandon(self) -> bool:
        """The connection stops waiting. True: too late, the turn was taken (the caller keeps it)."""
        with self.lock:
            if self.done.is_set():
                return True
            self.abandoned = True
            return False


class _Waiters:
    """Threads that block in `flock` for waiting connections, kept and reused (idle ones cost a
    stack; there are at most as many as waits that ever ran at once in the process)."""

    def __init__(self) -> None:
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def start(self, wait: _Wait) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            import queue

            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="sqlite-write-turn", daemon=True).start()
        inbox.put(wait)

    def _serve(self, inbox: Any) -> None:
        while True:
            wait = inbox.get()
            wait.run()
            with self._lock:
                self._idle.append(inbox)

    def _after_fork(self) -> None:  # the parent's threads do not exist in a child
        self._idle = []
        self._lock = threading.Lock()


_waiters = _Waiters()
os.register_at_fork(after_in_child=_waiters._after_fork)


class WriteTurn:
    """One connection's handle on the database's write turn (see the module docstring)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self.held = False
        self.waited = 0.0  # seconds the last acquire() waited (0: uncontended)

    def acquire(self) -> None:
        if self.held:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            self.held = True
            self.waited = 0.0
            return
        started = time.monotonic()
        wait = _Wait(self._fd)
        self._fd = None  # the waiter's until it is done
        _waiters.start(wait)
        if wait.done.wait(self.timeout) or wait.abandon():
            self._fd = wait.fd
            if wait.error is not None:
                os.close(self._fd)
                self._fd = None
                raise Database.OperationalError(f"database write turn: {wait.error}") from wait.error
            self.held = True
            self.waited = time.monotonic() - started
            return
        raise Database.OperationalError("database is locked")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
        except OSError as exc:  # never expected; closing the descriptor lets the turn go anyway
            if exc.errno != errno.EBADF:
                self.close()

    def close(self) -> None:
        self.held = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class _Trace:
    """`BENCH_LOCK_TRACE`: one line per write transaction (see the module docstring)."""

    def __init__(self, path: str) -> None:
        import sys

        self._out = open(f"{path}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 - for the process's life
        role = " ".join(os.path.basename(arg) for arg in sys.argv[:3])
        self._out.write(f"# pid={os.getpid()} argv={role}\n")
        self._lock = threading.Lock()

    @staticmethod
    def site() -> str:
        import sys

        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if "/django/" not in name and "/common/db/" not in name and "/contextlib" not in name:
                return f"{os.path.basename(name)}:{frame.f_code.co_name}"
            frame = frame.f_back  # type: ignore[assignment]
        return "?"

    def write(self, kind: str, site: str, t0: float, t1: float, t2: float, t3: float, outcome: str) -> None:
        # t0 asked, t1 turn taken, t2 BEGIN returned (SQLite's lock), t3 ended (perf_counter, shared by processes)
        line = (
            f"{kind} {t0:.6f} {(t1 - t0) * 1000:.3f} {(t2 - t1) * 1000:.3f} {(t3 - t2) * 1000:.3f} "
            f"{outcome} {threading.current_thread().name.replace(' ', '_')} {site}\n"
        )
        with self._lock:
            self._out.write(line)


_trace: _Trace | None = _Trace(os.environ["BENCH_LOCK_TRACE"]) if os.environ.get("BENCH_LOCK_TRACE") else None


class SQLiteCursorWrapper(sqlite3_base.SQLiteCursorWrapper):
    """A write statement outside any transaction takes the write turn for that statement."""

    write_turn: WriteTurn | None = None

    def execute(self, query: str, params: Any = None) -> Any:
        turn = self.write_turn
        if (turn is None and _trace is None) or self.connection.in_transaction or not _writes(query):
            return super().execute(query, params)
        return _with_turn(turn, lambda: super(SQLiteCursorWrapper, self).execute(query, params))

    def executemany(self, query: str, param_list: Any) -> Any:
        turn = self.write_turn
        if (turn is None and _trace is None) or self.connection.in_transaction or not _writes(query):
            return super().executemany(query, param_list)
        return _with_turn(turn, lambda: super(SQLiteCursorWrapper, self).executemany(query, param_list))


def _writes(query: str) -> bool:
    return query.lstrip()[:7].upper().startswith(_WRITE_VERBS)


def _with_turn(turn: WriteTurn | None, run: Any) -> Any:
    """One write statement outside a transaction, holding the turn (`turn` None: traced only)."""
    taking = turn is not None and not turn.held
    if _trace is None:
        if not taking:
            return run()
        turn.acquire()  # type: ignore[union-attr]
        try:
            return run()
        finally:
            turn.release()  # type: ignore[union-attr]
    site = _trace.site()
    t0 = time.perf_counter()
    if taking:
        turn.acquire()  # type: ignore[union-attr]
    t1 = time.perf_counter()
    outcome = "error"
    try:
        result = run()
        outcome = "ok"
        return result
    finally:
        if taking:
            turn.release()  # type: ignore[union-attr]
        _trace.write("stmt", site, t0, t1, t1, time.perf_counter(), outcome)


class DatabaseWrapper(sqlite3_base.DatabaseWrapper):
    """Django's SQLite backend; the outermost write transaction holds the file's write turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_turn: WriteTurn | None = None
        self._trace_open: tuple[str, float, float, float] | None = None

    def get_connection_params(self) -> dict[str, Any]:
        options = self.settings_dict["OPTIONS"]
        self.write_turn_on = bool(options.get("write_turn", True))
        kwargs = super().get_connection_params()
        kwargs.pop("write_turn", None)
        self.turn_timeout = float(kwargs.get("timeout", 5.0))
        return kwargs

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if self._write_turn is not None:
            self._write_turn.close()
            self._write_turn = None
        if self.write_turn_on and not self.is_in_memory_db():
            self._write_turn = WriteTurn(f"{self.settings_dict['NAME']}.writeturn", self.turn_timeout)
        return connection

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=SQLiteCursorWrapper)
        cursor.write_turn = self._write_turn
        return cursor

    def _start_transaction_under_autocommit(self) -> None:
        turn = self._write_turn
        if turn is None:
            if _trace is not None:
                t0 = time.perf_counter()
                super()._start_transaction_under_autocommit()  # type: ignore[misc]  # not in django-stubs
                self._trace_open = (_trace.site(), t0, t0, time.perf_counter())
                return
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # not in django-stubs
            return
        t0 = time.perf_counter() if _trace is not None else 0.0
        with self.wrap_database_errors:  # django.db.OperationalError, as SQLite's own "database is locked"
            turn.acquire()
        t1 = time.perf_counter() if _trace is not None else 0.0
        try:
            if turn.waited > 0.5:  # SQLite's own wait (for writers outside the turn) gets what is left
                left = max(0.001, self.turn_timeout - turn.waited)
                self.connection.execute(f"PRAGMA busy_timeout = {int(left * 1000)}")
                try:
                    super()._start_transaction_under_autocommit()  # type: ignore[misc]  # not in django-stubs
                finally:
                    self.connection.execute(f"PRAGMA busy_timeout = {int(self.turn_timeout * 1000)}")
            else:
                super()._start_transaction_under_autocommit()  # type: ignore[misc]  # not in django-stubs
        except BaseException:
            turn.release()
            raise
        if _trace is not None:
            self._trace_open = (_trace.site(), t0, t1, time.perf_counter())

    def _turn_ended(self, outcome: str) -> None:
        """The transaction is over (SQLite's own lock is gone): the turn goes to the next writer."""
        if self.connection is not None and self.connection.in_transaction:
            return  # a failed COMMIT: the rollback that follows ends it
        if self._write_turn is not None:
            self._write_turn.release()
        if _trace is not None and self._trace_open is not None:
            site, t0, t1, t2 = self._trace_open
            self._trace_open = None
            _trace.write("tx", site, t0, t1, t2, time.perf_counter(), outcome)

    def _commit(self) -> Any:
        outcome = "error"
        try:
            result = super()._commit()  # type: ignore[misc]  # not in django-stubs
            outcome = "commit"
            return result
        finally:
            self._turn_ended(outcome)

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]  # not in django-stubs
        finally:
            self._turn_ended("rollback")

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]  # not in django-stubs
        finally:
            if self._write_turn is not None:
                self._write_turn.close()
                self._write_turn = None
            self._trace_open = None
