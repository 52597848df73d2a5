"""SIGTERM drains: open streams are ended so their clients resume (WebSocket closed with 1001, SSE
response ended), in-flight inputs finish, and no input that got a 200 is lost: it is in the
database, and, once a core runs again, in memory exactly once. Under load, on uvicorn and daphne."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid

import httpx2
import pytest
from websockets.exceptions import ConnectionClosed

from tests.mcp.conftest import PASSWORD, memory_history, outbox_pending, stack, wait_until
from tests.mcp.test_delivery_e2e import login
from tests.servers import core_server, create_users, running_together
from tests.streaming.clients import SSEStream, websocket

# What a drain does is the servers' part; the database's part (each accepted input stored and
# delivered once) is covered in both passes by tests/mcp/test_delivery_e2e.py. `make test` runs
# this module in its SQLite pass only, on both servers.
pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

WRITERS = 4


def messages_in_database(database: dict[str, str]) -> set[str]:
    query = "SELECT id FROM workspaces_message"
    if database.get("DATABASE_URL"):
        import psycopg

        with psycopg.connect(database["DATABASE_URL"]) as conn:
            rows = conn.execute(query).fetchall()
    else:
        with contextlib.closing(sqlite3.connect(database["SQLITE_PATH"], timeout=20)) as conn:
            rows = conn.execute(query).fetchall()
    return {str(uuid.UUID(str(row[0]))) for row in rows}


# uvicorn (what run_cortex starts) and daphne (`runserver`); SHUTDOWN_SERVERS=uvicorn picks one.
SERVERS = os.environ.get("SHUTDOWN_SERVERS") or "uvicorn,daphne"


@pytest.mark.parametrize("server", SERVERS.split(","))
def test_sigterm_under_load_ends_streams_for_resumption_and_loses_no_accepted_input(server):
    with stack() as services:
        # A drainer killed mid-delivery leaves its claim behind; a short lease frees it soon.
        services.env.update(OUTBOX_LEASE_SECONDS="2", SSE_HEARTBEAT_SECONDS="1")
        emails = [f"writer{n}@example.com" for n in range(WRITERS)]
        create_users(*emails, password=PASSWORD, env=services.env)
        # Memory and the core start together (each a Django start-up); the core is stopped by the test.
        with running_together(services.memory(), core_server(env=services.env, server=server)) as (_, core):
            try:
                tokens, user_ids = zip(*(login(core.url, email) for email in emails), strict=True)
                sse = SSEStream(core.url, token=tokens[0])
                ws = websocket(core.url, token=tokens[0])

                accepted: list[str] = []
                lock = threading.Lock()

                def write(token: str) -> None:
                    with httpx2.Client(
                        base_url=core.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
                    ) as client:
                        for n in range(100_000):
                            try:
                                response = client.post("/input", json={"content": f"load {n}"})
                            except httpx2.TransportError:
                                return  # the server is gone: what got no answer was not accepted
                            if response.status_code != 200:
                                return
                            with lock:
                                accepted.append(response.json()["data"]["id"])

                writers = [threading.Thread(target=write, args=(token,)) for token in tokens]
                for thread in writers:
                    thread.start()
                wait_until(lambda: len(accepted) >= 60, timeout=60, interval=0.02)
                assert sse.event()[1]["type"] == "input", "the SSE stream is live under the load"

                code = core.stop(timeout=30)
                assert code in (0, -15), f"the core drained and exited by itself (code {code})\n{core.log()}"
                for thread in writers:
                    thread.join(timeout=30)

                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        ws.recv(timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
                with pytest.raises(EOFError):  # ended properly (a cut connection raises otherwise)
                    while True:
                        sse.event(timeout=10)
            finally:
                core.stop()

            committed = messages_in_database(services.env)
            assert set(accepted) <= committed, "every input that got a 200 is in the database"

            # After a restart (a core and the outbox worker), memory holds every committed input once.
            with running_together(core_server(env=services.env, server=server), services.worker()):
                wait_until(lambda: outbox_pending(services.env) == 0, timeout=90)
            stored: list[str] = []
            for user_id in user_ids:
                stored += [item["id"] for item in memory_history(services.memory_url, user_id)]
            assert len(stored) == len(set(stored)), "no input reached memory twice"
            assert set(stored) == committed
