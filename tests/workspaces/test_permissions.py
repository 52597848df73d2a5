"""The permission matrix: alice owns, bob participates, charlie is an outsider.

The outsider gets 404 on every object endpoint, exactly like a missing id, and nothing changes.
"""

from __future__ import annotations

import uuid

import pytest

from conftest import client_for
from workspaces.models import Conversation, Message, Workspace

pytestmark = pytest.mark.django_db


def detail_calls(workspace, conversation):
    return [
        ("get", f"/config/workspace/{workspace.id}", None),
        ("patch", f"/config/workspace/{workspace.id}", {"name": "taken over"}),
        ("delete", f"/config/workspace/{workspace.id}", None),
        ("get", f"/config/conversation/{conversation.id}", None),
        ("patch", f"/config/conversation/{conversation.id}", {"topic": "taken over"}),
        ("delete", f"/config/conversation/{conversation.id}", None),
        ("get", f"/config/conversation?workspace_id={workspace.id}", None),
        ("get", f"/messages?conversation_id={conversation.id}", None),
        ("post", "/input", {"content": "hello", "conversation_id": str(conversation.id)}),
        ("post", "/config/conversation", {"workspace_id": str(workspace.id), "topic": "sneaky"}),
    ]


def call(client, method, url, body):
    return getattr(client, method)(url, body, format="json") if body is not None else getattr(client, method)(url)


def snapshot():
    return (
        list(Workspace.objects.values_list("id", "name")),
        list(Conversation.objects.values_list("id", "topic")),
        Message.objects.count(),
    )


def test_outsider_gets_404_everywhere_and_changes_nothing(workspace, conversation, charlie):
    client = client_for(charlie)
    before = snapshot()
    for method, url, body in detail_calls(workspace, conversation):
        response = call(client, method, url, body)
        assert response.status_code == 404, (method, url, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert snapshot() == before


def test_outsider_404_is_identical_to_a_missing_object(workspace, conversation, charlie):
    client = client_for(charlie)
    foreign = client.get(f"/config/workspace/{workspace.id}")
    missing = client.get(f"/config/workspace/{uuid.uuid4()}")
    malformed = client.get("/config/workspace/not-a-uuid")
    assert foreign.status_code == missing.status_code == malformed.status_code == 404
    assert foreign.json() == missing.json() == malformed.json()


def test_outsider_lists_do_not_show_foreign_objects(workspace, conversation, charlie):
    client = client_for(charlie)
    assert client.get("/config/workspace").json() == {"workspaces": []}
    assert client.get("/config/conversation").json() == {"conversations": []}


def test_participant_reads_and_posts_but_does_not_manage(workspace, conversation, bob):
    client = client_for(bob)
    assert client.get(f"/messages?conversation_id={conversation.id}").status_code == 200
    posted = client.post("/input", {"content": "hi", "conversation_id": str(conversation.id)}, format="json")
    assert posted.status_code == 200
    listed = client.get("/config/conversation").json()["conversations"]
    assert [c["id"] for c in listed] == [str(conversation.id)]
    assert client.get(f"/config/conversation?workspace_id={workspace.id}").status_code == 200
    for method, url, body in detail_calls(workspace, conversation)[:6]:
        assert call(client, method, url, body).status_code == 404, (method, url)
    assert (
        client.post(
            "/config/conversation", {"workspace_id": str(workspace.id), "topic": "x"}, format="json"
        ).status_code
        == 404
    )
    assert client.get("/config/workspace").json() == {"workspaces": []}
    assert Conversation.objects.get(id=conversation.id).topic == "Planning"


def test_owner_manages_everything(workspace, conversation, alice, bob):
    client = client_for(alice)
    assert client.get(f"/config/workspace/{workspace.id}").json()["workspace"]["owner_id"] == str(alice.id)
    patched = client.patch(f"/config/workspace/{workspace.id}", {"description": "d"}, format="json")
    assert patched.status_code == 200 and patched.json()["workspace"]["description"] == "d"
    conv = client.get(f"/config/conversation/{conversation.id}").json()["conversation"]
    assert sorted(conv["participant_ids"]) == sorted([str(alice.id), str(bob.id)])
    patched = client.patch(
        f"/config/conversation/{conversation.id}", {"topic": "New", "participant_ids": []}, format="json"
    )
    assert patched.status_code == 200
    assert patched.json()["conversation"]["participant_ids"] == [str(alice.id)]  # the owner always stays
    assert client_for(bob).get(f"/messages?conversation_id={conversation.id}").status_code == 404
    assert client.delete(f"/config/conversation/{conversation.id}").status_code == 204
    assert not Conversation.objects.filter(id=conversation.id).exists()
    assert client.delete(f"/config/workspace/{workspace.id}").status_code == 204
    assert not Workspace.objects.filter(id=workspace.id).exists()


def test_deleting_a_workspace_cascades_to_conversations_and_messages(workspace, conversation, alice):
    client = client_for(alice)
    client.post("/input", {"content": "hi", "conversation_id": str(conversation.id)}, format="json")
    assert Message.objects.filter(conversation=conversation).count() == 1
    assert client.delete(f"/config/workspace/{workspace.id}").status_code == 204
    assert Conversation.objects.count() == 0 and Message.objects.count() == 0


def test_unauthenticated_requests_are_401(api, workspace, conversation):
    for method, url, body in detail_calls(workspace, conversation) + [("get", "/config/workspace", None)]:
        response = call(api, method, url, body)
        assert response.status_code == 401, (method, url)
        assert response.json()["error"]["code"] == "not_authenticated"
