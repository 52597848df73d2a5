"""Bad input on every endpoint: the right status, the one envelope, and nothing written."""

from __future__ import annotations

import uuid

import pytest

from conftest import client_for
from workspaces.models import Conversation, IdempotencyRecord, Message, Workspace

pytestmark = pytest.mark.django_db

BIG = "x" * 20_000  # metadata over the 16 KiB default


def counts():
    return (
        Workspace.objects.count(),
        Conversation.objects.count(),
        Message.objects.count(),
        IdempotencyRecord.objects.count(),
    )


def assert_envelope(response, status, code=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["message"]
    if code:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({}, 400, "name"),
        ({"name": ""}, 400, "name"),
        ({"name": 5}, 400, None),
        ({"name": "n" * 201}, 400, "name"),
        ({"name": "ok", "description": "d" * 2001}, 400, "description"),
        ({"name": "ok", "metadata": []}, 400, "metadata"),
        ({"name": "ok", "metadata": "text"}, 400, "metadata"),
        ({"name": "ok", "metadata": {"blob": BIG}}, 413, "metadata"),
    ],
)
def test_workspace_create_rejects(alice, body, status, field):
    before = counts()
    error = assert_envelope(client_for(alice).post("/config/workspace", body, format="json"), status)
    if field:
        assert field in error["fields"]
    assert counts() == before


@pytest.mark.parametrize(
    "make_body, status, field",
    [
        (lambda ws, bob: {"topic": "t"}, 400, "workspace_id"),
        (lambda ws, bob: {"workspace_id": "nope", "topic": "t"}, 400, "workspace_id"),
        (lambda ws, bob: {"workspace_id": str(ws.id)}, 400, "topic"),
        (lambda ws, bob: {"workspace_id": str(ws.id), "topic": "t", "participant_ids": "bob"}, 400, "participant_ids"),
        (lambda ws, bob: {"workspace_id": str(ws.id), "topic": "t", "participant_ids": ["x"]}, 400, "participant_ids"),
        (
            lambda ws, bob: {"workspace_id": str(ws.id), "topic": "t", "participant_ids": [str(uuid.uuid4())]},
            400,
            "participant_ids",
        ),
        (lambda ws, bob: {"workspace_id": str(ws.id), "topic": "t", "metadata": [1]}, 400, "metadata"),
        (lambda ws, bob: {"workspace_id": str(ws.id), "topic": "t", "metadata": {"b": BIG}}, 413, "metadata"),
        (lambda ws, bob: {"workspace_id": str(uuid.uuid4()), "topic": "t"}, 404, None),
    ],
)
def test_conversation_create_rejects(alice, bob, workspace, make_body, status, field):
    before = counts()
    error = assert_envelope(
        client_for(alice).post("/config/conversation", make_body(workspace, bob), format="json"), status
    )
    if field:
        assert field in error["fields"]
    assert counts() == before


@pytest.mark.parametrize(
    "make_body, status, code",
    [
        (lambda conv: {}, 400, "invalid_input"),
        (lambda conv: {"content": ""}, 400, "invalid_input"),
        (lambda conv: {"content": "   \n"}, 400, "invalid_input"),
        (lambda conv: {"content": 42}, 400, "invalid_input"),
        (lambda conv: {"content": "c" * 32_769}, 413, "payload_too_large"),
        (lambda conv: {"content": "hi", "conversation_id": "not-a-uuid"}, 400, "invalid_input"),
        (lambda conv: {"content": "hi", "conversation_id": str(uuid.uuid4())}, 404, "not_found"),
        (lambda conv: {"content": "hi", "metadata": ["a"]}, 400, "invalid_input"),
        (lambda conv: {"content": "hi", "metadata": "a"}, 400, "invalid_input"),
        (lambda conv: {"content": "hi", "metadata": {"b": BIG}}, 413, "payload_too_large"),
    ],
)
def test_input_rejects(alice, conversation, make_body, status, code):
    before = counts()
    assert_envelope(client_for(alice).post("/input", make_body(conversation), format="json"), status, code)
    assert counts() == before


def test_input_to_foreign_conversation_is_404(charlie, conversation):
    before = counts()
    body = {"content": "hi", "conversation_id": str(conversation.id)}
    assert_envelope(client_for(charlie).post("/input", body, format="json"), 404, "not_found")
    assert counts() == before


def test_content_at_the_limit_is_accepted(alice):
    assert client_for(alice).post("/input", {"content": "c" * 32_768}, format="json").status_code == 200


@pytest.mark.parametrize("url", ["/input", "/config/workspace", "/config/conversation"])
def test_non_json_body_is_400_and_wrong_type_415(alice, url):
    client = client_for(alice)
    before = counts()
    assert_envelope(client.post(url, "{not json", content_type="application/json"), 400, "malformed_body")
    assert_envelope(client.post(url, "content=hi", content_type="text/plain"), 415, "unsupported_media_type")
    assert_envelope(
        client.post(url, "content=hi", content_type="application/x-www-form-urlencoded"), 415, "unsupported_media_type"
    )
    assert_envelope(client.post(url, "[1, 2]", content_type="application/json"), 400)
    assert counts() == before


def test_request_body_over_the_global_limit_is_413(alice):
    before = counts()
    body = '{"content": "' + "x" * 300_000 + '"}'
    assert_envelope(client_for(alice).post("/input", body, content_type="application/json"), 413, "payload_too_large")
    assert counts() == before


def test_idempotency_key_too_long_is_400(alice):
    response = client_for(alice).post("/input", {"content": "x"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256)
    assert_envelope(response, 400, "invalid_input")
    assert counts() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "query, field",
    [
        ("", "conversation_id"),
        ("conversation_id=zz", "conversation_id"),
        ("limit=0", "limit"),
        ("limit=1000", "limit"),
        ("before=nope", "before"),
    ],
)
def test_messages_query_validation(alice, conversation, query, field):
    url = f"/messages?conversation_id={conversation.id}&{query}" if field != "conversation_id" else f"/messages?{query}"
    error = assert_envelope(client_for(alice).get(url), 400, "invalid_input")
    assert field in error["fields"]


def test_messages_before_unknown_message_is_400(alice, conversation):
    error = assert_envelope(
        client_for(alice).get(f"/messages?conversation_id={conversation.id}&before={uuid.uuid4()}"), 400
    )
    assert "before" in error["fields"]


def test_conversation_list_with_malformed_workspace_id_is_400(alice):
    assert_envelope(client_for(alice).get("/config/conversation?workspace_id=zz"), 400, "invalid_input")


@pytest.mark.parametrize(
    "path, body",
    [
        ("/input", {"content": "x", "metadata": {"note": "a\x00b"}}),
        ("/input", {"content": "x", "metadata": {"a\x00": 1}}),
        ("/input", {"content": "\ud800"}),
        ("/config/workspace", {"name": "\udfff"}),
        ("/config/workspace", {"name": "w", "metadata": {"deep": ["\x00"]}}),
        ("/auth/login", {"email": "alice@example.com", "password": "\ud800"}),
    ],
)
def test_strings_no_database_can_store_are_refused_as_malformed(alice, path, body):
    """PostgreSQL refuses NUL in text and jsonb, and an unpaired surrogate cannot be encoded back."""
    import json

    response = client_for(alice).post(path, json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed_body"
