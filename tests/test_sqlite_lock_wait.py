"""The embedded default's SQLite backend (`common.db.sqlite3`): a write transaction waits for another
process's write lock in 1 ms steps, up to the connection's timeout as before, and every other
statement keeps SQLite's busy handler."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from django.db import connection, transaction
from django.db.utils import OperationalError

from common.db.sqlite3.base import DatabaseWrapper
from turns.models import Turn


def _sqlite_only() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("the embedded default's backend (PostgreSQL has its own lock waits)")


def _hold_write_lock(release: threading.Event, held: threading.Event) -> None:
    """Another process's writer: the write lock, on a connection of its own, until `release`."""
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=20)
    try:
        other.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        other.execute("ROLLBACK")
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_a_write_transaction_waits_for_another_writer_and_starts_once_it_is_done():
    _sqlite_only()
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(release, held))
    holder.start()
    try:
        assert held.wait(10)
        releaser = threading.Timer(0.3, release.set)
        releaser.start()
        started = time.monotonic()
        with transaction.atomic():
            waited = time.monotonic() - started
            assert Turn.objects.count() == 0  # inside the transaction, with the write lock
        assert waited >= 0.25  # it did wait for the other writer (however slow the machine)
        releaser.join()
    finally:
        release.set()
        holder.join()
    with connection.cursor() as cursor:  # SQLite's own wait is back for every other statement
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == int(1000 * connection.settings_dict["OPTIONS"]["timeout"])


@pytest.mark.django_db(transaction=True)
def test_a_lock_held_past_the_timeout_still_fails_as_database_is_locked():
    _sqlite_only()
    settings_dict = {**connection.settings_dict, "OPTIONS": {**connection.settings_dict["OPTIONS"], "timeout": 0.2}}
    short = DatabaseWrapper(settings_dict, alias="short-timeout")
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(release, held))
    holder.start()
    try:
        assert held.wait(10)
        short.ensure_connection()
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"):
            short._start_transaction_under_autocommit()
        assert time.monotonic() - started >= 0.2
    finally:
        release.set()
        holder.join()
        short.close()
