"""Wake-ups end to end: the same stack as tests/turns/test_turns_e2e.py, but the turn worker polls
only every 10 minutes (TURN_POLL_MS), so whatever happens within the tests' bounds happened
because a write woke it (`common.wakeups`): the loopback datagram on SQLite, LISTEN/NOTIFY on the
PostgreSQL pass."""

from __future__ import annotations

import httpx2
import pytest

from tests.turns.test_turns_e2e import (
    first_of,
    system,  # noqa: F401 - the same stack, started for this module
    until_end,
)

pytestmark = pytest.mark.e2e

BOUND = 15  # seconds: far below the poll (600 s), far above a wake-up on a loaded machine


@pytest.fixture(scope="module")
def system_env() -> dict[str, str]:
    return {"TURN_POLL_MS": "600000"}


def test_an_input_wakes_the_worker_and_the_next_turn_starts_when_the_first_ends(system):  # noqa: F811
    site, _ = system
    conversation = site.conversation("echo")
    with site.stream("alice") as alice:
        first = site.post("alice", conversation, "one two three")["turn_id"]
        second = site.post("alice", conversation, "four five")["turn_id"]  # queued behind the first
        assert until_end(alice, first, timeout=BOUND)[-1][1]["type"] == "assistant.completed"
        assert until_end(alice, second, timeout=BOUND)[-1][1]["type"] == "assistant.completed"


def test_an_answer_wakes_the_waiting_turn(system):  # noqa: F811
    site, _ = system
    experts = httpx2.get(f"{site.url}/config/workspace/{site.workspace_id}/experts", headers=site.auth("alice"))
    expert = experts.json()["experts"][0]
    patched = httpx2.patch(  # add_note asks again (the stack set it to auto)
        f"{site.url}/config/workspace/{site.workspace_id}/experts/{expert['id']}",
        json={"tool_policy": {}},
        headers=site.auth("alice"),
        timeout=30,
    )
    assert patched.status_code == 200, patched.text
    conversation = site.conversation("llm")
    with site.stream("alice") as alice:
        turn_id = site.post("alice", conversation, "remember milk [tool]")["turn_id"]
        _, asked = first_of(alice, turn_id, "approval.requested", timeout=BOUND)
        answered = httpx2.post(
            f"{site.url}/inbox/{asked['data']['request_id']}/answer",
            json={"decision": "approve"},
            headers=site.auth("alice"),
            timeout=10,
        )
        assert answered.status_code == 200, answered.text
        events = until_end(alice, turn_id, timeout=BOUND)
    assert [event["type"] for _, event in events][:3] == ["approval.resolved", "tool.call", "tool.result"]
    assert events[-1][1]["type"] == "assistant.completed"
