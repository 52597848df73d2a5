"""The core as a complete MCP client (CONTRACT.md, "Expert calls: progress, tasks and content"), against
a real expert built with the MCP SDK (tests/experts/task_expert.py), in both revisions: what it
declares, every kind of content, progress, and tasks followed step by step."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from mcp_services.experts import discovery
from mcp_services.experts.calls import (
    ExpertCallError,
    ExpertNeedsInput,
    ExpertTaskStarted,
    expert_call,
    expert_task,
    expert_tool_policy,
    expert_tools,
)
from tests.experts.conftest import task_expert
from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory
from workspaces import services

# Run in the SQLite pass only: the MCP client (content, progress, tasks) in either revision is the wire,
# not the rows (its few writes are plain ORM, run on PostgreSQL by the in-process tests).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.database_agnostic]


@pytest.fixture(scope="module", params=["2026-07-28", "2025-11-25"])
def expert(request):
    with task_expert(legacy=request.param == "2025-11-25", poll_ms=200) as running_expert:
        running_expert.revision = request.param
        yield running_expert


def _setup(url: str):
    owner = UserFactory()
    workspace = WorkspaceFactory(owner=owner)
    ConversationFactory(workspace=workspace, participants=[owner])  # experts serve the workspace's members
    stale = services.ExpertDiscovery(status="ok", tools=[])  # no expiry: discovered on first use
    services.expert_create(workspace=workspace, name="lab", url=url, auth="none", discovery=stale)
    return owner, workspace


setup = database_sync_to_async(_setup)


async def call(user, workspace, tool, arguments=None, **kwargs):
    return await expert_call(
        user_id=user.id, workspace_id=workspace.id, expert="lab", tool=tool, arguments=arguments or {}, **kwargs
    )


async def test_discovery_and_calls_declare_elicitation_and_tasks(expert):
    owner, workspace = await setup(expert.url)
    tools = await expert_tools(workspace_id=workspace.id, user_id=owner.id)
    assert {"picture", "links", "preferences", "steps", "research", "quick"} <= {tool.name for tool in tools}
    await call(owner, workspace, "quick", {"text": "hi"})
    declared = [entry["capabilities"] for entry in expert.log() if entry.get("capabilities")]
    assert declared, expert.log()
    for capabilities in declared:
        assert set(capabilities["elicitation"]) == {"form", "url"}
    if expert.revision == "2025-11-25":
        initialized = [entry["capabilities"] for entry in expert.log() if entry.get("request") == "initialize"]
        assert initialized and all("tasks" in capabilities for capabilities in initialized)
    if expert.revision == "2026-07-28":
        assert any("io.modelcontextprotocol/tasks" in (caps.get("extensions") or {}) for caps in declared)
    assert discovery.revision(expert.url) == ("legacy" if expert.revision == "2025-11-25" else "2026-07-28")


async def test_the_revision_found_is_kept_and_probed_again_when_forgotten(expert):
    owner, workspace = await setup(expert.url)
    await expert_tools(workspace_id=workspace.id, user_id=owner.id)
    before = len([entry for entry in expert.log() if entry.get("request") == "server/discover"])
    await call(owner, workspace, "quick", {"text": "a"})
    probes = len([entry for entry in expert.log() if entry.get("request") == "server/discover"])
    if expert.revision == "2025-11-25":
        assert probes == before, "a known 2025-11-25 expert is not probed again"
    discovery.forget(expert.url)
    await call(owner, workspace, "quick", {"text": "b"})
    assert discovery.revision(expert.url) is not None


async def test_images_are_inline_up_to_the_limit_then_omitted_with_their_size(expert):
    owner, workspace = await setup(expert.url)
    small = await call(owner, workspace, "picture", {"size": 64})
    assert small["content"] == "a picture"
    [image] = small["blocks"]
    assert (image["type"], image["mime_type"], image["size"]) == ("image", "image/png", 64)
    assert base64.b64decode(image["data"]).startswith(b"\x89PNG")
    with override_settings(EXPERT_INLINE_BLOB_BYTES=1000):
        big = await call(owner, workspace, "picture", {"size": 5000})
    assert big["blocks"] == [{"type": "image", "mime_type": "image/png", "omitted": True, "size": 5000}]


async def test_hostile_audio_that_is_not_base64_is_marked_invalid(expert):
    owner, workspace = await setup(expert.url)
    result = await call(owner, workspace, "sound")
    assert result["blocks"][0] == {"type": "audio", "mime_type": "audio/wav", "omitted": True, "invalid": True}
    assert result["blocks"][1]["data"] == "AAAA"


async def test_links_and_embedded_resources_are_kept(expert):
    owner, workspace = await setup(expert.url)
    result = await call(owner, workspace, "links")
    assert result["blocks"] == [
        {
            "type": "resource_link",
            "uri": "https://example.com/report.pdf",
            "name": "report",
            "mime_type": "application/pdf",
        },
        {"type": "resource_link", "uri": "javascript:alert(1)", "name": "trap"},  # the console shows https only
        {"type": "resource", "uri": "file:///notes.txt", "mime_type": "text/plain", "text": "hello"},
    ]


async def test_progress_reaches_the_caller(expert):
    owner, workspace = await setup(expert.url)
    seen: list[tuple] = []

    async def progress(done, total, message):
        seen.append((done, total, message))

    result = await call(owner, workspace, "steps", {"count": 5, "delay_ms": 20}, progress=progress)
    assert result["structured"] == {"steps": 5}
    if expert.revision == "2025-11-25":  # a held stream carries notifications
        assert seen and seen[-1] == (5.0, 5.0, "step 5")
        assert all(1 <= done <= 5 for done, _, _ in seen)


async def test_a_tool_the_expert_does_not_have_is_auto_so_nobody_is_asked(expert):
    owner, workspace = await setup(expert.url)
    assert await expert_tool_policy(user_id=owner.id, workspace_id=workspace.id, expert="lab", tool="ghost") == "auto"
    with pytest.raises(ExpertCallError) as refused:
        await call(owner, workspace, "ghost")
    assert refused.value.code == "not_found"
    assert await expert_tool_policy(user_id=owner.id, workspace_id=workspace.id, expert="lab", tool="research") == "ask"


async def test_a_required_task_tool_fails_without_tasks_and_starts_a_task_with_them(expert):
    owner, workspace = await setup(expert.url)
    await expert_tools(workspace_id=workspace.id, user_id=owner.id)
    with pytest.raises(ExpertCallError):
        await call(owner, workspace, "research", {"topic": "bees", "seconds": 0.4})
    with pytest.raises(ExpertTaskStarted) as started:
        await call(owner, workspace, "research", {"topic": "bees", "seconds": 0.4}, tasks=True)
    state = started.value.state
    assert state.status == "working" and state.task_id
    assert (started.value.rejoin is not None) == (expert.revision == "2025-11-25")
    if expert.revision == "2025-11-25":  # its tasks belong to their session: another one cannot see them
        with pytest.raises(ExpertCallError, match="Task not found"):
            await expert_task(
                user_id=owner.id, workspace_id=workspace.id, expert="lab", tool="research", task_id=state.task_id
            )
    assert 0.2 <= state.poll_seconds <= 5
    kwargs = {"user_id": owner.id, "workspace_id": workspace.id, "expert": "lab", "tool": "research"}
    kwargs["rejoin"] = started.value.rejoin  # 2025-11-25: back into the session that started it
    seen = await expert_task(**kwargs, task_id=state.task_id)
    for _ in range(100):
        if seen.state.final:
            break
        await asyncio.sleep(seen.state.poll_seconds)
        seen = await expert_task(**kwargs, task_id=state.task_id)
    assert seen.state.status == "completed"
    assert seen.answer["content"] == "report on bees"
    assert [entry["started"] for entry in expert.log() if "started" in entry].count("research") == 1


async def test_a_task_asks_its_question_and_takes_the_answer_with_tasks_update(expert):
    if expert.revision == "2025-11-25":
        pytest.skip("2025-11-25 tasks ask through tasks/result on a held connection (not this expert's form)")
    owner, workspace = await setup(expert.url)
    await expert_tools(workspace_id=workspace.id, user_id=owner.id)
    with pytest.raises(ExpertTaskStarted) as started:
        await call(owner, workspace, "research", {"topic": "ants", "seconds": 0.4, "ask": True}, tasks=True)
    task_id = started.value.state.task_id
    kwargs = {"user_id": owner.id, "workspace_id": workspace.id, "expert": "lab", "tool": "research"}
    kwargs["rejoin"] = started.value.rejoin  # 2025-11-25: back into the session that started it
    seen = await expert_task(**kwargs, task_id=task_id)
    for _ in range(100):
        if seen.state.status == "input_required":
            break
        await asyncio.sleep(0.1)
        seen = await expert_task(**kwargs, task_id=task_id)
    assert seen.question is not None and seen.question.message == "Go on with the research?"
    assert seen.question.schema["properties"]["go_on"]["default"] is True
    seen = await expert_task(
        **kwargs,
        task_id=task_id,
        action="update",
        answer=(seen.question.key, {"action": "accept", "content": {"go_on": True}}),
    )
    for _ in range(100):
        if seen.state.final:
            break
        await asyncio.sleep(0.1)
        seen = await expert_task(**kwargs, task_id=task_id)
    assert seen.state.status == "completed"
    assert seen.answer["structured"]["answer"] == {"action": "accept", "content": {"go_on": True}}


async def test_cancel_reaches_the_task(expert):
    owner, workspace = await setup(expert.url)
    await expert_tools(workspace_id=workspace.id, user_id=owner.id)
    with pytest.raises(ExpertTaskStarted) as started:
        await call(owner, workspace, "research", {"topic": "owls", "seconds": 10}, tasks=True)
    task_id = started.value.state.task_id
    kwargs = {"user_id": owner.id, "workspace_id": workspace.id, "expert": "lab", "tool": "research"}
    kwargs["rejoin"] = started.value.rejoin  # 2025-11-25: back into the session that started it
    await expert_task(**kwargs, task_id=task_id, action="cancel")
    deadline = time.monotonic() + 10  # the expert stops the work after its answer (eventually consistent)
    while {"cancelled": task_id} not in expert.log():
        assert time.monotonic() < deadline, expert.log()[-3:]
        await asyncio.sleep(0.05)
    seen = await expert_task(**kwargs, task_id=task_id)
    assert seen.state.status == "cancelled"


async def test_a_form_question_keeps_its_defaults_for_the_inbox(expert):
    if expert.revision == "2025-11-25":
        pytest.skip("the mid-call form needs an asker (the turn's): tests/turns/test_expert_calls_e2e.py")
    owner, workspace = await setup(expert.url)
    with pytest.raises(ExpertNeedsInput) as needs:
        await call(owner, workspace, "preferences")
    schema = needs.value.question.schema
    assert schema["properties"]["color"]["default"] == "green"
    assert schema["properties"]["count"]["default"] == 3
