"""`expert_call` and `expert_tools` (the interface turns use) against a real expert process: every
refusal with its code, the SSRF check repeated at call time, and the signing keys."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from mcp_services.experts import tokens
from mcp_services.experts.calls import ExpertCallError, expert_call, expert_tools
from tests.experts.conftest import recording_expert
from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory
from tests.servers import free_port
from workspaces import services
from workspaces.models import Expert

# Run in the SQLite pass only: the MCP client, refusals and the host policy: the wire, not the rows.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.database_agnostic]


@pytest.fixture(scope="module")
def expert():
    with recording_expert(ttl_ms=600_000) as running_expert:
        yield running_expert


def _setup(url: str, *, allowed_tools: list[str] | None = None, auth: str = "core_token"):
    owner, member, outsider = UserFactory(), UserFactory(), UserFactory()
    workspace = WorkspaceFactory(owner=owner)
    ConversationFactory(workspace=workspace, participants=[member])
    stale = services.ExpertDiscovery(status="ok", tools=[])  # no expiry: discovered on first use
    services.expert_create(
        workspace=workspace, name="rec", url=url, auth=auth, allowed_tools=allowed_tools, discovery=stale
    )
    return owner, member, outsider, workspace


setup = database_sync_to_async(_setup)


async def call(user, workspace, tool="echo", arguments=None, expert="rec", **kwargs):
    return await expert_call(
        user_id=user.id,
        workspace_id=workspace.id,
        expert=expert,
        tool=tool,
        arguments={"text": "hi"} if arguments is None else arguments,
        **kwargs,
    )


async def test_expert_tools_discovers_stale_experts_and_caches_them(expert):
    owner, *_, workspace = await setup(expert.url, allowed_tools=["echo"])
    seen = len(expert.authorizations())
    tools = await expert_tools(workspace_id=workspace.id, user_id=owner.id)
    assert [(tool.expert, tool.name) for tool in tools] == [("rec", "echo")], "the allowlist applies"
    assert tools[0].input_schema["required"] == ["text"]
    assert len(expert.authorizations()) > seen, "discovered: the cache was empty"
    seen = len(expert.authorizations())
    assert await expert_tools(workspace_id=workspace.id, user_id=owner.id) == tools
    assert len(expert.authorizations()) == seen, "served from the cache (the server said 10 minutes)"


async def test_a_member_calls_a_tool_and_gets_its_content_and_structured_result(expert):
    owner, member, _, workspace = await setup(expert.url)
    for user in (owner, member):
        result = await call(user, workspace, arguments={"text": "hello"})
        assert result["structured"] == {"text": "hello"}
        assert "hello" in result["content"]


async def test_refusals_carry_their_codes(expert):
    owner, member, outsider, workspace = await setup(expert.url, allowed_tools=["echo", "fail", "ghost"])
    await expert_tools(
        workspace_id=workspace.id, user_id=owner.id
    )  # a fresh cache: unknown tools are known to be unknown

    async def code_of(**kwargs) -> str:
        with pytest.raises(ExpertCallError) as caught:
            await call(**{"user": owner, "workspace": workspace, **kwargs})
        return caught.value.code

    assert await code_of(expert="nobody") == "not_found"
    assert await code_of(user=outsider) == "not_found", "not a member of the workspace"
    assert await code_of(workspace=await database_sync_to_async(WorkspaceFactory)()) == "not_found"
    assert await code_of(tool="ghost") == "not_found", "allowed, but the expert has no such tool"
    assert await code_of(tool="secret") == "permission_denied", "not in the allowlist"
    assert await code_of(arguments={"text": "\ud800"}) == "invalid_input"
    with pytest.raises(ExpertCallError) as failed:
        await call(owner, workspace, tool="fail", arguments={"reason": "the disk is full"})
    assert failed.value.code == "tool_error" and "the disk is full" in failed.value.message


async def test_a_result_larger_than_the_limit_is_refused_not_passed_on(expert, settings):
    owner, _, _, workspace = await setup(expert.url)
    settings.EXPERT_RESULT_MAX_BYTES = 1024
    assert (await call(owner, workspace, arguments={"text": "x" * 300}))["structured"] == {"text": "x" * 300}
    with pytest.raises(ExpertCallError) as refused:
        await call(owner, workspace, arguments={"text": "x" * 600})  # its text and structured copy: > 1 KiB
    assert refused.value.code == "payload_too_large" and "EXPERT_RESULT_MAX_BYTES" in refused.value.message
    # Far larger: refused from its Content-Length (past 4 x the limit + 64 KiB), its body not read.
    with pytest.raises(ExpertCallError) as cut:
        await call(owner, workspace, arguments={"text": "x" * 200_000})
    assert cut.value.code == "payload_too_large" and "more than 69,632" in cut.value.message


async def test_an_expert_that_dies_mid_call_fails_the_call_and_the_caller_goes_on():
    with recording_expert(ttl_ms=600_000, crash_tool=True) as doomed:
        owner, _, _, workspace = await setup(doomed.url)
        await call(owner, workspace)  # discovered and cached: the next request is the call itself
        with pytest.raises(ExpertCallError) as failed:
            await call(owner, workspace, tool="crash", arguments={})
        assert failed.value.code == "service_unavailable"
    assert asyncio.current_task().cancelling() == 0  # no cancellation leaked into the caller


async def test_an_unreachable_expert_is_service_unavailable():
    owner, _, _, workspace = await setup(f"http://127.0.0.1:{free_port()}/mcp")
    with pytest.raises(ExpertCallError) as caught:
        await call(owner, workspace)
    assert caught.value.code == "service_unavailable"
    assert await expert_tools(workspace_id=workspace.id, user_id=owner.id) == []
    stored = await database_sync_to_async(Expert.objects.get)(workspace=workspace)
    assert stored.status == "unreachable" and "unreachable" in stored.last_error


async def test_the_host_is_checked_again_at_call_time(expert, settings):
    owner, _, _, workspace = await setup(expert.url)
    seen = len(expert.authorizations())
    settings.EXPERT_ALLOWED_HOSTS = []  # the setting changed since the expert was registered
    with pytest.raises(ExpertCallError) as caught:
        await call(owner, workspace)
    assert caught.value.code == "permission_denied"
    assert len(expert.authorizations()) == seen, "nothing was sent"


async def test_a_listed_name_that_resolves_to_an_unlisted_address_is_refused(expert, settings):
    settings.EXPERT_ALLOWED_HOSTS = ["localhost:*"]  # the name, not its loopback address
    owner, _, _, workspace = await setup(expert.url.replace("127.0.0.1", "localhost"))
    seen = len(expert.authorizations())
    with pytest.raises(ExpertCallError) as caught:
        await call(owner, workspace)
    assert caught.value.code == "permission_denied" and "resolves to" in caught.value.message
    assert len(expert.authorizations()) == seen
    settings.EXPERT_ALLOWED_HOSTS = ["localhost:*", "127.0.0.0/8:*", "[::1]:*"]
    assert (await call(owner, workspace))["structured"] == {"text": "hi"}


async def test_without_signing_keys_core_token_experts_fail_clearly_and_the_check_says_why(expert, settings):
    owner, _, _, workspace = await setup(expert.url)
    settings.EXPERT_SIGNING_KEYS = []
    with pytest.raises(ExpertCallError) as caught:
        await call(owner, workspace)
    assert caught.value.code == "service_unavailable" and "EXPERT_SIGNING_KEYS" in caught.value.message
    from mcp_services.experts.checks import signing_keys_check

    assert [warning.id for warning in signing_keys_check()] == ["cortex.W001"]


def test_in_debug_without_keys_one_is_generated_once_and_kept(settings, tmp_path):
    settings.DEBUG = True
    settings.EXPERT_SIGNING_KEYS = []
    settings.EXPERT_DEBUG_KEY_PATH = tmp_path / "var" / "expert-signing-key.pem"
    first = tokens.signing_keys()
    tokens._keys_for.cache_clear()
    assert [key.kid for key in tokens.signing_keys()] == [key.kid for key in first] and len(first) == 1
    assert stat.S_IMODE(os.stat(settings.EXPERT_DEBUG_KEY_PATH).st_mode) == 0o600


def test_jwks_publishes_every_key_and_the_first_signs(client):
    keys = tokens.signing_keys()
    assert len(keys) == 2, "the test environment configures two keys (rotation)"
    body = client.get("/.well-known/jwks.json").json()
    assert [key["kid"] for key in body["keys"]] == [key.kid for key in keys]
    assert {key["kty"] for key in body["keys"]} == {"OKP"} and all("d" not in key for key in body["keys"])
    token = tokens.expert_token_mint(
        audience="http://127.0.0.1:1/mcp", user_id=uuid.uuid4(), workspace_id=uuid.uuid4(), tool="t"
    )
    import jwt

    assert jwt.get_unverified_header(token)["kid"] == keys[0].kid


def test_manage_check_is_clean_with_keys_configured():
    call_command("check")


async def test_the_socket_connects_only_to_addresses_the_policy_allows(expert, settings):
    """The last line against DNS rebinding: whatever the URL, the connection itself is checked."""
    import httpx2

    from mcp_services.experts import hosts

    async with httpx2.AsyncClient(transport=hosts.checked_transport()) as http:
        with pytest.raises(httpx2.ConnectError, match="not in EXPERT_ALLOWED_HOSTS"):
            await http.get("http://10.255.255.1:9/")
        settings.EXPERT_ALLOWED_HOSTS = ["localhost:*"]
        with pytest.raises(httpx2.ConnectError, match="resolves to"):
            await http.post(expert.url.replace("127.0.0.1", "localhost"), json={})
        settings.EXPERT_ALLOWED_HOSTS = ["localhost:*", "127.0.0.1:*", "[::1]:*"]  # localhost may also be ::1
        response = await http.post(expert.url.replace("127.0.0.1", "localhost"), json={})
        assert response.status_code in (400, 406), "connected (the expert refused the empty body)"


async def test_no_expert_is_listed_or_called_for_an_inactive_user_owner_or_participant(expert):
    owner, member, outsider, workspace = await setup(expert.url)
    for user in (owner, member):
        user.is_active = False
        await database_sync_to_async(user.save)(update_fields=["is_active"])
        assert await expert_tools(workspace_id=workspace.id, user_id=user.id) == []
        with pytest.raises(ExpertCallError) as refused:
            await call(user, workspace)
        assert refused.value.code == "not_found"
    assert await expert_tools(workspace_id=workspace.id, user_id=outsider.id) == []
