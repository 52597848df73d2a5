"""`/config/workspace/<id>/experts`: registration by the owner, discovery over MCP against a real
expert process, unreachable experts kept with their status, and the outsider's 404s."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
import pytest
from django.utils import timezone

from conftest import client_for
from mcp_services.experts import tokens
from tests.experts.conftest import recording_expert
from tests.servers import ServerProcess, free_port, running
from workspaces.models import Expert

# Run in the SQLite pass only: registration and discovery over MCP: plain ORM rows, run on PostgreSQL in-process.
pytestmark = [pytest.mark.django_db, pytest.mark.e2e, pytest.mark.database_agnostic]

TTL_MS = 600_000


@pytest.fixture(scope="module")
def expert():
    with recording_expert(ttl_ms=TTL_MS) as running_expert:
        yield running_expert


def register(client, workspace, **body):
    return client.post(f"/config/workspace/{workspace.id}/experts", body, format="json")


def test_owner_registers_an_expert_and_its_tools_are_discovered(alice, workspace, expert):
    before = timezone.now()
    response = register(client_for(alice), workspace, name="recorder", url=expert.url)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "expert created"
    created = body["expert"]
    assert created["name"] == "recorder" and created["url"] == expert.url and created["auth"] == "core_token"
    assert created["status"] == "ok" and created["last_error"] == ""
    assert [tool["name"] for tool in created["tools"]] == ["echo", "fail"]
    assert created["tools"][0]["input_schema"]["properties"]["text"]["type"] == "string"
    assert created["allowed_tools"] is None
    # The server's cache hint (10 minutes) decides how long the tools are kept.
    expires = Expert.objects.get(id=created["id"]).tools_expire_at
    assert before + timedelta(milliseconds=TTL_MS) <= expires <= timezone.now() + timedelta(milliseconds=TTL_MS)


def test_the_allowlist_limits_the_tools_shown(alice, workspace, expert):
    created = register(client_for(alice), workspace, name="recorder", url=expert.url, tools=["echo"]).json()["expert"]
    assert [tool["name"] for tool in created["tools"]] == ["echo"]
    assert created["allowed_tools"] == ["echo"]
    stored = Expert.objects.get(id=created["id"])
    assert [tool["name"] for tool in stored.tools] == ["echo", "fail"], "the whole list is cached"


def test_an_unreachable_expert_is_saved_with_its_status_and_refresh_finds_it_later(alice, workspace):
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    client = client_for(alice)
    response = register(client, workspace, name="later", url=url, auth="none")
    assert response.status_code == 201
    created = response.json()["expert"]
    assert created["status"] == "unreachable" and created["tools"] == []
    assert "unreachable" in created["last_error"]

    import sys

    from tests.servers import server_env

    server = ServerProcess(
        name="late-expert",
        argv=[sys.executable, "-m", "tests.experts.recording_expert", "--port", str(port), "--log", "/dev/null"],
        port=port,
        env=server_env(),
    )
    with running(server):
        refreshed = client.post(f"/config/workspace/{workspace.id}/experts/{created['id']}/refresh")
    assert refreshed.status_code == 200, refreshed.content
    assert refreshed.json()["status"] == "expert refreshed"
    expert = refreshed.json()["expert"]
    assert expert["status"] == "ok" and expert["last_error"] == ""
    assert [tool["name"] for tool in expert["tools"]] == ["echo", "fail"]


def test_list_get_patch_and_delete(alice, workspace, expert):
    client = client_for(alice)
    created = register(client, workspace, name="recorder", url=expert.url).json()["expert"]
    base = f"/config/workspace/{workspace.id}/experts"
    assert [e["id"] for e in client.get(base).json()["experts"]] == [created["id"]]
    assert client.get(f"{base}/{created['id']}").json()["expert"]["name"] == "recorder"

    patched = client.patch(f"{base}/{created['id']}", {"name": "rec", "tools": ["fail"]}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["expert"]["name"] == "rec"
    assert [tool["name"] for tool in patched.json()["expert"]["tools"]] == ["fail"]
    cleared = client.patch(f"{base}/{created['id']}", {"tools": None}, format="json").json()["expert"]
    assert cleared["allowed_tools"] is None and len(cleared["tools"]) == 2

    assert client.delete(f"{base}/{created['id']}").status_code == 204
    assert client.get(f"{base}/{created['id']}").status_code == 404
    assert not Expert.objects.exists()


def test_a_name_is_unique_per_workspace(alice, workspace, expert):
    client = client_for(alice)
    assert register(client, workspace, name="recorder", url=expert.url).status_code == 201
    again = register(client, workspace, name="recorder", url=expert.url)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    bad = register(client, workspace, name="Not a slug!", url=expert.url)
    assert bad.status_code == 400 and "name" in bad.json()["error"]["fields"]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/mcp",  # a private address that is not listed
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://localhost:9200/mcp",  # loopback by a name the test setting does not list
        "http://evil.example/mcp",
        "ftp://127.0.0.1/mcp",
        "http://user:secret@127.0.0.1:9200/mcp",
    ],
)
def test_a_url_whose_host_is_not_allowed_is_a_400_on_create_and_patch(alice, workspace, expert, url):
    client = client_for(alice)
    refused = register(client, workspace, name="x", url=url)
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"]["code"] == "invalid_input" and "url" in refused.json()["error"]["fields"]
    created = register(client, workspace, name="ok", url=expert.url).json()["expert"]
    patched = client.patch(f"/config/workspace/{workspace.id}/experts/{created['id']}", {"url": url}, format="json")
    assert patched.status_code == 400
    assert Expert.objects.get(id=created["id"]).url == expert.url
    assert list(Expert.objects.values_list("name", flat=True)) == ["ok"]


def expert_calls(workspace, expert_id):
    base = f"/config/workspace/{workspace.id}/experts"
    return [
        ("get", base, None),
        ("post", base, {"name": "sneaky", "url": "http://127.0.0.1:1/mcp"}),
        ("get", f"{base}/{expert_id}", None),
        ("patch", f"{base}/{expert_id}", {"name": "taken"}),
        ("delete", f"{base}/{expert_id}", None),
        ("post", f"{base}/{expert_id}/refresh", None),
    ]


@pytest.mark.parametrize("actor", ["bob", "charlie"])
def test_only_the_owner_manages_experts_others_get_404_and_nothing_changes(
    request, alice, workspace, conversation, expert, actor
):
    created = register(client_for(alice), workspace, name="recorder", url=expert.url).json()["expert"]
    client = client_for(request.getfixturevalue(actor))
    before = list(Expert.objects.values_list("id", "name", "url", "updated_at"))
    seen_before = len(expert.authorizations())
    for method, url, body in expert_calls(workspace, created["id"]):
        response = getattr(client, method)(url, body, format="json") if body else getattr(client, method)(url)
        assert response.status_code == 404, (actor, method, url, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert list(Expert.objects.values_list("id", "name", "url", "updated_at")) == before
    assert len(expert.authorizations()) == seen_before, "nothing was called on their behalf"
    foreign = client.get(f"/config/workspace/{workspace.id}/experts/{created['id']}")
    missing = client_for(alice).get(f"/config/workspace/{workspace.id}/experts/{uuid.uuid4()}")
    assert foreign.json() == missing.json()


def test_the_expert_sees_a_token_minted_for_it_never_the_users_token(alice, workspace, expert):
    client = client_for(alice)
    users_token = client._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    seen_before = len(expert.authorizations())
    created = register(client, workspace, name="recorder", url=expert.url).json()["expert"]
    client.post(f"/config/workspace/{workspace.id}/experts/{created['id']}/refresh")
    seen = expert.authorizations()[seen_before:]
    assert seen, "the expert was called"
    keys = {key.kid: key.private_key.public_key() for key in tokens.signing_keys()}
    for header in seen:
        assert users_token not in header
        assert header.startswith("Bearer ")
        token = header.removeprefix("Bearer ")
        kid = jwt.get_unverified_header(token)["kid"]
        assert kid == tokens.signing_keys()[0].kid, "the first key signs"
        claims = jwt.decode(token, keys[kid], algorithms=["EdDSA"], audience=expert.url, issuer="cortex-core")
        assert claims["sub"] == str(alice.id) and claims["workspace_id"] == str(workspace.id)
        assert claims["tool"] == "tools/list"
        assert 0 < claims["exp"] - claims["iat"] <= 300 and claims["jti"]
    # One token per operation (a discovery is two requests: the protocol's discover, then tools/list).
    assert len({jwt.decode(h[7:], options={"verify_signature": False})["jti"] for h in seen}) == 2


def test_auth_none_sends_no_authorization(alice, workspace, expert):
    seen_before = len(expert.authorizations())
    assert register(client_for(alice), workspace, name="open", url=expert.url, auth="none").status_code == 201
    assert set(expert.authorizations()[seen_before:]) == {"-"}
