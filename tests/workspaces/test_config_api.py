from __future__ import annotations

import uuid

import pytest

from conftest import client_for
from workspaces.models import Conversation, Message, Workspace

pytestmark = pytest.mark.django_db


def test_create_and_list_workspaces(alice, charlie):
    client = client_for(alice)
    response = client.post(
        "/config/workspace", {"name": "Research", "description": "notes", "metadata": {"color": "blue"}}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "workspace created"
    ws = body["workspace"]
    assert ws["name"] == "Research" and ws["owner_id"] == str(alice.id) and ws["metadata"] == {"color": "blue"}
    uuid.UUID(ws["id"])
    assert [w["id"] for w in client.get("/config/workspace").json()["workspaces"]] == [ws["id"]]
    assert client_for(charlie).get("/config/workspace").json()["workspaces"] == []


def test_create_conversation_always_includes_creator(alice, bob, workspace):
    client = client_for(alice)
    response = client.post(
        "/config/conversation",
        {"workspace_id": str(workspace.id), "topic": "Launch", "participant_ids": [str(bob.id)], "metadata": {}},
        format="json",
    )
    assert response.status_code == 201
    conv = response.json()["conversation"]
    assert response.json()["status"] == "conversation created"
    assert conv["workspace_id"] == str(workspace.id)
    assert sorted(conv["participant_ids"]) == sorted([str(alice.id), str(bob.id)])
    listed = client.get(f"/config/conversation?workspace_id={workspace.id}").json()["conversations"]
    assert [c["id"] for c in listed] == [conv["id"]]


def test_messages_are_paginated_newest_first(alice, conversation):
    client = client_for(alice)
    ids = [
        client.post("/input", {"content": f"m{i}", "conversation_id": str(conversation.id)}, format="json").json()[
            "data"
        ]["id"]
        for i in range(5)
    ]
    page = client.get(f"/messages?conversation_id={conversation.id}&limit=2").json()
    assert [m["id"] for m in page["messages"]] == ids[::-1][:2]
    page2 = client.get(f"/messages?conversation_id={conversation.id}&limit=2&before={page['next_before']}").json()
    assert [m["id"] for m in page2["messages"]] == ids[::-1][2:4]
    page3 = client.get(f"/messages?conversation_id={conversation.id}&limit=2&before={page2['next_before']}").json()
    assert [m["id"] for m in page3["messages"]] == ids[:1]
    assert page3["next_before"] is None


def test_input_without_conversation(alice):
    response = client_for(alice).post("/input", {"content": "note to self"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "received"
    assert set(body["data"]) == {"id", "content", "conversation_id", "metadata", "timestamp"}
    assert body["data"]["conversation_id"] is None
    assert Message.objects.get(id=body["data"]["id"]).sender == alice


def test_idempotent_retry_returns_first_response_and_creates_nothing(alice, conversation):
    client = client_for(alice)
    body = {"content": "once", "conversation_id": str(conversation.id)}
    first = client.post("/input", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post("/input", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert Message.objects.count() == 1
    conflict = client.post("/input", {**body, "content": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert Message.objects.count() == 1
    assert client.post("/input", body, format="json", HTTP_IDEMPOTENCY_KEY="k-2").status_code == 200
    assert Message.objects.count() == 2


def test_idempotency_keys_are_per_user(alice, bob, conversation):
    body = {"content": "same", "conversation_id": str(conversation.id)}
    a = client_for(alice).post("/input", body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    b = client_for(bob).post("/input", body, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert a.json()["data"]["id"] != b.json()["data"]["id"]


def test_idempotency_key_expires_after_24_hours(alice):
    from datetime import timedelta

    import time_machine

    client = client_for(alice)
    first = client.post("/input", {"content": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    with time_machine.travel(timedelta(hours=25)):
        client = client_for(alice)
        again = client.post("/input", {"content": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="old")
    assert again.json()["data"]["id"] != first.json()["data"]["id"]
    assert Message.objects.count() == 2


def test_workspace_delete_and_patch_validate(alice, workspace):
    client = client_for(alice)
    response = client.patch(f"/config/workspace/{workspace.id}", {"name": ""}, format="json")
    assert response.status_code == 400
    assert Workspace.objects.get(id=workspace.id).name == workspace.name


def test_conversation_patch_rejects_unknown_participants(alice, conversation):
    response = client_for(alice).patch(
        f"/config/conversation/{conversation.id}", {"participant_ids": [str(uuid.uuid4())]}, format="json"
    )
    assert response.status_code == 400
    assert "participant_ids" in response.json()["error"]["fields"]
    assert Conversation.objects.get(id=conversation.id).participants.count() == 2
