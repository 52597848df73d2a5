"""A schedule end to end: a real core (uvicorn), two real `manage.py turn_worker` processes that
both claim due schedules, a real SSE client. The schedule is made due in about 2 s (its
`next_run_at` set in the servers' database: a cron's finest step is a minute); it must run once,
as its owner's input, and its turn must answer."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from tests.servers import core_server, create_users, fresh_database, manage_command, running_together, server_env
from tests.streaming.clients import SSEStream, login

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery-staple"
ENV = {
    "LOG_LEVEL": "WARNING",
    "SSE_HEARTBEAT_SECONDS": "1",
    "MEMORY_DRAIN_ON_COMMIT": "0",
    "TURN_POLL_MS": "50",
    "SCHEDULE_POLL_MS": "100",
    "ECHO_DELAY_MS": "10",
}


def turn_worker(env: dict[str, str]):
    return manage_command("turn_worker", env=env, port=0, ready_line="turn worker: running")


@contextlib.contextmanager
def schedules_site(settings: dict[str, str]) -> Iterator[dict]:
    """A core and two turn workers on a fresh database, alice signed in."""
    with fresh_database() as db_env:
        env = server_env(**db_env, **settings)
        core = core_server(env=env)
        worker_env = {**env, "CORTEX_CORE_URL": core.url}
        with running_together(
            core,
            turn_worker(worker_env),
            turn_worker(worker_env),
            meanwhile=lambda: create_users("alice@example.com", password=PASSWORD, env=env),
        ):
            token = login(core.url, "alice@example.com", PASSWORD)
            auth = {"Authorization": f"Bearer {token}"}
            yield {"url": core.url, "db": db_env, "token": token, "auth": auth}


@pytest.fixture(scope="module")
def site() -> Iterator[dict]:
    with schedules_site(ENV) as running_site:
        yield running_site


def _make_due(db_env: dict[str, str], schedule_id: str, at: datetime) -> None:
    """Test setup in the servers' own database (no process to start): the row's next due time."""
    if "DATABASE_URL" in db_env:
        import psycopg

        with psycopg.connect(db_env["DATABASE_URL"], autocommit=True) as connection:
            connection.execute(
                "UPDATE schedules_schedule SET next_run_at = %s WHERE id = %s", (at, uuid.UUID(schedule_id))
            )
        return
    with sqlite3.connect(db_env["SQLITE_PATH"], timeout=20) as connection:
        connection.execute(
            "UPDATE schedules_schedule SET next_run_at = ? WHERE id = ?",
            (at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), uuid.UUID(schedule_id).hex),
        )


def test_a_schedule_due_in_two_seconds_runs_once_with_two_workers(site):
    url, auth = site["url"], site["auth"]
    workspace = httpx2.post(f"{url}/config/workspace", json={"name": "W"}, headers=auth).json()["workspace"]
    conversation = httpx2.post(
        f"{url}/config/conversation",
        json={"workspace_id": workspace["id"], "topic": "daily", "responder": "echo"},
        headers=auth,
    ).json()["conversation"]
    created = httpx2.post(
        f"{url}/schedules",
        json={
            "conversation_id": conversation["id"],
            "content": "summarise my open tickets",
            "cron": "0 8 * * 1-5",
            "timezone": "Europe/Berlin",
        },
        headers=auth,
    )
    assert created.status_code == 201, created.text
    schedule = created.json()["schedule"]
    with SSEStream(url, token=site["token"]) as stream:
        due = datetime.now(UTC) + timedelta(seconds=2)
        _make_due(site["db"], schedule["id"], due)
        events: list[tuple[str | None, dict]] = []
        deadline = time.monotonic() + 30
        while not events or events[-1][1]["type"] != "assistant.completed":
            assert time.monotonic() < deadline, [event["type"] for _, event in events]
            events.append(stream.event(timeout=deadline - time.monotonic()))
    print("\nA schedule's events across a run (alice's stream):")
    for event_id, event in events:
        print(f"id: {event_id}\ndata: {json.dumps(event)}")
    types = [event["type"] for _, event in events]
    assert types[0] == "input" and types[1] == "assistant.started" and types[-1] == "assistant.completed"
    the_input = events[0][1]
    assert the_input["data"]["metadata"] == {"schedule_id": schedule["id"]}
    assert the_input["data"]["content"] == "summarise my open tickets"
    assert datetime.fromisoformat(the_input["timestamp"].replace("Z", "+00:00")) >= due.replace(microsecond=0)
    assert events[-1][1]["data"]["content"] == "summarise my open tickets"
    # Both workers have had many polls since: still exactly one input for this due time.
    messages = httpx2.get(f"{url}/messages", params={"conversation_id": conversation["id"]}, headers=auth).json()
    inputs = [m for m in messages["messages"] if m["author"] == "user"]
    assert [m["metadata"] for m in inputs] == [{"schedule_id": schedule["id"]}]
    after = httpx2.get(f"{url}/schedules/{schedule['id']}", headers=auth).json()["schedule"]
    assert after["last_input_id"] == the_input["data"]["id"] and after["next_run_at"] > after["last_run_at"]
