"""Every way a turn ends closes what it left open in the inbox, and a turn that waited (queued, or in
the inbox) is checked again when it runs: its services against the real database, called as the
worker calls them (claim, write). alice owns, bob and dave participate, charlie is an outsider."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from conftest import client_for
from streaming.models import Event
from tests.factories import PASSWORD, ConversationFactory
from turns import services
from turns.inbox.models import InboxRequest
from turns.inbox.selectors import inbox_open_count
from turns.inbox.services import Pause
from turns.models import Turn
from turns.services import TurnWrite

pytestmark = pytest.mark.django_db

OWNER = "worker-1"
SCHEMA = {"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}


def types_of(user) -> list[str]:
    return [event.body.type for event in Event.objects.filter(recipient=user).order_by("seq").select_related("body")]


def post(user, conversation, content: str) -> uuid.UUID:
    response = client_for(user).post(
        "/input", {"content": content, "conversation_id": str(conversation.id)}, format="json"
    )
    assert response.status_code == 200, response.content
    return uuid.UUID(response.json()["turn_id"])


@pytest.fixture
def echo(workspace, bob):
    return ConversationFactory(workspace=workspace, topic="T", participants=[bob], responder="echo")


@pytest.fixture
def asking(alice, echo):
    """alice's running turn, whose expert asked a question in the middle of its call (the older
    `elicitation/create` form: the turn keeps running while the question is open)."""
    turn_id = post(alice, echo, "hi")
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    question = {"request_id": str(uuid.uuid4()), "expert": "notes", "message": "Sure?", "schema": SCHEMA}
    expires_at = timezone.now() + timedelta(seconds=60)
    services.turns_write(owner=OWNER, writes=[TurnWrite(row.id, ask=(question, expires_at))])
    assert inbox_open_count(user_id=alice.id) == 1
    return Turn.objects.get(id=turn_id)


@pytest.mark.parametrize("finish", ["cancelled", "failed", "completed"])
def test_a_turn_that_ends_during_a_mid_call_question_closes_it(asking, alice, bob, finish):
    services.turns_write(owner=OWNER, writes=[TurnWrite(asking.id, finish=finish, content="x", error="stopped")])
    request = InboxRequest.objects.get()
    assert (request.status, request.answer) == ("expired", {"action": "cancel"})
    assert inbox_open_count(user_id=alice.id) == 0, "it no longer counts against INBOX_MAX_OPEN_PER_USER"
    terminal = {"cancelled": "assistant.cancelled", "failed": "assistant.failed", "completed": "assistant.completed"}
    for user in (alice, bob):
        assert types_of(user)[-2:] == ["question.answered", terminal[finish]]


def test_a_dead_workers_turn_ended_by_the_claim_closes_its_mid_call_question(asking, alice):
    Turn.objects.filter(id=asking.id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    rows, _ = services.turns_claim(owner="worker-2", limit=10)
    assert rows == []
    assert Turn.objects.get(id=asking.id).status == "failed"
    assert InboxRequest.objects.get().status == "expired" and inbox_open_count(user_id=alice.id) == 0
    assert types_of(alice)[-2:] == ["question.answered", "assistant.failed"]


@pytest.fixture
def waiting(alice, echo):
    """alice's turn, paused on an approval (as a responder pauses it)."""
    turn_id = post(alice, echo, "hi")
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    data = {"expert": "notes", "tool": "add_note", "arguments": {"title": "milk"}}
    pause = Pause(kind="approval", data=data, state={"responder": "echo", "asked": {"kind": "approval", **data}})
    services.turns_write(owner=OWNER, writes=[TurnWrite(row.id, pause=pause)])
    return Turn.objects.get(id=turn_id)


def test_a_waiting_turn_of_a_deactivated_user_fails_and_its_request_expires(waiting, alice, bob):
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    Turn.objects.filter(id=waiting.id).update(resume_at=timezone.now() - timedelta(seconds=1))
    rows, _ = services.turns_claim(owner=OWNER, limit=10)
    assert rows == []
    turn = Turn.objects.get(id=waiting.id)
    assert (turn.status, turn.head) == ("failed", False)
    request = InboxRequest.objects.get()
    assert (request.status, request.answer) == ("expired", {"decision": "expired"})
    assert inbox_open_count(user_id=alice.id) == 0
    assert types_of(bob)[-2:] == ["approval.resolved", "assistant.failed"]


def remove_participants(conversation, *keep):
    response = client_for(conversation.workspace.owner).patch(
        f"/config/conversation/{conversation.id}", {"participant_ids": [str(user.id) for user in keep]}, format="json"
    )
    assert response.status_code == 200, response.content


def test_a_queued_turn_of_a_participant_removed_since_fails_without_running(alice, bob, echo):
    turn_id = post(bob, echo, "hello")
    remove_participants(echo)  # alice alone now
    rows, _ = services.turns_claim(owner=OWNER, limit=10)
    assert rows == []
    turn = Turn.objects.get(id=turn_id)
    assert (turn.status, turn.started_at) == ("failed", None)
    failed = Event.objects.filter(recipient=alice, body__type="assistant.failed").get().body.payload["data"]
    assert failed["error"]["code"] == "permission_denied"
    assert "assistant.started" not in types_of(alice)


def test_a_waiting_turn_of_a_participant_removed_since_fails_when_it_would_resume(workspace, alice, bob):
    conversation = ConversationFactory(workspace=workspace, topic="T", participants=[bob], responder="echo")
    turn_id = post(bob, conversation, "hi")
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    data = {"expert": "notes", "tool": "search_notes", "arguments": {}}
    pause = Pause(kind="approval", data=data, state={"responder": "echo", "asked": {"kind": "approval", **data}})
    services.turns_write(owner=OWNER, writes=[TurnWrite(row.id, pause=pause)])
    request = InboxRequest.objects.get()
    assert (
        client_for(bob).post(f"/inbox/{request.id}/answer", {"decision": "approve"}, format="json").status_code == 200
    )
    remove_participants(conversation)
    rows, _ = services.turns_claim(owner=OWNER, limit=10)
    assert rows == [], "it does not go on with bob's authority once he no longer takes part"
    assert Turn.objects.get(id=turn_id).status == "failed"
    assert types_of(alice)[-1] == "assistant.failed"


def test_a_turn_waiting_with_personal_context_fails_when_someone_joined_since(workspace, alice, bob):
    alone = ConversationFactory(workspace=workspace, topic="Mine", participants=[], responder="echo")
    client_for(alice).patch(f"/config/conversation/{alone.id}", {"context_scope": "personal"}, format="json")
    turn_id = post(alice, alone, "what is my salary?")
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    assert row.context_scope == "personal"
    data = {"expert": "notes", "tool": "add_note", "arguments": {"title": "salary"}}
    state = {"responder": "llm", "scope": "personal", "messages": [], "asked": {"kind": "approval", **data}}
    services.turns_write(owner=OWNER, writes=[TurnWrite(row.id, pause=Pause(kind="approval", data=data, state=state))])
    joined = client_for(alice).patch(
        f"/config/conversation/{alone.id}", {"participant_ids": [str(bob.id)]}, format="json"
    )
    assert joined.json()["conversation"]["context_scope"] == "conversation"
    request = InboxRequest.objects.get()
    assert (
        client_for(alice).post(f"/inbox/{request.id}/answer", {"decision": "approve"}, format="json").status_code == 200
    )
    rows, _ = services.turns_claim(owner=OWNER, limit=10)
    assert rows == [], "its saved model request holds alice's memory from everywhere: bob would read the answer"
    turn = Turn.objects.get(id=turn_id)
    assert turn.status == "failed" and "joined" in turn.error
    assert turn.state is None, "a finished turn keeps no model request"
    assert types_of(bob) == ["approval.resolved", "assistant.failed"], "no word of the answer reached bob"


BOB_SAID = "My passport number is X1234567, keep it safe"


def test_erasure_scrubs_the_erased_users_words_from_other_users_turns_and_inbox_rows(workspace, alice, bob):
    conversation = ConversationFactory(workspace=workspace, topic="T", participants=[bob], responder="echo")
    bobs = post(bob, conversation, BOB_SAID)
    alices = post(alice, conversation, "Please note the passport number")
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    assert row.id == bobs
    services.turns_write(owner=OWNER, writes=[TurnWrite(row.id, finish="completed", content=f"Noted: {BOB_SAID}")])
    [row], _ = services.turns_claim(owner=OWNER, limit=10)
    assert row.id == alices
    # alice's llm turn, paused as the llm responder pauses: her model request holds bob's words (his
    # message, his remembered item, and the arguments the model built from them).
    arguments = {"title": "Passport", "body": BOB_SAID}
    messages = [
        {"role": "system", "content": "You are the assistant ... in a conversation between Alice, Bob. ..."},
        {
            "role": "user",
            "name": "Bob",
            "content": "<<data:00ff remembered items>>\n- Blood type AB negative\n<<end data:00ff>>",
        },
        {"role": "user", "name": "Bob", "content": BOB_SAID},
        {"role": "assistant", "content": f"Noted: {BOB_SAID}"},
        {"role": "user", "name": "Alice", "content": "Please note the passport number"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "notes__add_note", "arguments": json.dumps(arguments)},
                }
            ],
        },
    ]
    data = {"expert": "notes", "tool": "add_note", "arguments": arguments}
    state = {
        "responder": "llm",
        "messages": messages,
        "answer": [],
        "round": 0,
        "speakers": {"Alice": str(alice.id), "Bob": str(bob.id)},
        "pending": [{"id": "c1", "name": "notes__add_note", "arguments": json.dumps(arguments)}],
        "asked": {"kind": "approval", **data},
    }
    services.turns_write(owner=OWNER, writes=[TurnWrite(row.id, pause=Pause(kind="approval", data=data, state=state))])

    erased = client_for(bob).delete("/account", {"password": PASSWORD}, format="json")
    assert erased.status_code == 204, erased.content

    turn = Turn.objects.get(id=alices)
    kept = json.dumps(turn.state)
    assert "X1234567" not in kept and "AB negative" not in kept and "Bob" not in kept, kept
    assert "Please note the passport number" in kept, "alice's own words stay"
    request = InboxRequest.objects.get(turn_id=alices)
    assert "X1234567" not in json.dumps(request.data)
    assert request.data["arguments"] == turn.state["asked"]["arguments"], "the approval still shows what would be sent"
    assert Turn.objects.get(id=alices).status == "waiting", "alice's turn goes on, without bob's words"
