"""The inbox end to end: a real core (uvicorn), a real `manage.py turn_worker`, the notes expert as a
real process, the fake model (tests/fake_llm.py), and two devices of one user (two logins, two
streams): a turn asks on one and is answered from the other.

`add_note` is not read-only, so it asks (the default); `delete_note` asks its question with the
2026-07-28 `input_required` form and is set to `auto` here, so the question comes alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from tests.experts.conftest import recording_expert
from tests.servers import ServerProcess
from tests.streaming.clients import login
from tests.turns.test_turns_e2e import (
    PASSWORD,
    Site,
    first_of,
    system,  # noqa: F401 - the same stack, started for this module
    until_end,
)

pytestmark = pytest.mark.e2e

# Long enough for a worker to be killed and restarted on a loaded machine; the expiry test's turn
# is started first (`expiring`) and waits while the other tests run.
APPROVAL_SECONDS = 45
READY = "turn worker: running"


@pytest.fixture(scope="module")
def system_env() -> dict[str, str]:
    return {"TURN_APPROVAL_SECONDS": str(APPROVAL_SECONDS), "INBOX_MAX_OPEN_PER_USER": "50"}


@pytest.fixture(scope="module")
def stack(system) -> Iterator[tuple[Site, ServerProcess]]:  # noqa: F811 - the fixture imported above
    site, worker = system
    # A second device of alice: its own login, its own token.
    site.tokens["alice2"] = login(site.url, "alice@example.com", PASSWORD)
    experts = httpx2.get(f"{site.url}/config/workspace/{site.workspace_id}/experts", headers=site.auth("alice"))
    expert = experts.json()["experts"][0]
    patched = httpx2.patch(
        f"{site.url}/config/workspace/{site.workspace_id}/experts/{expert['id']}",
        json={"tool_policy": {"delete_note": "auto"}},
        headers=site.auth("alice"),
        timeout=30,
    )
    assert patched.status_code == 200, patched.text
    policies = {tool["name"]: tool["policy"] for tool in patched.json()["expert"]["tools"]}
    assert policies == {"add_note": "ask", "search_notes": "auto", "get_note": "auto", "delete_note": "auto"}
    yield site, worker


@pytest.fixture
def site(stack) -> Site:
    return stack[0]


@pytest.fixture(scope="module")
def expiring(stack) -> tuple[str, str, str]:
    """A turn left unanswered from the module's start: (turn_id, request_id, the stream position before it)."""
    site = stack[0]
    conversation = site.conversation("llm")
    with site.stream("alice") as laptop:
        turn_id = site.post("alice", conversation, "remember milk [tool]")["turn_id"]
        before = None
        while True:
            event_id, event = laptop.event(timeout=20)
            if event.get("data", {}).get("turn_id") == turn_id and event["type"] == "assistant.started":
                break
            before = event_id
        _, asked = first_of(laptop, turn_id, "approval.requested")
    return turn_id, asked["data"]["request_id"], before or "0"


def answer(site: Site, who: str, request_id: str, body: dict) -> httpx2.Response:
    return httpx2.post(f"{site.url}/inbox/{request_id}/answer", json=body, headers=site.auth(who), timeout=10)


def inbox(site: Site, who: str) -> list[dict]:
    response = httpx2.get(f"{site.url}/inbox", headers=site.auth(who), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def show(*events: Any) -> None:
    for event in events:
        event = event[1] if isinstance(event, tuple) else event
        print(json.dumps({"type": event["type"], "data": event["data"]}))


def types(events: list) -> list[str]:
    return [event["type"] for _, event in events]


def test_approval_asked_on_one_device_is_answered_on_the_other(site, expiring):
    conversation = site.conversation("llm")
    with site.stream("alice") as laptop, site.stream("alice2") as phone:
        turn_id = site.post("alice", conversation, "remember milk [tool]")["turn_id"]
        _, asked = first_of(laptop, turn_id, "approval.requested")
        _, seen_on_phone = first_of(phone, turn_id, "approval.requested")
        assert seen_on_phone["data"] == asked["data"]
        data = asked["data"]
        assert (data["expert"], data["tool"], data["arguments"]) == ("notes", "add_note", {"title": "milk"})
        [item] = [item for item in inbox(site, "alice2") if item["id"] == data["request_id"]]
        assert (item["kind"], item["turn_id"], item["conversation_id"]) == ("approval", turn_id, conversation)
        assert item["arguments"] == {"title": "milk"} and item["expires_at"] == data["expires_at"]
        turn = httpx2.get(f"{site.url}/turns/{turn_id}", headers=site.auth("alice")).json()["turn"]
        assert turn["status"] == "waiting"

        answered = answer(site, "alice2", data["request_id"], {"decision": "approve"})
        assert answered.status_code == 200, answered.text
        assert answered.json()["item"]["status"] == "answered"
        events = until_end(laptop, turn_id)
    show(asked, *events)  # shown with -s: the stream as a client sees it, for the closing note
    assert types(events)[:3] == ["approval.resolved", "tool.call", "tool.result"]
    assert events[0][1]["data"] == {"turn_id": turn_id, "request_id": data["request_id"], "decision": "approve"}
    call = events[1][1]["data"]
    assert (call["tool"], call["arguments"]) == ("add_note", {"title": "milk"})  # exactly what was shown
    assert events[2][1]["data"]["result"]["structured"]["note"]["title"] == "milk"
    assert events[-1][1]["type"] == "assistant.completed"
    assert events[-1][1]["data"]["content"].startswith("Noted: ")
    assert data["request_id"] not in {item["id"] for item in inbox(site, "alice")}
    again = answer(site, "alice", data["request_id"], {"decision": "deny"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


@pytest.mark.database_agnostic  # what reaches the model: the wire
def test_denial_reaches_the_model_as_denied_and_the_turn_goes_on(site):
    conversation = site.conversation("llm")
    with site.stream("alice") as laptop:
        turn_id = site.post("alice", conversation, "remember milk [tool]")["turn_id"]
        _, asked = first_of(laptop, turn_id, "approval.requested")
        assert answer(site, "alice2", asked["data"]["request_id"], {"decision": "deny"}).status_code == 200
        events = until_end(laptop, turn_id)
    assert types(events)[:2] == ["approval.resolved", "tool.result"]
    assert events[0][1]["data"]["decision"] == "deny"
    assert events[1][1]["data"]["error"]["code"] == "denied"
    assert "tool.call" not in types(events)
    assert events[-1][1]["type"] == "assistant.completed"
    assert "denied" in events[-1][1]["data"]["content"]


@pytest.mark.database_agnostic  # access rules: plain ORM
def test_only_the_requester_answers_participant_403_outsider_404(site):
    conversation = site.conversation("llm", participants=("bob",))
    with site.stream("alice") as laptop:
        turn_id = site.post("alice", conversation, "remember milk [tool]")["turn_id"]
        _, asked = first_of(laptop, turn_id, "approval.requested")
        request_id = asked["data"]["request_id"]
        by_bob = answer(site, "bob", request_id, {"decision": "approve"})
        assert by_bob.status_code == 403 and by_bob.json()["error"]["code"] == "forbidden"
        by_charlie = answer(site, "charlie", request_id, {"decision": "approve"})
        missing = answer(site, "charlie", "00000000-0000-0000-0000-000000000000", {"decision": "approve"})
        assert by_charlie.status_code == 404 and by_charlie.content == missing.content
        assert inbox(site, "bob") == [] and inbox(site, "charlie") == []
        assert answer(site, "alice", request_id, {"action": "accept"}).status_code == 400  # not a question
        # Two devices answer at once: exactly one wins.
        results: list[httpx2.Response] = []
        barrier = threading.Barrier(2)

        def race(who: str, decision: str) -> None:
            barrier.wait()
            results.append(answer(site, who, request_id, {"decision": decision}))

        threads = [threading.Thread(target=race, args=args) for args in (("alice", "approve"), ("alice2", "deny"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(response.status_code for response in results) == [200, 409]
        winner = next(response for response in results if response.status_code == 200).json()["item"]["answer"]
        events = until_end(laptop, turn_id)
    resolved = [event for _, event in events if event["type"] == "approval.resolved"]
    assert [event["data"]["decision"] for event in resolved] == [winner["decision"]]


def test_a_waiting_turn_survives_a_killed_worker_and_is_answered_after_the_restart(stack):
    site, worker = stack
    conversation = site.conversation("llm")
    with site.stream("alice") as laptop:
        turn_id = site.post("alice", conversation, "remember milk [tool]")["turn_id"]
        _, asked = first_of(laptop, turn_id, "approval.requested")
        worker.kill()  # SIGKILL: nothing of the worker survives but the database
        started = worker.log_path.read_text(errors="replace").count(READY)
        worker.start()
        deadline = time.monotonic() + 60
        while worker.log_path.read_text(errors="replace").count(READY) <= started:  # the new one runs
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.1)
        time.sleep(0.5)  # it polls: the waiting turn is not due, nothing happens to it
        turn = httpx2.get(f"{site.url}/turns/{turn_id}", headers=site.auth("alice")).json()["turn"]
        assert turn["status"] == "waiting"
        assert answer(site, "alice2", asked["data"]["request_id"], {"decision": "approve"}).status_code == 200
        events = until_end(laptop, turn_id)
    assert types(events)[:3] == ["approval.resolved", "tool.call", "tool.result"]
    assert events[0][1]["data"]["request_id"] == asked["data"]["request_id"]
    assert events[-1][1]["type"] == "assistant.completed"


@pytest.mark.database_agnostic  # validation: the wire
def test_question_is_validated_against_its_schema_and_answered(site):
    conversation = site.conversation("none")
    with site.stream("alice") as laptop, site.stream("alice2") as phone:
        added = site.post("alice", conversation, '/notes add_note {"title": "old list"}')["turn_id"]
        _, asked = first_of(laptop, added, "approval.requested")
        assert answer(site, "alice", asked["data"]["request_id"], {"decision": "approve"}).status_code == 200
        done = until_end(laptop, added)
        note_id = done[-2][1]["data"]["result"]["structured"]["note"]["id"]

        turn_id = site.post("alice", conversation, f'/notes delete_note {{"note_id": "{note_id}"}}')["turn_id"]
        _, question = first_of(phone, turn_id, "question.asked")
        data = question["data"]
        assert data["expert"] == "notes" and "old list" in data["message"]
        assert data["schema"]["properties"]["confirm"]["type"] == "boolean"
        bad = answer(site, "alice", data["request_id"], {"action": "accept", "content": {"confirm": "yes"}})
        assert bad.status_code == 400 and "confirm" in bad.json()["error"]["fields"]
        assert data["request_id"] in {item["id"] for item in inbox(site, "alice2")}  # still open
        good = answer(site, "alice2", data["request_id"], {"action": "accept", "content": {"confirm": True}})
        assert good.status_code == 200, good.text
        events = until_end(laptop, turn_id)
    show(*events)
    assert types(events) == [
        "assistant.started",
        "tool.call",
        "question.asked",
        "question.answered",
        "tool.result",
        "assistant.completed",
    ]
    answered = next(event for _, event in events if event["type"] == "question.answered")
    assert answered["data"] == {"turn_id": turn_id, "request_id": data["request_id"], "action": "accept"}
    result = next(event for _, event in events if event["type"] == "tool.result")
    assert result["data"]["result"]["structured"] == {"deleted": True, "note_id": note_id}
    assert events[-1][1]["type"] == "assistant.completed"


@pytest.mark.database_agnostic  # the older MCP revision's elicitation: the wire
def test_question_asked_mid_call_by_an_older_expert_is_answered_while_the_call_waits(site):
    with recording_expert(legacy_asker=True) as asker:
        registered = httpx2.post(
            f"{site.url}/config/workspace/{site.workspace_id}/experts",
            json={"name": "asker", "url": asker.url, "auth": "none", "tool_policy": {"confirm": "auto"}},
            headers=site.auth("alice"),
            timeout=30,
        )
        assert registered.status_code == 201 and registered.json()["expert"]["status"] == "ok", registered.text
        conversation = site.conversation("none")
        with site.stream("alice") as laptop:
            turn_id = site.post("alice", conversation, '/asker confirm {"what": "jump"}')["turn_id"]
            _, question = first_of(laptop, turn_id, "question.asked")
            data = question["data"]
            assert (data["expert"], data["message"]) == ("asker", "Really jump?")
            assert data["schema"]["properties"]["sure"]["type"] == "boolean"
            assert answer(site, "alice", data["request_id"], {"action": "accept", "content": {}}).status_code == 400
            good = answer(site, "alice2", data["request_id"], {"action": "accept", "content": {"sure": True}})
            assert good.status_code == 200, good.text
            events = until_end(laptop, turn_id)
        httpx2.delete(
            f"{site.url}/config/workspace/{site.workspace_id}/experts/{registered.json()['expert']['id']}",
            headers=site.auth("alice"),
        )
    assert types(events) == ["question.answered", "tool.result", "assistant.completed"]
    assert events[1][1]["data"]["result"]["structured"] == {"action": "accept", "sure": True}


def test_unanswered_approval_expires_as_denied(site, expiring):
    turn_id, request_id, before = expiring
    with site.stream("alice", headers={"Last-Event-ID": before}) as laptop:
        events = until_end(laptop, turn_id, timeout=APPROVAL_SECONDS + 30)
    assert types(events)[:3] == ["assistant.started", "approval.requested", "approval.resolved"]
    assert events[2][1]["data"] == {"turn_id": turn_id, "request_id": request_id, "decision": "expired"}
    assert events[3][1]["type"] == "tool.result" and events[3][1]["data"]["error"]["code"] == "denied"
    assert events[-1][1]["type"] == "assistant.completed"
    late = answer(site, "alice", request_id, {"decision": "approve"})
    assert late.status_code == 409
