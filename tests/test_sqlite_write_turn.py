"""The SQLite backend's write turn (`common/db/sqlite/base.py`): real SQLite files, real connections
in threads and in other processes, real `flock`s (observed in /proc/locks). No timing asserts: each
test waits for a condition (a waiter blocked on the turn, a row committed), with generous bounds."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError, connections, transaction
from django.db.utils import load_backend

# Run in the SQLite pass only: SQLite's own write turn, on SQLite files whatever the pass.
pytestmark = pytest.mark.database_agnostic

ENGINE = "common.db.sqlite"
ROOT = Path(__file__).resolve().parent.parent


def _wait_for(condition: Callable[[], Any], what: str, limit: float = 15.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.01)
    raise AssertionError(f"not within {limit} s: {what}")


def _blocked_on_turn(path: Path) -> int:
    """Waiters blocked in `flock` on the database's turn file (/proc/locks' `->` lines)."""
    inode = os.stat(f"{path}.writeturn").st_ino
    with open("/proc/locks") as locks:
        return sum(1 for line in locks if " -> FLOCK " in line and line.split()[6].endswith(f":{inode}"))


def _turn_free(path: Path) -> bool:
    """Nobody holds the turn (a non-blocking try on our own descriptor succeeds, then lets go)."""
    fd = os.open(f"{path}.writeturn", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # lets go of the try's lock too
    return True


@pytest.fixture
def database(tmp_path: Path, django_db_blocker: Any) -> Iterator[Path]:
    path = tmp_path / "turn.sqlite3"
    with django_db_blocker.unblock():
        with _connection(path) as wrapper, wrapper.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, who TEXT)")
        yield path


@contextlib.contextmanager
def _connection(path: Path, alias: str = "turn", **options: Any) -> Iterator[Any]:
    """A connection of the project's backend on `path`, as `connections[alias]` in this thread."""
    settings = {"ENGINE": ENGINE, "NAME": str(path), "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}}
    settings["OPTIONS"].update(options)
    config = connections.configure_settings({"default": settings})["default"]
    wrapper = load_backend(ENGINE).DatabaseWrapper(config, alias)
    setattr(connections._connections, alias, wrapper)
    try:
        yield wrapper
    finally:
        wrapper.close()
        delattr(connections._connections, alias)


def _rows(path: Path) -> list[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as plain:
        return [who for (who,) in plain.execute("SELECT who FROM item ORDER BY id")]


class _Holder:
    """A thread that holds a write transaction (the turn) until told to commit or roll back."""

    def __init__(self, path: Path, *, fail: bool = False) -> None:
        self.path = path
        self.fail = fail
        self.holding = threading.Event()
        self.go = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.holding.wait(15), "the holder did not start its transaction"

    def _run(self) -> None:
        try:
            with _connection(self.path) as wrapper, contextlib.suppress(RuntimeError):
                with transaction.atomic(using="turn"):
                    wrapper.cursor().execute("INSERT INTO item (who) VALUES ('holder')")
                    self.holding.set()
                    self.go.wait(30)
                    if self.fail:
                        raise RuntimeError("rolled back")
        finally:
            self.holding.set()
            self.done.set()

    def finish(self) -> None:
        self.go.set()
        self.thread.join(15)


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _write_in_own_connection(path: Path, who: str, *, atomic: bool = True, **options: Any) -> Callable[[], None]:
    def work() -> None:
        with _connection(path, **options) as wrapper:
            if atomic:
                with transaction.atomic(using="turn"):
                    wrapper.cursor().execute("INSERT INTO item (who) VALUES (%s)", [who])
            else:  # autocommit: one statement, no transaction of Django's
                wrapper.cursor().execute("INSERT INTO item (who) VALUES (%s)", [who])

    return work


def test_a_second_writer_waits_on_the_turn_and_writes_after_the_first_commits(database: Path) -> None:
    holder = _Holder(database)
    assert not _turn_free(database)
    waiter, outcome = _in_thread(_write_in_own_connection(database, "waiter"))
    # The waiter sleeps in flock (woken by the holder's commit), not in SQLite's busy handler.
    _wait_for(lambda: _blocked_on_turn(database) == 1, "the second writer blocked on the turn")
    assert _rows(database) == []
    holder.finish()
    waiter.join(15)
    assert "error" not in outcome, outcome
    assert _rows(database) == ["holder", "waiter"]
    assert _turn_free(database)


def test_a_write_statement_outside_a_transaction_takes_the_turn(database: Path) -> None:
    holder = _Holder(database)
    waiter, outcome = _in_thread(_write_in_own_connection(database, "autocommit", atomic=False))
    _wait_for(lambda: _blocked_on_turn(database) == 1, "the autocommit write blocked on the turn")
    holder.finish()
    waiter.join(15)
    assert "error" not in outcome, outcome
    assert _rows(database) == ["holder", "autocommit"]
    assert _turn_free(database)


def test_the_turn_is_let_go_after_a_rollback_and_after_close(database: Path) -> None:
    holder = _Holder(database, fail=True)
    assert not _turn_free(database)
    holder.finish()
    assert holder.done.wait(15)
    assert _turn_free(database)
    assert _rows(database) == []

    with _connection(database) as wrapper:
        with pytest.raises(ZeroDivisionError), transaction.atomic(using="turn"):
            wrapper.cursor().execute("INSERT INTO item (who) VALUES ('raised')")
            assert not _turn_free(database)
            1 / 0  # noqa: B018
        assert _turn_free(database)
        with transaction.atomic(using="turn"):
            wrapper.cursor().execute("INSERT INTO item (who) VALUES ('closed')")
            wrapper.close()  # inside the transaction: the rollback is SQLite's, the turn goes too
            assert _turn_free(database)
    assert _rows(database) == []


def test_nested_atomics_take_nothing_more(database: Path) -> None:
    def nested() -> bool:
        with _connection(database) as wrapper, transaction.atomic(using="turn"):
            wrapper.cursor().execute("INSERT INTO item (who) VALUES ('outer')")
            with transaction.atomic(using="turn"):
                wrapper.cursor().execute("INSERT INTO item (who) VALUES ('inner')")
                with contextlib.suppress(ValueError), transaction.atomic(using="turn"):
                    wrapper.cursor().execute("INSERT INTO item (who) VALUES ('undone')")
                    raise ValueError
            still_held = not _turn_free(database)
        return still_held and _turn_free(database)

    thread, outcome = _in_thread(nested)
    thread.join(15)
    assert not thread.is_alive(), "a nested atomic waited for its own turn"
    assert outcome == {"value": True}
    assert _rows(database) == ["outer", "inner"]


def test_a_wait_past_the_timeout_is_database_is_locked(database: Path) -> None:
    holder = _Holder(database)
    waiter, outcome = _in_thread(_write_in_own_connection(database, "late", timeout=0.3))
    waiter.join(15)
    assert isinstance(outcome.get("error"), OperationalError), outcome
    assert str(outcome["error"]) == "database is locked"
    assert not holder.done.is_set()
    holder.finish()
    # The given-up wait's descriptor is closed by its waiter thread once it gets the turn: free again.
    _wait_for(lambda: _turn_free(database), "the turn free after the holder's commit")
    assert _rows(database) == ["holder"]


def test_two_threads_of_one_process_take_turns(database: Path) -> None:
    """flock belongs to the open file description: two connections of one process exclude each other
    (record locks would not), and every transaction of several writers commits."""

    def writes(who: str) -> Callable[[], None]:
        def work() -> None:
            with _connection(database) as wrapper:
                for n in range(30):
                    with transaction.atomic(using="turn"):
                        cursor = wrapper.cursor()
                        cursor.execute("SELECT count(*) FROM item")
                        (count,) = cursor.fetchone()
                        cursor.execute("INSERT INTO item (who) VALUES (%s)", [f"{who}{n}:{count}"])

        return work

    threads = [_in_thread(writes(name)) for name in ("a", "b", "c")]
    for thread, outcome in threads:
        thread.join(30)
        assert "error" not in outcome, outcome
    rows = _rows(database)
    assert len(rows) == 90
    assert sorted(int(row.split(":")[1]) for row in rows) == list(range(90))  # each saw all before it
    assert _turn_free(database)


_HOLDER_PROCESS = textwrap.dedent(
    """
    import sys
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": {
        "ENGINE": "common.db.sqlite", "NAME": sys.argv[1],
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}}})
    django.setup()
    from django.db import connection, transaction

    with transaction.atomic():
        connection.cursor().execute("INSERT INTO item (who) VALUES ('process')")
        print("holding", flush=True)
        sys.stdin.readline()  # until told (or killed)
    print("committed", flush=True)
    """
)


@contextlib.contextmanager
def _holder_process(path: Path) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_PROCESS, str(path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "holding"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(15)


@pytest.mark.e2e
def test_a_writer_in_another_process_waits_for_the_holders_commit(database: Path) -> None:
    with _holder_process(database) as process:
        waiter, outcome = _in_thread(_write_in_own_connection(database, "here"))
        _wait_for(lambda: _blocked_on_turn(database) == 1, "this process's writer blocked on the turn")
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "committed"
        waiter.join(15)
    assert "error" not in outcome, outcome
    assert _rows(database) == ["process", "here"]


@pytest.mark.e2e
def test_a_holder_killed_with_sigkill_frees_the_turn(database: Path) -> None:
    with _holder_process(database) as process:
        waiter, outcome = _in_thread(_write_in_own_connection(database, "after the kill"))
        _wait_for(lambda: _blocked_on_turn(database) == 1, "this process's writer blocked on the turn")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(15)
        waiter.join(15)
    assert "error" not in outcome, outcome
    assert _rows(database) == ["after the kill"]  # the killed transaction never committed
    assert _turn_free(database)


def test_the_turn_off_is_djangos_backend(database: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{database}.writeturn")
    with _connection(database, write_turn=False) as wrapper, transaction.atomic(using="turn"):
        wrapper.cursor().execute("INSERT INTO item (who) VALUES ('plain')")
    assert not os.path.exists(f"{database}.writeturn")
    assert _rows(database) == ["plain"]
