"""A hostile expert (a raw HTTP server on loopback in front of a real MCP expert process): answers
without `Content-Length` (chunked JSON, an event stream, a chunked error) are cut off near the
limit while they stream, on the call, discovery and error paths; an expert's error messages are
cut before they reach anyone; discoveries that never answer are bounded in number and time.

The numbers: `hostile.sent` is what the server managed to hand its kernel before the core hung up
(the core's reads plus the socket buffers between them); the core's own count is in its message.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async

from common.errors import CortexError
from mcp_services.experts import hosts
from mcp_services.experts.calls import ExpertCallError, expert_call
from mcp_services.experts.discovery import MESSAGE_MAX_CHARS, Caller, discover
from tests.experts.conftest import recording_expert
from tests.experts.hostile_expert import HostileExpert
from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory
from workspaces import services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e, pytest.mark.database_agnostic]

MIB = 1024 * 1024
# What the core may buffer between its last read and hanging up: its socket's receive buffer
# (Linux autotunes it to a few MiB at most) plus the server's 16 KiB send buffer. The old code
# read all 64 MiB.
SOCKET_SLACK = 8 * MIB


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileExpert]:
    with recording_expert(ttl_ms=600_000) as upstream:
        server = HostileExpert(upstream.url)
        yield server
        server.close()


@pytest.fixture(autouse=True)
def _fresh_mode(hostile: HostileExpert) -> None:
    hostile.mode, hostile.target, hostile.size, hostile.sent = "chunked", "tools/call", 64 * MIB, 0


@database_sync_to_async
def _setup(url: str):
    owner = UserFactory()
    workspace = WorkspaceFactory(owner=owner)
    ConversationFactory(workspace=workspace)  # experts serve the members of its conversations
    stale = services.ExpertDiscovery(status="ok", tools=[])  # no expiry: the call goes straight out
    services.expert_create(workspace=workspace, name="bad", url=url, auth="none", allowed_tools=None, discovery=stale)
    return owner, workspace


async def _call(hostile: HostileExpert) -> ExpertCallError:
    owner, workspace = await _setup(hostile.url)
    with pytest.raises(ExpertCallError) as caught:
        await expert_call(
            user_id=owner.id, workspace_id=workspace.id, expert="bad", tool="echo", arguments={"text": "hi"}
        )
    return caught.value


def _read_by_core(message: str) -> int:
    found = re.search(r"cut off after ([\d,]+)", message)
    assert found, message
    return int(found.group(1).replace(",", ""))


def _assert_cut_near_the_limit(message: str, hostile: HostileExpert) -> None:
    limit = hosts.response_limit()
    assert f"more than {limit:,}" in message, message
    assert limit < _read_by_core(message) <= limit + 64 * 1024, "the core stopped within one read of the limit"
    assert hostile.sent < limit + SOCKET_SLACK, f"the expert got {hostile.sent:,} bytes away"


@pytest.mark.parametrize("mode", ["chunked", "sse"])
async def test_a_call_answer_without_a_length_is_cut_off_near_the_limit_while_it_streams(hostile, mode):
    hostile.mode = mode
    refused = await _call(hostile)
    assert refused.code == "payload_too_large", refused.message
    _assert_cut_near_the_limit(refused.message, hostile)


async def test_a_streamed_error_answer_is_cut_off_near_the_limit(hostile):
    hostile.mode = "chunked-error"
    refused = await _call(hostile)
    assert refused.code == "payload_too_large", refused.message
    _assert_cut_near_the_limit(refused.message, hostile)


async def test_a_compressed_answer_is_refused_unread(hostile):
    """64 MiB of text in about 64 KiB of gzip: what arrives says nothing of what it inflates to."""
    hostile.mode = "gzip"
    refused = await _call(hostile)
    assert refused.code == "payload_too_large" and "gzip-encoded" in refused.message, refused.message


async def test_a_discovery_answer_without_a_length_is_cut_off_near_the_limit(hostile):
    hostile.target = "tools/list"
    found = await discover(url=hostile.url, auth="none", caller=Caller(uuid.uuid4(), uuid.uuid4()))
    assert found.status == "unreachable" and "answered too much" in found.error, found.error
    _assert_cut_near_the_limit(found.error, hostile)


async def test_a_huge_json_rpc_error_message_is_cut_before_it_reaches_anyone(hostile):
    """Under the byte limit (900,000 characters of a 1.1 MB budget), so read: but only its first
    MESSAGE_MAX_CHARS characters go on, to the participants' logs, the model and `last_error`."""
    hostile.mode, hostile.size = "error", 900_000
    failed = await _call(hostile)
    assert failed.code == "tool_error"
    assert failed.message.startswith("y" * 100) and len(failed.message) < MESSAGE_MAX_CHARS + 100
    assert "900,000 characters" in failed.message
    hostile.target = "tools/list"
    found = await discover(url=hostile.url, auth="none", caller=Caller(uuid.uuid4(), uuid.uuid4()))
    assert found.status == "unreachable" and len(found.error) < MESSAGE_MAX_CHARS + 100, len(found.error)


async def test_discoveries_are_bounded_in_number_and_time(hostile, settings):
    """Six discoveries of an expert that never answers its tools/list, two slots: at most two
    connections are held at once, and every one has its answer within twice the time limit (a
    discovery waiting for a slot without a bound would take three: the bound below tells them apart
    with a time limit's worth of room for a loaded machine)."""
    hostile.mode, hostile.target, hostile.most_running = "stall", "tools/list", 0
    settings.EXPERT_DISCOVERY_CONCURRENCY = 2
    limit = 3.0
    caller = Caller(uuid.uuid4(), uuid.uuid4())
    started = time.monotonic()
    results = await asyncio.gather(
        *(discover(url=hostile.url, auth="none", caller=caller, timeout=limit) for _ in range(6)),
        return_exceptions=True,
    )
    elapsed = time.monotonic() - started
    assert hostile.most_running == 2, f"{hostile.most_running} held at once"
    assert elapsed < 3 * limit, elapsed
    busy = [result for result in results if isinstance(result, CortexError)]
    timed_out = [result for result in results if not isinstance(result, BaseException)]
    assert len(busy) + len(timed_out) == 6, results
    assert busy and all(
        error.code == "service_unavailable" and "EXPERT_DISCOVERY_CONCURRENCY" in error.message for error in busy
    )
    assert all(found.status == "unreachable" and "timed out" in found.error for found in timed_out)
