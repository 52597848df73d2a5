"""Django's SQLite backend, waiting for the write lock in 1 ms steps (`ENGINE` of the embedded default).

Every write transaction here is `BEGIN IMMEDIATE` (settings: the core, the turn and memory workers
share one file). When another process holds the write lock, SQLite's own busy handler sleeps 1, 2,
5, 10, 15, 20, 25, 25, 25, 50, 50 and then 100 ms between attempts: a writer that waited more than
8 ms wakes up to 25-100 ms after the lock was freed. Measured on the inbox's answer → `tool.call`
chain (issue 29): the answer's transaction and the worker's claim each waited so behind the other
process's commits. Here `BEGIN IMMEDIATE` is tried without SQLite's wait, and again every
`LOCK_POLL_SECONDS` until the connection's `timeout` (the same bound as before); every other
statement keeps SQLite's busy handler.
"""

from __future__ import annotations

import sqlite3
import time

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    LOCK_POLL_SECONDS = 0.001

    def _start_transaction_under_autocommit(self) -> None:
        if getattr(self, "transaction_mode", None) != "IMMEDIATE":
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
            return
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        raw = self.connection
        deadline = time.monotonic() + timeout
        with self.wrap_database_errors:  # raised as Django's OperationalError, like the original's
            raw.execute("PRAGMA busy_timeout = 0")
            try:
                while True:
                    try:
                        raw.execute("BEGIN IMMEDIATE")
                        return
                    except sqlite3.OperationalError as exc:
                        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                            raise
                    time.sleep(self.LOCK_POLL_SECONDS)
            finally:
                raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
