"""Wake-ups (`common.wakeups`): `wake()` reaches a listening worker's `Wakeups` once the transaction
commits, and never for one rolled back; through a loopback datagram (the embedded default), Redis
pub/sub (REDIS_URL) and PostgreSQL's LISTEN/NOTIFY. The listener runs on its own event loop in a
thread, as in a turn worker; the writes are this test's, through the real database."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from django.db import connection, transaction

from common import wakeups
from common.wakeups import Wakeups, wake
from tests.servers import redis_server

LIVENESS = 15.0  # a bound on a loaded machine, not a timing


class Listener:
    def __init__(self) -> None:
        self.wakeups: Wakeups | None = None
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def count(self) -> int:
        assert self.wakeups is not None
        return self.wakeups.generation

    def until(self, count: int) -> None:
        deadline = time.monotonic() + LIVENESS
        while self.count < count:
            assert time.monotonic() < deadline, f"{self.count} wake-ups, expected {count}"
            time.sleep(0.01)


@contextlib.contextmanager
def listening(topic: str = "turns") -> Iterator[Listener]:
    listener = Listener()

    async def main() -> None:
        listener.loop = asyncio.get_running_loop()
        listener.stop = asyncio.Event()
        listener.wakeups = Wakeups(topic)
        await listener.wakeups.start()
        await asyncio.wait_for(listener.wakeups.listening.wait(), LIVENESS)
        listener.ready.set()
        await listener.stop.wait()
        await listener.wakeups.aclose()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert listener.ready.wait(LIVENESS), "the listener did not start"
    try:
        yield listener
    finally:
        assert listener.loop is not None and listener.stop is not None
        listener.loop.call_soon_threadsafe(listener.stop.set)
        thread.join(LIVENESS)


def rolled_back_then_committed(listener: Listener) -> None:
    """A wake in a transaction that rolls back sends nothing; two in one that commits, one or more
    (one per transaction on our side; a datagram or message is never needed twice)."""
    start = listener.count
    with contextlib.suppress(RuntimeError), transaction.atomic():
        wake()
        raise RuntimeError("rolled back")
    with transaction.atomic():
        wake()
        wake()
        assert listener.count == start  # nothing before the commit
    listener.until(start + 1)
    time.sleep(0.2)  # (only to show nothing else arrives: the rolled-back one never does)
    assert listener.count == start + 1
    wake()  # outside a transaction: at once
    listener.until(start + 2)


@pytest.mark.django_db(transaction=True)
def test_loopback_wakeup_reaches_a_registered_worker_after_commit(settings, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("the embedded default's transport (PostgreSQL uses LISTEN/NOTIFY)")
    settings.CORTEX = {**settings.CORTEX, "TURN_WAKEUPS": "loopback", "TURN_WAKEUP_DIR": str(tmp_path / "wake")}
    with listening() as listener:
        [registration] = list((tmp_path / "wake").iterdir())
        assert registration.name.startswith(f"{__import__('os').getpid()}-")
        rolled_back_then_committed(listener)
    assert list((tmp_path / "wake").iterdir()) == []  # unregistered when it stops


@pytest.mark.django_db(transaction=True)
def test_loopback_registration_of_a_dead_worker_is_pruned(settings, tmp_path):
    settings.CORTEX = {**settings.CORTEX, "TURN_WAKEUPS": "loopback", "TURN_WAKEUP_DIR": str(tmp_path)}
    dead = tmp_path / "999999999-9"  # no such process
    dead.touch()
    with listening():
        assert not dead.exists()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.database_agnostic  # Redis pub/sub
def test_redis_wakeup_reaches_a_subscribed_worker_after_commit(settings):
    with redis_server() as url:
        settings.REDIS_URL = url
        settings.CORTEX = {**settings.CORTEX, "TURN_WAKEUPS": "redis"}
        wakeups._redis_client = None
        try:
            with listening() as listener:
                rolled_back_then_committed(listener)
        finally:
            wakeups._redis_client = None


@pytest.mark.django_db(transaction=True)
def test_postgresql_notify_reaches_a_listening_worker_at_commit(settings):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (the PostgreSQL pass of `make test`)")
    settings.CORTEX = {**settings.CORTEX, "TURN_WAKEUPS": "auto"}
    assert wakeups.transport() == "postgresql"
    with listening() as listener:
        rolled_back_then_committed(listener)


def test_off_sends_nothing(settings):
    settings.CORTEX = {**settings.CORTEX, "TURN_WAKEUPS": "off"}
    assert wakeups.transport() == "off"
    wake()  # no transaction, no database, no error


@pytest.mark.django_db(transaction=True)
def test_a_topics_wakeups_reach_its_own_waiters_only(settings, tmp_path):
    # "outbox": the core's commits wake the memory outbox worker (MEMORY_DRAIN_BY_WORKER), not the
    # turn workers, whose wake-ups it never gets either.
    if connection.vendor == "sqlite":
        settings.CORTEX = {**settings.CORTEX, "TURN_WAKEUPS": "loopback", "TURN_WAKEUP_DIR": str(tmp_path / "wake")}
    else:
        settings.CORTEX = {**settings.CORTEX, "TURN_WAKEUPS": "auto"}
    with listening() as turns, listening("outbox") as outbox:
        before = (turns.count, outbox.count)
        wake(topic="outbox")
        outbox.until(before[1] + 1)
        wake()
        turns.until(before[0] + 1)
        time.sleep(0.2)  # (only to show nothing else arrives)
        assert (turns.count, outbox.count) == (before[0] + 1, before[1] + 1)
