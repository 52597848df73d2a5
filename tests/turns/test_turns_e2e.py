"""Assistant turns end to end: a real core (uvicorn), a real `manage.py turn_worker`, real SSE
clients, the notes expert as a real process; for `llm`, a fake OpenAI-compatible server on
loopback driven by the real `openai` SDK.

The worker is another process than the core and there is no Redis here: its events reach the
core's streams through `/internal/events` (CORTEX_CORE_URL), and streams resume from the log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.experts.conftest import notes_expert
from tests.servers import (
    ServerProcess,
    core_server,
    create_users,
    fake_llm_server,
    free_port,
    fresh_database,
    manage_command,
    redis_server,
    running_together,
    server_env,
)
from tests.streaming.clients import SSEStream, login
from turns.responders import TOOL_RESULT_CHARS, Fence

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery-staple"
USERS = ("alice@example.com", "bob@example.com", "charlie@example.com", "dave@example.com")
LLM_KEY = "sk-fake-test-key"
ENV = {
    "SSE_HEARTBEAT_SECONDS": "1",
    "MEMORY_DRAIN_ON_COMMIT": "0",
    "LOG_LEVEL": "WARNING",
    "INPUT_RATE": "100000/min",
    "ECHO_DELAY_MS": "40",
    "TURN_POLL_MS": "50",
    # No cognition service runs: the llm turn must degrade to answering without context, quickly.
    "COGNITION_URL": f"http://127.0.0.1:{free_port()}/mcp",
    "SERVICE_TIMEOUT_SECONDS": "2",
    "CORTEX_LLM_MODEL": "fake-model",
    "CORTEX_LLM_API_KEY": LLM_KEY,
}
TERMINAL = {"assistant.completed", "assistant.failed", "assistant.cancelled"}
LONG = " ".join(f"w{n}" for n in range(60))  # 60 echo chunks, 40 ms apart: about 2.4 s
# A turn a test stops (cancel, interrupt, a killed worker) or posts beside: 500 chunks, 20 s or more,
# so it is never a race with the turn's own end, however slow the machine (it ends when stopped).
ENDLESS = " ".join(f"e{n}" for n in range(500))


def turn_worker(env: dict[str, str]) -> ServerProcess:
    return manage_command("turn_worker", env=env, port=0, ready_line="turn worker: running")


@dataclass
class Site:
    url: str
    env: dict[str, str]
    tokens: dict[str, str]
    user_ids: dict[str, str]
    workspace_id: str
    llm_log: Path

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def conversation(self, responder: str, participants: tuple[str, ...] = ("bob",)) -> str:
        response = httpx2.post(
            f"{self.url}/config/conversation",
            json={
                "workspace_id": self.workspace_id,
                "topic": responder,
                "responder": responder,
                "participant_ids": [self.user_ids[who] for who in participants],
            },
            headers=self.auth("alice"),
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()["conversation"]["id"]

    def post(self, who: str, conversation_id: str, content: str) -> dict:
        response = httpx2.post(
            f"{self.url}/input",
            json={"content": content, "conversation_id": conversation_id},
            headers=self.auth(who),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def stream(self, who: str, **params: str) -> SSEStream:
        return SSEStream(self.url, token=self.tokens[who], **params)


def until_end(stream: SSEStream, turn_id: str, *, timeout: float = 45) -> list[tuple[str | None, dict]]:
    """The events of one turn on `stream`, through its terminal event (others are skipped)."""
    events: list[tuple[str | None, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event_id, event = stream.event(timeout=deadline - time.monotonic())
        if event.get("data", {}).get("turn_id") != turn_id:
            continue
        events.append((event_id, event))
        if event["type"] in TERMINAL:
            return events
    raise TimeoutError(f"turn {turn_id} did not end: {[e['type'] for _, e in events]}")


def first_of(stream: SSEStream, turn_id: str, type_: str, *, timeout: float = 20) -> tuple[str | None, dict]:
    deadline = time.monotonic() + timeout
    while True:
        event_id, event = stream.event(timeout=deadline - time.monotonic())
        if event.get("data", {}).get("turn_id") == turn_id and event["type"] == type_:
            return event_id, event


def deltas(events: list[tuple[str | None, dict]]) -> str:
    return "".join(event["data"]["text"] for _, event in events if event["type"] == "assistant.delta")


def signed_in(cls: type[Site], *, core_url: str, env: dict[str, str], llm_log: Path, notes_url: str) -> Site:
    """Every user signed in, alice's workspace with the notes expert registered."""
    tokens = {email.split("@")[0]: login(core_url, email, PASSWORD) for email in USERS}
    verify = f"{core_url}/auth/verify"
    user_ids = {
        who: httpx2.get(verify, headers={"Authorization": f"Bearer {token}"}).json()["user_id"]
        for who, token in tokens.items()
    }
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    workspace = httpx2.post(f"{core_url}/config/workspace", json={"name": "W"}, headers=alice).json()["workspace"]
    registered = httpx2.post(
        f"{core_url}/config/workspace/{workspace['id']}/experts",
        # add_note would ask for approval (it is not read-only): these tests are about the tool call
        # itself (tests/turns/test_inbox_e2e.py: the asking).
        # search_notes too: it only reads, but in a conversation of several people a tool runs at once
        # only when the owner says so.
        json={
            "name": "notes",
            "url": f"{notes_url}/mcp",
            "auth": "core_token",
            "tool_policy": {"add_note": "auto", "search_notes": "auto"},
        },
        headers=alice,
        timeout=30,
    )
    assert registered.status_code == 201 and registered.json()["expert"]["status"] == "ok", registered.text
    return cls(core_url, env, tokens, user_ids, workspace["id"], llm_log)


@pytest.fixture(scope="module")
def system_env() -> dict[str, str]:
    """Settings a module using `system` adds (override it there)."""
    return {}


@pytest.fixture(scope="module")
def system(tmp_path_factory, system_env) -> Iterator[tuple[Site, ServerProcess]]:
    llm_log = tmp_path_factory.mktemp("fake-llm") / "requests.jsonl"
    with fresh_database() as db_env:
        base = server_env(**db_env, **{**ENV, **system_env})
        fake_llm = fake_llm_server(env=base, log=llm_log)
        core = core_server(env=base)
        env = {**base, "CORTEX_CORE_URL": core.url, "CORTEX_LLM_BASE_URL": f"{fake_llm.url}/v1"}
        notes = notes_expert(base, jwks_url=f"{core.url}/.well-known/jwks.json")
        worker = turn_worker(env)
        with running_together(
            fake_llm, core, notes, worker, meanwhile=lambda: create_users(*USERS, password=PASSWORD, env=base)
        ):
            yield signed_in(Site, core_url=core.url, env=env, llm_log=llm_log, notes_url=notes.url), worker


def test_echo_turn_reaches_every_participant_and_its_answer_is_a_message(system):
    site, _ = system
    conversation = site.conversation("echo")
    with site.stream("alice") as alice, site.stream("bob") as bob, site.stream("charlie") as charlie:
        answer = site.post("bob", conversation, "hello there assistant")
        turn_id = answer["turn_id"]
        seen = {who: until_end(stream, turn_id) for who, stream in (("alice", alice), ("bob", bob))}
        types = [event["type"] for _, event in seen["alice"]]
        assert types[0] == "assistant.started" and types[-1] == "assistant.completed"
        assert seen["alice"][0][1]["data"]["input_id"] == answer["data"]["id"]
        assert [event for _, event in seen["alice"]] == [event for _, event in seen["bob"]]
        assert deltas(seen["alice"]) == "hello there assistant"
        completed = seen["alice"][-1][1]
        assert completed["user_id"] == site.user_ids["bob"]
        assert completed["data"]["content"] == "hello there assistant"
        charlie.client.timeout = httpx2.Timeout(2.0)
        with pytest.raises((TimeoutError, httpx2.ReadTimeout)):  # the outsider sees nothing of it
            charlie.event(timeout=1.5)
    page = httpx2.get(
        f"{site.url}/messages", params={"conversation_id": conversation}, headers=site.auth("alice")
    ).json()["messages"]
    assert [(m["author"], m["content"], m["sender_id"]) for m in page] == [
        ("assistant", "hello there assistant", site.user_ids["bob"]),
        ("user", "hello there assistant", site.user_ids["bob"]),
    ]
    assert page[0]["id"] == completed["data"]["message_id"]


def test_device_that_resumes_gets_every_delta_once_in_order(system):
    site, _ = system
    conversation = site.conversation("echo")
    with site.stream("bob") as participant:
        phone = site.stream("alice")
        turn_id = site.post("alice", conversation, LONG)["turn_id"]
        before = [first_of(phone, turn_id, "assistant.started"), first_of(phone, turn_id, "assistant.delta")]
        last_id = phone.last_id
        phone.close()  # the phone is gone mid-turn; the laptop resumes from its last event id
        time.sleep(0.3)
        with site.stream("alice", headers={"Last-Event-ID": last_id}) as laptop:
            after = until_end(laptop, turn_id)
        whole = until_end(participant, turn_id)
    resumed = before + after
    assert [int(event_id) for event_id, _ in resumed] == sorted({int(event_id) for event_id, _ in resumed})
    assert deltas(resumed) == LONG == deltas(whole)
    assert resumed[-1][1]["type"] == whole[-1][1]["type"] == "assistant.completed"
    assert len([1 for _, e in resumed if e["type"] == "assistant.delta"]) > 5  # coalesced, yet streamed


def test_cancel_stops_a_running_turn(system):
    site, _ = system
    conversation = site.conversation("echo")
    with site.stream("alice") as alice:
        turn_id = site.post("alice", conversation, ENDLESS)["turn_id"]
        first_of(alice, turn_id, "assistant.delta")
        response = httpx2.post(f"{site.url}/turns/{turn_id}/cancel", headers=site.auth("bob"))
        assert response.status_code == 202
        rest = until_end(alice, turn_id)
    assert rest[-1][1]["type"] == "assistant.cancelled"
    assert deltas(rest) != ENDLESS
    turn = httpx2.get(f"{site.url}/turns/{turn_id}", headers=site.auth("alice")).json()["turn"]
    assert turn["status"] == "cancelled"
    late = httpx2.post(f"{site.url}/turns/{turn_id}/cancel", headers=site.auth("alice"))
    assert late.status_code == 409
    outsider = httpx2.post(f"{site.url}/turns/{turn_id}/cancel", headers=site.auth("charlie"))
    assert outsider.status_code == 404


@pytest.mark.database_agnostic  # the model and expert calls: the wire
def test_llm_turn_streams_the_model_and_calls_the_expert_tool_it_asks_for(system):
    site, _ = system
    conversation = site.conversation("llm")
    site.llm_log.write_text("")
    with site.stream("alice") as alice, site.stream("bob") as bob:
        turn_id = site.post("alice", conversation, "remember milk [tool]")["turn_id"]
        events = until_end(alice, turn_id)
        assert [event for _, event in until_end(bob, turn_id)] == [event for _, event in events]
    types = [event["type"] for _, event in events]
    assert types[:3] == ["assistant.started", "tool.call", "tool.result"], types
    assert types[-1] == "assistant.completed", events[-1]
    call, result = events[1][1]["data"], events[2][1]["data"]
    assert (call["expert"], call["tool"], call["arguments"]) == ("notes", "add_note", {"title": "milk"})
    assert result["call_id"] == call["call_id"] and "error" not in result, result
    text = deltas(events)
    requests = [json.loads(line) for line in site.llm_log.read_text().splitlines()]
    assert len(requests) == 2
    first, second = requests[0], requests[1]
    # The model read the tool's result as bounded data, fenced with the turn's nonce (the fake model
    # answers with what it read).
    read = fence_of(first["body"]).quote("result of notes__add_note", result["result"]["content"], TOOL_RESULT_CHARS)
    assert text == "Noted: " + read and events[-1][1]["data"]["content"] == text
    assert first["headers"]["authorization"] == f"Bearer {LLM_KEY}"
    assert first["body"]["model"] == "fake-model" and first["body"]["stream"] is True
    assert first["body"]["messages"][-1] == {"role": "user", "name": "alice", "content": "remember milk [tool]"}
    offered = {tool["function"]["name"] for tool in first["body"]["tools"]}
    assert {"notes__add_note", "notes__search_notes", "notes__get_note"} <= offered
    assert second["body"]["messages"][-1]["role"] == "tool"
    assert second["body"]["messages"][-1]["tool_call_id"] == "call_fake1"
    # The note is in the workspace: a direct call finds it.
    with site.stream("alice") as alice:
        found = site.post("alice", conversation, '/notes search_notes {"query": "milk"}')["turn_id"]
        events = until_end(alice, found)
    assert [event["type"] for _, event in events][-1] == "assistant.completed"
    assert "milk" in events[-1][1]["data"]["content"]


@pytest.mark.database_agnostic  # the model: the wire
def test_model_asking_for_a_tool_it_was_not_offered_is_told_and_goes_on(system):
    site, _ = system
    conversation = site.conversation("llm")
    httpx2.patch(
        f"{site.url}/config/workspace/{site.workspace_id}/experts/{_expert_id(site)}",
        json={"tools": ["search_notes"]},
        headers=site.auth("alice"),
    ).raise_for_status()
    try:
        with site.stream("alice") as alice:
            turn_id = site.post("alice", conversation, "again [tool]")["turn_id"]
            events = until_end(alice, turn_id)
    finally:
        httpx2.patch(
            f"{site.url}/config/workspace/{site.workspace_id}/experts/{_expert_id(site)}",
            json={"tools": None},
            headers=site.auth("alice"),
        ).raise_for_status()
    result = next(event["data"] for _, event in events if event["type"] == "tool.result")
    assert result["error"]["code"] == "not_found"
    assert events[-1][1]["type"] == "assistant.completed"
    [request] = [
        json.loads(line)["body"]
        for line in site.llm_log.read_text().splitlines()
        if json.loads(line)["body"]["messages"][-1].get("content") == "again [tool]"
    ]
    told = fence_of(request).quote(
        "result of notes__add_note", "Error (not_found): No tool named 'notes__add_note' here.", 99
    )
    assert events[-1][1]["data"]["content"] == "Noted: " + told, "the model was told, as data"


def fence_of(request: dict) -> Fence:
    """The turn's fence, as its system message names it."""
    found = re.search(r"<<data:([0-9a-f]{16}) \.\.\.>>", request["messages"][0]["content"])
    assert found is not None, request["messages"][0]["content"]
    return Fence(found.group(1))


def _expert_id(site: Site) -> str:
    listed = httpx2.get(f"{site.url}/config/workspace/{site.workspace_id}/experts", headers=site.auth("alice")).json()
    return next(expert["id"] for expert in listed["experts"] if expert["name"] == "notes")


@pytest.mark.database_agnostic  # the expert call: the wire
def test_direct_call_runs_one_expert_tool_without_a_model(system):
    site, _ = system
    conversation = site.conversation("none")
    with site.stream("bob") as bob:
        turn_id = site.post("bob", conversation, '/notes add_note {"title": "call the plumber"}')["turn_id"]
        events = until_end(bob, turn_id)
    assert [event["type"] for _, event in events] == [
        "assistant.started",
        "tool.call",
        "tool.result",
        "assistant.completed",
    ]
    call, result = events[1][1]["data"], events[2][1]["data"]
    assert (call["expert"], call["tool"], call["arguments"]) == ("notes", "add_note", {"title": "call the plumber"})
    assert events[-1][1]["data"]["content"] == result["result"]["content"]
    assert events[-1][1]["user_id"] == site.user_ids["bob"]


@pytest.mark.database_agnostic  # refused before the claim
def test_direct_call_to_unknown_expert_or_with_bad_json_fails_clearly(system):
    site, _ = system
    conversation = site.conversation("none")
    with site.stream("alice") as alice:
        unknown = site.post("alice", conversation, '/nobody lookup {"q": 1}')["turn_id"]
        events = until_end(alice, unknown)
        assert [event["type"] for _, event in events] == [
            "assistant.started",
            "tool.call",
            "tool.result",
            "assistant.failed",
        ]
        assert events[1][1]["data"]["arguments"] == {"q": 1}
        bad = site.post("alice", conversation, "/notes add_note {not json")["turn_id"]
        events = until_end(alice, bad)
        assert [event["type"] for _, event in events] == ["assistant.started", "assistant.failed"]
        assert events[-1][1]["data"]["error"]["code"] == "invalid_input"
        assert "not valid JSON" in events[-1][1]["data"]["error"]["message"]


@pytest.mark.database_agnostic  # the Redis channel layer
def test_with_redis_the_worker_publishes_through_the_shared_channel_layer():
    """No relay URL: the worker's events reach a core process's streams through Redis."""
    with fresh_database() as db_env, redis_server() as redis_url:
        env = server_env(**db_env, **ENV, REDIS_URL=redis_url)
        core = core_server(env=env)
        starting = running_together(
            core, turn_worker(env), meanwhile=lambda: create_users("alice@example.com", password=PASSWORD, env=env)
        )
        with starting:
            token = login(core.url, "alice@example.com", PASSWORD)
            auth = {"Authorization": f"Bearer {token}"}
            workspace = httpx2.post(f"{core.url}/config/workspace", json={"name": "W"}, headers=auth).json()
            conversation = httpx2.post(
                f"{core.url}/config/conversation",
                json={"workspace_id": workspace["workspace"]["id"], "topic": "T", "responder": "echo"},
                headers=auth,
            ).json()["conversation"]["id"]
            with SSEStream(core.url, token=token) as stream:
                body = {"content": "through redis", "conversation_id": conversation}
                turn_id = httpx2.post(f"{core.url}/input", json=body, headers=auth, timeout=30).json()["turn_id"]
                events = until_end(stream, turn_id)
    assert events[-1][1]["type"] == "assistant.completed"
    assert deltas(events) == "through redis"
