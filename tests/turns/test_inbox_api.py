"""The inbox through the API and its services against the real database, with the worker's database
steps (claim, write) called as the worker calls them: alice owns and starts the turn, bob
participates, charlie is an outsider. The worker itself: test_inbox_e2e.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import client_for
from streaming.models import Event
from tests.factories import ConversationFactory
from turns import services
from turns.inbox.models import InboxRequest
from turns.inbox.services import Pause
from turns.models import Turn
from turns.services import TurnWrite
from workspaces.models import Expert

pytestmark = pytest.mark.django_db

OWNER = "worker-1"
SCHEMA = {"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}


@pytest.fixture
def waiting(alice, workspace, bob):
    """An echo turn of alice's, claimed and paused on an approval (as a responder would pause it)."""
    conversation = ConversationFactory(workspace=workspace, topic="T", participants=[bob], responder="echo")
    response = client_for(alice).post(
        "/input", {"content": "hi", "conversation_id": str(conversation.id)}, format="json"
    )
    turn_id = response.json()["turn_id"]
    rows, _ = services.turns_claim(owner=OWNER, limit=10)
    assert [row.id for row in rows] == [Turn.objects.get(id=turn_id).id]
    data = {"expert": "notes", "tool": "add_note", "arguments": {"title": "milk"}}
    pause = Pause(kind="approval", data=data, state={"responder": "echo", "asked": {"kind": "approval", **data}})
    services.turns_write(owner=OWNER, writes=[TurnWrite(rows[0].id, pause=pause)])
    return Turn.objects.get(id=turn_id)


def answer(user, request_id, body):
    return client_for(user).post(f"/inbox/{request_id}/answer", body, format="json")


def types_of(user) -> list[str]:
    return [event.body.type for event in Event.objects.filter(recipient=user).order_by("seq").select_related("body")]


def test_a_paused_turn_waits_holding_nothing_and_every_participant_sees_the_request(waiting, alice, bob):
    assert (waiting.status, waiting.lease_owner, waiting.lease_expires_at) == ("waiting", "", None)
    assert waiting.time_left is not None and waiting.time_left > 0
    assert not services.turns_due_exist()  # not due until answered or expired
    for user in (alice, bob):
        assert types_of(user)[-1] == "approval.requested"
    [item] = client_for(alice).get("/inbox").json()["items"]
    assert (item["kind"], item["tool"], item["arguments"], item["turn_id"]) == (
        "approval",
        "add_note",
        {"title": "milk"},
        str(waiting.id),
    )
    assert client_for(bob).get("/inbox").json()["items"] == []  # bob sees the event, not an inbox item


def test_participant_gets_403_outsider_404_and_nothing_changes(waiting, bob, charlie):
    request = InboxRequest.objects.get()
    refused = answer(bob, request.id, {"decision": "approve"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    hidden = answer(charlie, request.id, {"decision": "approve"})
    missing = answer(charlie, "00000000-0000-0000-0000-000000000000", {"decision": "approve"})
    assert hidden.status_code == 404 and hidden.content == missing.content
    request.refresh_from_db()
    assert request.status == "open" and request.answer is None


def test_answer_resumes_on_the_next_claim_with_the_answer_and_a_second_answer_is_409(waiting, alice):
    request = InboxRequest.objects.get()
    assert answer(alice, request.id, {"action": "accept"}).status_code == 400  # an approval takes a decision
    done = answer(alice, request.id, {"decision": "approve"})
    assert done.status_code == 200 and done.json()["item"]["status"] == "answered"
    assert answer(alice, request.id, {"decision": "deny"}).status_code == 409
    assert types_of(alice)[-1] == "approval.resolved"
    rows, _ = services.turns_claim(owner="worker-2", limit=10)
    [row] = rows
    assert row.resolution == {"kind": "approval", "request_id": str(request.id), "answer": {"decision": "approve"}}
    assert row.state["asked"]["arguments"] == {"title": "milk"}
    turn = Turn.objects.get(id=waiting.id)
    assert (turn.status, turn.lease_owner, turn.attempts) == ("running", "worker-2", 2)
    assert types_of(alice).count("assistant.started") == 1  # resumed, not started again


def test_unanswered_request_expires_at_the_claim_and_cannot_be_answered(waiting, alice):
    Turn.objects.filter(id=waiting.id).update(resume_at=timezone.now() - timedelta(seconds=1))
    InboxRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client_for(alice).get("/inbox").json()["items"] == []
    assert answer(alice, InboxRequest.objects.get().id, {"decision": "approve"}).status_code == 409
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    assert row.resolution["answer"] == {"decision": "expired"}
    assert InboxRequest.objects.get().status == "expired"
    assert types_of(alice)[-1] == "approval.resolved"


def test_cancelling_a_waiting_turn_ends_it_and_expires_its_request(waiting, alice):
    response = client_for(alice).post(f"/turns/{waiting.id}/cancel")
    assert response.status_code == 202
    assert Turn.objects.get(id=waiting.id).status == "cancelled"
    assert InboxRequest.objects.get().status == "expired"
    assert types_of(alice)[-2:] == ["approval.resolved", "assistant.cancelled"]


def test_question_content_is_validated_against_its_schema(waiting, alice):
    request = InboxRequest.objects.get()
    InboxRequest.objects.filter(id=request.id).update(kind="question", data={**request.data, "schema": SCHEMA})
    bad = answer(alice, request.id, {"action": "accept", "content": {"confirm": "yes"}})
    assert bad.status_code == 400 and "confirm" in bad.json()["error"]["fields"]
    assert InboxRequest.objects.get().status == "open"
    good = answer(alice, request.id, {"action": "accept", "content": {"confirm": True}})
    assert good.status_code == 200 and good.json()["item"]["answer"] == {
        "action": "accept",
        "content": {"confirm": True},
    }
    assert types_of(alice)[-1] == "question.answered"


def test_tool_policy_defaults_from_read_only_hint_and_entries_override(workspace):
    expert = Expert(
        workspace=workspace,
        name="notes",
        url="http://127.0.0.1:1/mcp",
        tools=[{"name": "get_note", "read_only": True}, {"name": "add_note", "read_only": False}, {"name": "x"}],
    )
    assert [expert.policy_for(name) for name in ("get_note", "add_note", "x", "unknown")] == [
        "auto",
        "ask",
        "ask",
        "ask",
    ]
    expert.tool_policy = {"get_note": "deny", "add_note": "auto"}
    assert [tool["name"] for tool in expert.visible_tools()] == ["add_note", "x"]
    assert expert.policy_for("add_note") == "auto"


def test_in_a_shared_conversation_a_tool_without_an_entry_asks_whatever_its_hint(workspace):
    expert = Expert(
        workspace=workspace,
        name="notes",
        url="http://127.0.0.1:1/mcp",
        tools=[{"name": "get_note", "read_only": True}, {"name": "search_notes", "read_only": True}],
        tool_policy={"search_notes": "auto"},  # the owner's own word
    )
    assert expert.policy_for("get_note") == "auto", "alone: the expert's readOnlyHint"
    assert expert.policy_for("get_note", shared=True) == "ask"
    assert expert.policy_for("search_notes", shared=True) == "auto"
    assert {tool["name"]: tool["policy"] for tool in expert.visible_tools(shared=True)} == {
        "get_note": "ask",
        "search_notes": "auto",
    }


def test_tool_policy_is_set_by_patch_and_refused_when_unknown(alice, workspace):
    expert = Expert.objects.create(workspace=workspace, name="notes", url="http://127.0.0.1:1/mcp", status="ok")
    url = f"/config/workspace/{workspace.id}/experts/{expert.id}"
    refused = client_for(alice).patch(url, {"tool_policy": {"add_note": "maybe"}}, format="json")
    assert refused.status_code == 400 and "tool_policy" in refused.json()["error"]["fields"]
    done = client_for(alice).patch(url, {"tool_policy": {"add_note": "deny"}}, format="json")
    assert done.status_code == 200 and done.json()["expert"]["tool_policy"] == {"add_note": "deny"}
