"""Expert calls end to end (CONTRACT.md, "Expert calls: progress, tasks and content"): a real core, a
real `manage.py turn_worker`, and the SDK-built expert of tests/experts/task_expert.py in both
revisions, registered as `lab` (2026-07-28) and `old` (2025-11-25).

A task-augmented call waits durably: between polls the turn is `waiting` (no worker holds it), any
worker claims it for the next poll, and a SIGKILLed worker's task goes on with the next one."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime

import httpx2
import pytest

from tests.experts.conftest import TaskExpert, task_expert
from tests.servers import ServerProcess, running
from tests.turns.test_turns_e2e import (
    Site,
    first_of,
    system,  # noqa: F401 - the same stack, started for this module
    turn_worker,
    until_end,
)

pytestmark = pytest.mark.e2e

TOOLS = ("picture", "sound", "links", "steps", "preferences", "research", "quick")
# Both revisions on SQLite; on PostgreSQL the current one only: the revision changes what goes over
# the wire to the expert, not the turn's rows, claims and waits (the same queries either way).
REVISIONS = ["lab", pytest.param("old", marks=pytest.mark.database_agnostic)]


@pytest.fixture(scope="module")
def system_env() -> dict[str, str]:
    # A short lease: a worker killed during a poll leaves its turn to the next one within seconds.
    return {"TURN_APPROVAL_SECONDS": "60", "INBOX_MAX_OPEN_PER_USER": "50", "TURN_LEASE_SECONDS": "3"}


@pytest.fixture(scope="module")
def stack(system) -> Iterator[tuple[Site, ServerProcess, dict[str, TaskExpert], ServerProcess]]:  # noqa: F811 - imported above
    site, worker = system
    # A second worker, already started: the one that takes over when the first is killed mid-task.
    with (
        task_expert(poll_ms=300) as lab,
        task_expert(legacy=True, poll_ms=300) as old,
        running(turn_worker(site.env)) as spare,
    ):
        for name, expert in (("lab", lab), ("old", old)):
            registered = httpx2.post(
                f"{site.url}/config/workspace/{site.workspace_id}/experts",
                json={
                    "name": name,
                    "url": expert.url,
                    "auth": "none",
                    "tool_policy": dict.fromkeys(TOOLS, "auto"),
                },
                headers=site.auth("alice"),
                timeout=30,
            )
            assert registered.status_code == 201, registered.text
            assert registered.json()["expert"]["status"] == "ok", registered.text
        yield site, worker, {"lab": lab, "old": old}, spare


@pytest.fixture
def site(stack) -> Site:
    return stack[0]


def answer(site: Site, who: str, request_id: str, body: dict) -> httpx2.Response:
    return httpx2.post(f"{site.url}/inbox/{request_id}/answer", json=body, headers=site.auth(who), timeout=10)


def turn_status(site: Site, turn_id: str) -> str:
    return httpx2.get(f"{site.url}/turns/{turn_id}", headers=site.auth("alice"), timeout=10).json()["turn"]["status"]


def types(events: list) -> list[str]:
    return [event["type"] for _, event in events]


def show(*events) -> None:
    for event in events:
        event = event[1] if isinstance(event, tuple) else event
        print(json.dumps({"type": event["type"], "data": event["data"]}))


def until_type(stream, turn_id: str, type_: str, *, timeout: float = 20) -> list:
    """The turn's events on `stream` up to and with the first of `type_`."""
    events = []
    deadline = time.monotonic() + timeout
    while True:
        event_id, event = stream.event(timeout=deadline - time.monotonic())
        if event.get("data", {}).get("turn_id") == turn_id:
            events.append((event_id, event))
            if event["type"] == type_:
                return events


def started(expert: TaskExpert, topic: str) -> list[dict]:
    return [entry for entry in expert.log() if "started" in entry and (entry["arguments"] or {}).get("topic") == topic]


@pytest.mark.parametrize("name", REVISIONS)
def test_a_task_waits_durably_asks_in_the_inbox_and_completes(stack, name):
    site, _, experts, _ = stack
    conversation = site.conversation("none")
    topic = f"bees-{name}"
    with site.stream("alice") as laptop:
        call = f'/{name} research {{"topic": "{topic}", "seconds": 1.2, "ask": true}}'
        turn_id = site.post("alice", conversation, call)["turn_id"]
        before = until_type(laptop, turn_id, "question.asked")
        asked = before[-1][1]
        data = asked["data"]
        assert data["message"] == "Go on with the research?"
        assert data["schema"]["properties"]["note"]["default"] == "as planned"
        assert turn_status(site, turn_id) == "waiting"  # no worker holds it while the requester thinks
        # `accept` with nothing typed: the form's defaults are the answer.
        answered = answer(site, "alice", data["request_id"], {"action": "accept", "content": {}})
        assert answered.status_code == 200, answered.text
        events = until_end(laptop, turn_id)
    show(*before, *events)  # shown with -s: the stream as a client sees it, for the closing note
    assert types(before)[:3] == ["assistant.started", "tool.call", "tool.task"]
    assert events[-1][1]["type"] == "assistant.completed", events[-1]
    result = next(event for _, event in events if event["type"] == "tool.result")["data"]["result"]
    assert result["structured"]["answer"] == {"action": "accept", "content": {"go_on": True, "note": "as planned"}}
    statuses = [event["data"]["status"] for _, event in events if event["type"] == "tool.task"]
    assert statuses[-1] == "completed" and "working" in statuses
    assert len(started(experts[name], topic)) == 1


def test_a_worker_killed_mid_task_is_followed_by_the_next_and_the_task_runs_once(stack):
    site, worker, experts, spare = stack
    conversation = site.conversation("none")
    # The spare is held still (it is idle: nothing is due, so it holds no lock) until the first
    # worker has started the task: the task is started by the worker that is then killed.
    os.killpg(spare.process.pid, signal.SIGSTOP)
    try:
        with site.stream("alice") as laptop:
            turn_id = site.post("alice", conversation, '/lab research {"topic": "kill", "seconds": 3}')["turn_id"]
            _, task = first_of(laptop, turn_id, "tool.task")
            task_id = task["data"]["task_id"]
            worker.kill()  # SIGKILL: the task id is on the turn, nothing else survives
            os.killpg(spare.process.pid, signal.SIGCONT)
            events = until_end(laptop, turn_id)
    finally:
        os.killpg(spare.process.pid, signal.SIGCONT)
    assert events[-1][1]["type"] == "assistant.completed", events[-1]
    tasks_seen = {event["data"]["task_id"] for _, event in events if event["type"] == "tool.task"}
    assert tasks_seen <= {task_id}
    assert len(started(experts["lab"], "kill")) == 1, "never started twice"
    assert "report on kill" in events[-1][1]["data"]["content"]


@pytest.mark.parametrize("name", REVISIONS)
# SQLite pass only: the cancel's hand-off runs in tests/turns/test_turns_e2e.py; the task's cancel is the wire.
@pytest.mark.database_agnostic
def test_cancelling_the_turn_cancels_the_task(stack, name):
    site, _, experts, _ = stack
    conversation = site.conversation("none")
    with site.stream("alice") as laptop:
        call = f'/{name} research {{"topic": "cancel-{name}", "seconds": 15}}'
        turn_id = site.post("alice", conversation, call)["turn_id"]
        _, task = first_of(laptop, turn_id, "tool.task")
        cancelled = httpx2.post(f"{site.url}/turns/{turn_id}/cancel", headers=site.auth("alice"), timeout=10)
        assert cancelled.status_code == 202, cancelled.text
        events = until_end(laptop, turn_id)
    assert events[-1][1]["type"] == "assistant.cancelled"
    task_id = task["data"]["task_id"]
    deadline = time.monotonic() + 30  # a liveness bound (10 s was missed at load 10)
    while {"cancelled": task_id} not in experts[name].log():
        assert time.monotonic() < deadline, experts[name].log()[-5:]
        time.sleep(0.1)


@pytest.mark.database_agnostic  # the wire
def test_a_tool_the_expert_does_not_have_fails_not_found_without_asking(site):
    conversation = site.conversation("none")
    with site.stream("alice") as laptop:
        turn_id = site.post("alice", conversation, "/lab ghost {}")["turn_id"]
        events = until_end(laptop, turn_id)
    assert "approval.requested" not in types(events)
    assert events[-1][1]["type"] == "assistant.failed"
    assert events[-1][1]["data"]["error"]["code"] == "not_found"


@pytest.mark.database_agnostic  # content kinds: the wire
def test_images_links_and_resources_reach_the_stream(site):
    conversation = site.conversation("none")
    with site.stream("alice") as laptop:
        picture = site.post("alice", conversation, '/lab picture {"size": 100}')["turn_id"]
        events = until_end(laptop, picture)
        links = site.post("alice", conversation, "/lab links {}")["turn_id"]
        linked = until_end(laptop, links)
    [image] = next(event for _, event in events if event["type"] == "tool.result")["data"]["result"]["blocks"]
    assert (image["type"], image["mime_type"], image["size"]) == ("image", "image/png", 100)
    blocks = next(event for _, event in linked if event["type"] == "tool.result")["data"]["result"]["blocks"]
    assert [block["type"] for block in blocks] == ["resource_link", "resource_link", "resource"]
    assert "https://example.com/report.pdf" in linked[-1][1]["data"]["content"]


@pytest.mark.database_agnostic  # progress: the wire
def test_progress_is_coalesced_to_four_a_second(site):
    conversation = site.conversation("none")
    with site.stream("alice") as laptop:
        turn_id = site.post("alice", conversation, '/old steps {"count": 40, "delay_ms": 25}')["turn_id"]
        events = until_end(laptop, turn_id)
    progress = [event for _, event in events if event["type"] == "tool.progress"]
    assert progress, types(events)
    assert all(event["data"]["total"] == 40 for event in progress)
    assert progress[0]["data"]["call_id"] == next(e for _, e in events if e["type"] == "tool.call")["data"]["call_id"]
    times = [datetime.fromisoformat(event["timestamp"]) for event in progress]
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 0.2 for gap in gaps), gaps  # at most 4 a second (written 250 ms apart, at the least)
    assert len(progress) < 40


@pytest.mark.database_agnostic  # the form's defaults: the wire
def test_a_form_question_accepted_as_is_sends_its_defaults(site):
    conversation = site.conversation("none")
    with site.stream("alice") as laptop:
        turn_id = site.post("alice", conversation, "/lab preferences {}")["turn_id"]
        _, asked = first_of(laptop, turn_id, "question.asked")
        schema = asked["data"]["schema"]
        assert schema["properties"]["color"]["default"] == "green"
        missing = answer(site, "alice", asked["data"]["request_id"], {"action": "accept", "content": {}})
        assert missing.status_code == 400 and "name" in json.dumps(missing.json()["error"])  # required, no default
        body = {"action": "accept", "content": {"name": "Ann", "count": 5}}
        assert answer(site, "alice", asked["data"]["request_id"], body).status_code == 200
        events = until_end(laptop, turn_id)
    result = next(event for _, event in events if event["type"] == "tool.result")["data"]["result"]
    assert result["structured"]["content"] == {"name": "Ann", "count": 5, "color": "green", "subscribe": True}
