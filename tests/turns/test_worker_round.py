"""The turn worker's round (the read before the claim, the claim) does not wait for the running turns'
database work: a turn made due while the turns' database thread is busy (a write of a turn that just
ended, on a loaded machine) is claimed at its wake-up, not after that work. A real `TurnWorker` on its
own event loop in a thread, against the real database; the poll is 10 minutes, so only the wake-up
can start the turn."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from django.db import connection

from tests.factories import ConversationFactory
from turns import worker as turn_worker
from turns.models import Turn
from workspaces.services import InputRequest, messages_create

LIVENESS = 15.0  # a bound on a loaded machine, not a timing


def until(condition, what: str) -> None:
    deadline = time.monotonic() + LIVENESS
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_a_turn_made_due_while_the_turns_database_thread_is_busy_is_claimed_at_its_wakeup(
    alice, bob, workspace, settings, tmp_path
):
    settings.CORTEX = {
        **settings.CORTEX,
        "TURN_WAKEUPS": "auto",  # loopback on SQLite, LISTEN/NOTIFY on PostgreSQL
        "TURN_WAKEUP_DIR": str(tmp_path / "wake"),
        "TURN_POLL_MS": 600_000,
        "CORE_URL": "",
    }
    echo = ConversationFactory(workspace=workspace, topic="T", participants=[bob], responder="echo")
    worker = turn_worker.TurnWorker(owner="round-test")
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    started = threading.Event()
    busy = threading.Event()  # the turns' database thread is held
    release = threading.Event()

    def hold() -> None:  # sync work on the turns' thread, holding no database lock
        busy.set()
        release.wait(LIVENESS)

    async def main() -> None:
        nonlocal loop, stop
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(worker.wakeups.listening.wait(), LIVENESS)
        started.set()
        await running

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        assert started.wait(LIVENESS), "the worker did not start listening"
        assert loop is not None and stop is not None
        asyncio.run_coroutine_threadsafe(turn_worker.db(hold)(), loop)
        assert busy.wait(LIVENESS), "the turns' database thread did not take the held call"

        [outcome] = messages_create(requests=[InputRequest(sender=alice, content="q", conversation_id=echo.id)])
        turn_id = uuid.UUID(outcome[0]["turn_id"])  # its transaction woke the worker as it committed
        until(
            lambda: Turn.objects.filter(id=turn_id, status=Turn.Status.RUNNING, lease_owner="round-test").exists(),
            "the due turn was not claimed while the turns' database thread was busy",
        )
        assert not release.is_set()  # still held: the claim did not wait for it

        release.set()  # the turn's own writes go on, and it ends
        until(
            lambda: Turn.objects.filter(id=turn_id, status=Turn.Status.COMPLETED).exists(),
            "the turn did not complete once the thread was free",
        )
    finally:
        release.set()
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(LIVENESS)
        connection.close()
