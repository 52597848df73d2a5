"""Schedules wake the turn workers instead of being polled: with SCHEDULE_POLL_MS (and TURN_POLL_MS)
at ten minutes, a schedule due in about 2 s runs within seconds of its due time, once, with two
real `manage.py turn_worker` processes. The workers sleep until the earliest `next_run_at`; the
change that makes it earlier wakes them (`common.wakeups`: a loopback datagram on SQLite, NOTIFY on
PostgreSQL), so they read it again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx2
import pytest

from tests.schedules.test_schedules_e2e import _make_due, schedules_site
from tests.streaming.clients import SSEStream

pytestmark = pytest.mark.e2e

TEN_MINUTES_MS = "600000"
ENV = {
    "LOG_LEVEL": "WARNING",
    "SSE_HEARTBEAT_SECONDS": "1",
    "MEMORY_DRAIN_ON_COMMIT": "0",
    "TURN_POLL_MS": TEN_MINUTES_MS,
    "SCHEDULE_POLL_MS": TEN_MINUTES_MS,
    "ECHO_DELAY_MS": "10",
}


@pytest.fixture(scope="module")
def site() -> Iterator[dict]:
    with schedules_site(ENV) as running_site:
        yield running_site


def test_a_schedule_due_in_two_seconds_runs_at_its_time_without_polling(site):
    url, auth = site["url"], site["auth"]
    workspace = httpx2.post(f"{url}/config/workspace", json={"name": "W"}, headers=auth).json()["workspace"]
    conversation = httpx2.post(
        f"{url}/config/conversation",
        json={"workspace_id": workspace["id"], "topic": "daily", "responder": "echo"},
        headers=auth,
    ).json()["conversation"]
    created = httpx2.post(
        f"{url}/schedules",
        json={"conversation_id": conversation["id"], "content": "first", "cron": "0 8 * * 1-5", "timezone": "UTC"},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    schedule = created.json()["schedule"]
    with SSEStream(url, token=site["token"]) as stream:
        # A cron's finest step is a minute: the due time is set in the database (which wakes
        # nobody), then a change through the API (which wakes the workers) makes them read it.
        due = datetime.now(UTC) + timedelta(seconds=2)
        _make_due(site["db"], schedule["id"], due)
        changed = httpx2.patch(f"{url}/schedules/{schedule['id']}", json={"content": "on time"}, headers=auth)
        assert changed.status_code == 200, changed.text
        types: list[str] = []
        the_input = None
        deadline = time.monotonic() + 20  # a liveness bound; the poll alone would take ten minutes
        while not types or types[-1] != "assistant.completed":
            assert time.monotonic() < deadline, types
            _, event = stream.event(timeout=deadline - time.monotonic())
            types.append(event["type"])
            if event["type"] == "input":
                the_input = event
    assert the_input is not None and the_input["data"]["metadata"] == {"schedule_id": schedule["id"]}
    ran_at = datetime.fromisoformat(the_input["timestamp"].replace("Z", "+00:00"))
    print(f"\ndue {due.isoformat()}, input at {ran_at.isoformat()}: {(ran_at - due).total_seconds():.3f} s late")
    assert ran_at >= due.replace(microsecond=0)
    assert (ran_at - due).total_seconds() < 15  # the fallback poll is ten minutes away
    messages = httpx2.get(f"{url}/messages", params={"conversation_id": conversation["id"]}, headers=auth).json()
    inputs = [m for m in messages["messages"] if m["author"] == "user"]
    assert [(m["content"], m["metadata"]) for m in inputs] == [("on time", {"schedule_id": schedule["id"]})]
    after = httpx2.get(f"{url}/schedules/{schedule['id']}", headers=auth).json()["schedule"]
    assert after["last_input_id"] == the_input["data"]["id"] and after["next_run_at"] > after["last_run_at"]
