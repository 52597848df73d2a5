"""The notes expert as a real process, verifying the core's tokens against a real core's JWKS:
workspaces isolated, a token for expert A refused by expert B, a token for one tool refused by
another, rotation (a published key that does not sign yet is accepted)."""

from __future__ import annotations

import time
import uuid

import httpx2
import jwt
import pytest
from channels.db import database_sync_to_async

from mcp_services.experts import tokens
from mcp_services.experts.calls import ExpertCallError, ExpertNeedsInput, expert_call, expert_tools
from tests.experts.conftest import NotesStack
from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory
from tests.servers import create_user
from workspaces import services

pytestmark = [pytest.mark.e2e, pytest.mark.database_agnostic]

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
PASSWORD = "correct-horse-battery-staple"


def url_of(server) -> str:
    return f"{server.url}/mcp"


def post(url: str, token: str | None) -> int:
    headers = {"Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.post(url, json=INITIALIZE, headers=headers, timeout=10).status_code


def mint(audience: str, *, tool: str = "search_notes", key: tokens.SigningKey | None = None, **changes) -> str:
    key = key or tokens.signing_keys()[0]
    now = int(time.time())
    claims = {
        "iss": "cortex-core",
        "aud": audience,
        "sub": str(uuid.uuid4()),
        "workspace_id": str(uuid.uuid4()),
        "tool": tool,
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
        **changes,
    }
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})


def test_a_token_minted_for_expert_a_is_refused_by_expert_b(notes_stack: NotesStack):
    a, b = url_of(notes_stack.notes_a), url_of(notes_stack.notes_b)
    for_a = tokens.expert_token_mint(audience=a, user_id=uuid.uuid4(), workspace_id=uuid.uuid4(), tool="search_notes")
    assert post(a, for_a) == 200
    assert post(b, for_a) == 401
    assert post(b, None) == 401


def test_forged_expired_and_overlong_tokens_are_refused(notes_stack: NotesStack):
    a = url_of(notes_stack.notes_a)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    stranger = tokens.SigningKey(kid=tokens.signing_keys()[0].kid, private_key=Ed25519PrivateKey.generate())
    assert post(a, mint(a, key=stranger)) == 401, "signed by a key the core does not publish"
    assert post(a, mint(a, exp=int(time.time()) - 10)) == 401, "expired"
    assert post(a, mint(a, exp=int(time.time()) + 3600)) == 401, "lives longer than 5 minutes"
    assert post(a, mint(a, iss="someone-else")) == 401
    assert post(a, mint(a, workspace_id="not-a-uuid")) == 401
    assert post(a, user_like_token()) == 401, "an HS256 user token is not an expert token"
    # Rotation: the second key is published before it signs; tokens it signs are accepted.
    assert post(a, mint(a, key=tokens.signing_keys()[1])) == 200


def user_like_token() -> str:
    return jwt.encode(
        {"oid": str(uuid.uuid4()), "aud": "x"}, "a-shared-secret-of-some-length-0123456789", algorithm="HS256"
    )


def _two_workspaces(url: str):
    alice, charlie = UserFactory(), UserFactory()
    first, second = WorkspaceFactory(owner=alice), WorkspaceFactory(owner=charlie)
    for workspace in (first, second):
        ConversationFactory(workspace=workspace)  # experts serve the members of its conversations
        services.expert_create(
            workspace=workspace, name="notes", url=url, discovery=services.ExpertDiscovery(status="ok", tools=[])
        )
    return alice, charlie, first, second


@pytest.mark.django_db(transaction=True)
async def test_two_workspaces_never_see_each_others_notes(notes_stack: NotesStack):
    alice, charlie, first, second = await database_sync_to_async(_two_workspaces)(url_of(notes_stack.notes_a))
    tools = await expert_tools(workspace_id=first.id, user_id=alice.id)
    assert [(tool.name, tool.policy) for tool in tools] == [  # the reads say they only read
        ("add_note", "ask"),
        ("search_notes", "auto"),
        ("get_note", "auto"),
        ("delete_note", "ask"),
    ]

    async def call(user, workspace, tool, **arguments):
        result = await expert_call(
            user_id=user.id, workspace_id=workspace.id, expert="notes", tool=tool, arguments=arguments
        )
        return result["structured"]

    mine = (await call(alice, first, "add_note", title="Launch plan", body="ship on friday"))["note"]
    theirs = (await call(charlie, second, "add_note", title="Launch secrets", body="ship on monday"))["note"]
    assert mine["author_id"] == str(alice.id)

    found = await call(alice, first, "search_notes", query="launch")
    assert [note["id"] for note in found["notes"]] == [mine["id"]]
    assert [note["id"] for note in (await call(charlie, second, "search_notes"))["notes"]] == [theirs["id"]]
    assert (await call(alice, first, "get_note", note_id=mine["id"]))["note"]["body"] == "ship on friday"
    with pytest.raises(ExpertCallError) as caught:
        await call(alice, first, "get_note", note_id=theirs["id"])
    assert caught.value.code == "tool_error" and "No such note" in caught.value.message
    with pytest.raises(ExpertCallError) as caught:
        await call(alice, first, "delete_note", note_id=theirs["id"])
    assert "No such note" in caught.value.message
    with pytest.raises(ExpertNeedsInput) as asked:  # its own note: the expert asks first, holding nothing
        await call(alice, first, "delete_note", note_id=mine["id"])
    question = asked.value.question
    assert "Launch plan" in question.message and question.schema["required"] == ["confirm"]
    confirmed = await expert_call(
        user_id=alice.id,
        workspace_id=first.id,
        expert="notes",
        tool="delete_note",
        arguments={"note_id": mine["id"]},
        input_responses={question.key: {"action": "accept", "content": {"confirm": True}}},
        request_state=question.request_state,
    )
    assert confirmed["structured"] == {"deleted": True, "note_id": mine["id"]}
    assert (await call(alice, first, "search_notes"))["notes"] == []


def test_a_token_for_one_tool_cannot_call_another(notes_stack: NotesStack):
    import asyncio

    from tests.mcp.conftest import http_client

    a = url_of(notes_stack.notes_a)

    async def add_with_a_search_token() -> object:
        async with http_client(a, token=mint(a, tool="search_notes")) as client:
            return await client.call_tool("add_note", {"title": "sneaky"})

    result = asyncio.run(add_with_a_search_token())
    assert result.is_error and "minted for 'search_notes'" in result.content[0].text


def test_the_owner_registers_the_notes_expert_through_a_real_core(notes_stack: NotesStack):
    create_user("owner@example.com", PASSWORD, env=notes_stack.env)
    core = notes_stack.core.url
    login = httpx2.post(f"{core}/auth/login", json={"email": "owner@example.com", "password": PASSWORD}, timeout=10)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    workspace = httpx2.post(f"{core}/config/workspace", json={"name": "w"}, headers=headers, timeout=10).json()
    response = httpx2.post(
        f"{core}/config/workspace/{workspace['workspace']['id']}/experts",
        json={"name": "notes", "url": url_of(notes_stack.notes_a), "auth": "core_token"},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    expert = response.json()["expert"]
    assert expert["status"] == "ok"
    assert [tool["name"] for tool in expert["tools"]] == ["add_note", "search_notes", "get_note", "delete_note"]
    jwks = httpx2.get(f"{core}/.well-known/jwks.json", timeout=10).json()
    assert [key["kid"] for key in jwks["keys"]] == [key.kid for key in tokens.signing_keys()]
