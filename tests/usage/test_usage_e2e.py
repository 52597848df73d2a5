"""Usage and budgets end to end: a real core, two real turn workers, the fake model (which reports
streamed usage, `tests/fake_llm.py`) and the notes expert. What the model reported is read from the
fake model's own log: the numbers `GET /usage` gives must be exactly those."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx2
import pytest

from tests.experts.conftest import notes_expert
from tests.servers import (
    ServerProcess,
    core_server,
    create_users,
    fake_llm_server,
    fresh_database,
    manage,
    running_together,
)
from tests.servers import server_env as make_env
from tests.turns.test_turns_e2e import ENV, PASSWORD, TERMINAL, Site, signed_in, turn_worker, until_end

pytestmark = pytest.mark.e2e

USERS = ("alice@example.com", "bob@example.com", "charlie@example.com", "dave@example.com")


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[Site]:
    llm_log = tmp_path_factory.mktemp("fake-llm") / "requests.jsonl"
    with fresh_database() as db_env:
        base = make_env(**db_env, **{**ENV, "ECHO_DELAY_MS": "0"})
        fake_llm = fake_llm_server(env=base, log=llm_log, chunk_delay_ms=5)
        core = core_server(env=base)
        env = {**base, "CORTEX_CORE_URL": core.url, "CORTEX_LLM_BASE_URL": f"{fake_llm.url}/v1"}
        notes = notes_expert(base, jwks_url=f"{core.url}/.well-known/jwks.json")
        workers: list[ServerProcess] = [turn_worker(env), turn_worker(env)]
        with running_together(
            fake_llm, core, notes, *workers, meanwhile=lambda: create_users(*USERS, password=PASSWORD, env=base)
        ):
            yield signed_in(Site, core_url=core.url, env=env, llm_log=llm_log, notes_url=notes.url)


def reported(site: Site) -> list[dict]:
    return [json.loads(line) for line in site.llm_log.read_text().splitlines()]


def usage(site: Site, who: str, **params: str) -> dict:
    response = httpx2.get(f"{site.url}/usage", params=params, headers=site.auth(who), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def workspace_with(site: Site, owner: str, *members: str, **fields: int) -> str:
    workspace = httpx2.post(
        f"{site.url}/config/workspace", json={"name": f"budget {time.monotonic()}"}, headers=site.auth(owner)
    ).json()["workspace"]["id"]
    if fields:
        patched = httpx2.patch(f"{site.url}/config/workspace/{workspace}", json=fields, headers=site.auth(owner))
        assert patched.status_code == 200, patched.text
    return workspace


def conversation_in(site: Site, owner: str, workspace_id: str, *members: str) -> str:
    response = httpx2.post(
        f"{site.url}/config/conversation",
        json={
            "workspace_id": workspace_id,
            "topic": "t",
            "responder": "llm",
            "participant_ids": [site.user_ids[who] for who in members],
        },
        headers=site.auth(owner),
    )
    assert response.status_code == 201, response.text
    return response.json()["conversation"]["id"]


def ends_of(stream, turn_ids: set[str], timeout: float = 45) -> list[dict]:
    """The terminal events of these turns (read from one stream, in whatever order they end)."""
    ends: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(ends) < len(turn_ids):
        _, event = stream.event(timeout=deadline - time.monotonic())
        turn_id = event.get("data", {}).get("turn_id")
        if turn_id in turn_ids and event["type"] in TERMINAL:
            ends[turn_id] = event
    return list(ends.values())


def test_usage_by_day_workspace_conversation_and_model_is_what_the_model_reported(system):
    site = system
    first = site.conversation("llm", participants=("charlie",))
    second = site.conversation("llm", participants=("charlie",))
    site.llm_log.write_text("")
    completed = []
    with site.stream("charlie") as charlie:
        for conversation, content in ((first, "hello"), (first, "note milk [tool]"), (second, "hi again")):
            turn_id = site.post("charlie", conversation, content)["turn_id"]
            events = until_end(charlie, turn_id)
            assert events[-1][1]["type"] == "assistant.completed", events[-1]
            completed.append(events[-1][1]["data"]["usage"])
    model = reported(site)
    assert len(model) == 4  # the [tool] turn asked twice
    assert all(entry["body"]["stream_options"] == {"include_usage": True} for entry in model)
    input_tokens = sum(entry["usage"]["prompt_tokens"] for entry in model)
    output_tokens = sum(entry["usage"]["completion_tokens"] for entry in model)
    # Each turn's `assistant.completed` carries its own usage, as reported.
    assert [u["tool_calls"] for u in completed] == [0, 1, 0]
    assert {u["model"] for u in completed} == {"fake-model"}
    assert sum(u["input_tokens"] for u in completed) == input_tokens
    assert sum(u["output_tokens"] for u in completed) == output_tokens
    assert completed[1]["input_tokens"] == model[1]["usage"]["prompt_tokens"] + model[2]["usage"]["prompt_tokens"]

    today = datetime.now(UTC).date().isoformat()
    totals = {"turns": 3, "input_tokens": input_tokens, "output_tokens": output_tokens, "tool_calls": 1}
    by_day = usage(site, "charlie", group_by="day", **{"from": today, "to": today})
    assert by_day["items"] == [{"key": today, **totals}]
    assert usage(site, "charlie", group_by="model")["items"] == [{"key": "fake-model", **totals}]
    assert usage(site, "charlie", group_by="workspace")["items"] == [{"key": site.workspace_id, **totals}]
    per_conversation = {item["key"]: item for item in usage(site, "charlie", group_by="conversation")["items"]}
    assert set(per_conversation) == {first, second}
    assert per_conversation[first]["turns"] == 2 and per_conversation[second]["turns"] == 1
    assert by_day["budget"] == {"period": "month", "tokens": 0, "used": input_tokens + output_tokens}
    # Only the caller's own: the workspace's owner sees none of charlie's turns as hers.
    assert usage(site, "alice", group_by="day")["items"] == []
    assert usage(site, "charlie", group_by="day", **{"from": "2000-01-01", "to": "2000-01-31"})["items"] == []
    bad = httpx2.get(f"{site.url}/usage", params={"group_by": "week"}, headers=site.auth("charlie"))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"


def test_a_workspace_budget_reached_mid_conversation_fails_the_next_turn_before_the_model(system):
    site = system
    workspace = workspace_with(site, "bob", monthly_tokens=1)  # the first turn passes it
    conversation = conversation_in(site, "bob", workspace, "dave")
    with site.stream("dave") as dave, site.stream("bob") as bob:
        turn_id = site.post("dave", conversation, "first")["turn_id"]
        assert until_end(dave, turn_id)[-1][1]["type"] == "assistant.completed"
        # The owner is warned once, when the workspace's budget passes 80%.
        warning = None
        deadline = time.monotonic() + 20
        while warning is None and time.monotonic() < deadline:
            _, event = bob.event(timeout=deadline - time.monotonic())
            if event["type"] == "budget.warning":
                warning = event
        assert warning is not None and warning["data"]["scope"] == "workspace"
        assert warning["data"]["workspace_id"] == workspace and warning["data"]["tokens"] == 1
        asked = len(reported(site))
        for content in ("second", "third"):
            answer = site.post("dave", conversation, content)  # the input is stored as always
            events = until_end(dave, answer["turn_id"])
            assert [event["type"] for _, event in events] == ["assistant.started", "assistant.failed"]
            assert events[-1][1]["data"]["error"]["code"] == "budget_exceeded"
        assert len(reported(site)) == asked, "no model request past the budget"
        # No second warning in the period: the next event bob gets is his own input.
        site.post("bob", conversation, "ping")
        _, event = bob.event(timeout=10)
        while event["type"] != "input":
            assert event["type"] != "budget.warning"
            _, event = bob.event(timeout=10)
    messages = httpx2.get(f"{site.url}/messages", params={"conversation_id": conversation}, headers=site.auth("dave"))
    contents = [m["content"] for m in messages.json()["messages"] if m["author"] == "user"]
    assert {"second", "third"} <= set(contents)


def test_two_workers_racing_on_the_last_tokens_overrun_by_at_most_the_running_turns(system):
    """The README's bound: a turn checks the budget before its model request and records what it
    used at its end, so turns already running when the budget is reached finish: a user's budget
    is overrun by at most TURN_MAX_RUNNING_PER_USER turns (here two racing turns, on two workers)."""
    site = system
    workspace = workspace_with(site, "alice")
    conversations = [conversation_in(site, "alice", workspace, "bob") for _ in range(2)]
    with site.stream("bob") as stream:
        turn_id = site.post("bob", conversations[0], "measure")["turn_id"]
        measured = until_end(stream, turn_id)[-1][1]["data"]["usage"]
        one_turn = measured["input_tokens"] + measured["output_tokens"]
        used = usage(site, "bob")["budget"]["used"]
        budget = used + 1  # one token left
        manage(
            "shell",
            "-c",
            "from usage.models import UserBudget; "
            f"UserBudget.objects.update_or_create(user_id='{site.user_ids['bob']}', defaults={{'monthly_tokens': {budget}}})",
            env=site.env,
        )
        posted: list[str] = []
        start = threading.Barrier(2)

        def post(conversation: str) -> None:
            start.wait()
            posted.append(site.post("bob", conversation, "race")["turn_id"])

        threads = [threading.Thread(target=post, args=(c,)) for c in conversations]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ends = ends_of(stream, set(posted))
    outcomes = sorted(end["type"] for end in ends)
    assert "assistant.completed" in outcomes, outcomes  # at least the first one had the token it needed
    for end in ends:
        if end["type"] == "assistant.failed":
            assert end["data"]["error"]["code"] == "budget_exceeded"
    after = usage(site, "bob")["budget"]
    assert after["tokens"] == budget
    racing = len(posted)
    # Each racing turn is about one measured turn (the history grows by a message or two).
    assert after["used"] - budget <= racing * (one_turn + 64)
    with site.stream("bob") as stream:  # and now the budget holds
        turn_id = site.post("bob", conversations[0], "after the race")["turn_id"]
        assert until_end(stream, turn_id)[-1][1]["data"]["error"]["code"] == "budget_exceeded"
