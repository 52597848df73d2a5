"""The core's calls to experts, for turns (the model's function tools and direct `/<expert> <tool>` calls).

    tools = await expert_tools(workspace_id=..., user_id=...)   # what the model may call
    result = await expert_call(user_id=..., workspace_id=..., expert="notes", tool="add_note", arguments={...})
    # {"content": "<the result's text>", "structured": {...} or None}

Reads and writes run through `db_call` (a worker thread whose connection is closed afterwards: a
turn worker holds no database connection between calls). Each call is made on the user's behalf with a token minted for that call (`tokens`), never with
the user's own token, to a host checked just before the call (`hosts`). Refusals are
`ExpertCallError` with a stable code: not_found (no such expert in the workspace, the user is not
a member of it, or no such tool), permission_denied (the tool is not in the expert's allowlist, or
the host is not allowed), service_unavailable (the expert cannot be reached or no signing key is
configured), invalid_input (arguments that cannot be sent), tool_error (the tool failed; its message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from mcp import MCPError
from mcp_types import TextContent

from common import metrics
from common.errors import CortexError, ErrorCode
from mcp_services.client import describe, encoding_error, unwrap
from mcp_services.experts.discovery import Caller, connect, discover, said
from mcp_services.serving import db_call
from workspaces import selectors, services
from workspaces.models import Expert

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0


class ExpertCallError(CortexError):
    """A call to an expert that did not produce a result (`code` says why)."""


@dataclass(frozen=True)
class ExpertTool:
    """One tool of a registered expert, as the model sees it."""

    expert: str  # the expert's name (a slug, unique in its workspace)
    name: str
    description: str
    input_schema: dict[str, Any]


async def expert_refresh(expert: Expert, *, user_id: uuid.UUID) -> Expert:
    """Re-discover one expert's tools on `user_id`'s behalf and store the result."""
    found = await discover(url=expert.url, auth=expert.auth, caller=Caller(user_id, expert.workspace_id))
    return await db_call(services.expert_discovery_save)(expert=expert, discovery=found.outcome())


async def expert_tools(*, workspace_id: uuid.UUID, user_id: uuid.UUID) -> list[ExpertTool]:
    """The tools of the workspace's experts that their allowlists let through, from the cache, for
    `user_id` (`selectors.experts_for_member`: none for a user who takes no part, or is inactive).

    Experts whose cached list has expired (the server's cache hint, or a list-changed
    notification) are re-discovered first, on that user's behalf, concurrently; one that cannot be
    reached keeps its last known tools until it answers again.
    """
    experts = await db_call(selectors.experts_for_member)(user_id=user_id, workspace_id=workspace_id)
    now = timezone.now()
    stale = [expert for expert in experts if expert.tools_expire_at is None or expert.tools_expire_at <= now]
    if stale:
        refreshed = await asyncio.gather(
            *(expert_refresh(expert, user_id=user_id) for expert in stale), return_exceptions=True
        )
        for old, new in zip(stale, refreshed, strict=True):
            if isinstance(new, BaseException):
                logger.warning("expert %s: refresh failed: %s", old.name, describe(new))
            else:
                experts[experts.index(old)] = new
    return [
        ExpertTool(
            expert=expert.name,
            name=tool["name"],
            description=tool.get("description", ""),
            input_schema=tool.get("input_schema") or {"type": "object"},
        )
        for expert in experts
        for tool in expert.visible_tools()
    ]


def _expert_for(user_id: uuid.UUID, workspace_id: uuid.UUID, name: str) -> Expert | None:
    return next(
        (
            expert
            for expert in selectors.experts_for_member(user_id=user_id, workspace_id=workspace_id)
            if expert.name == name
        ),
        None,
    )


async def expert_call(
    *,
    user_id: uuid.UUID,
    workspace_id: uuid.UUID,
    expert: str,
    tool: str,
    arguments: dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Call `tool` of the workspace's expert named `expert` on behalf of `user_id`.

    Returns `{"content": <the result's text>, "structured": <structured content or None>}`;
    raises `ExpertCallError`.
    """
    found = await db_call(_expert_for)(user_id, workspace_id, expert)
    if found is None:
        raise ExpertCallError(ErrorCode.NOT_FOUND, f"No expert named {expert!r} in this workspace.")
    if found.allowed_tools is not None and tool not in found.allowed_tools:
        raise ExpertCallError(ErrorCode.PERMISSION_DENIED, f"The tool {tool!r} of {expert!r} is not allowed here.")
    fresh = found.status == Expert.Status.OK and found.tools_expire_at and found.tools_expire_at > timezone.now()
    if fresh and tool not in {entry["name"] for entry in found.tools}:
        raise ExpertCallError(ErrorCode.NOT_FOUND, f"The expert {expert!r} has no tool {tool!r}.")
    if not isinstance(arguments, dict):
        raise ExpertCallError(ErrorCode.INVALID_INPUT, "The arguments must be a JSON object.")
    problem = encoding_error(arguments)
    if problem is not None:
        raise ExpertCallError(ErrorCode.INVALID_INPUT, f"The arguments cannot be sent ({problem}).")

    started = time.perf_counter()
    failure: str | None = None
    tools_changed = False
    try:
        async with asyncio.timeout(timeout):
            async with connect(
                url=found.url, auth=found.auth, caller=Caller(user_id, workspace_id), tool=tool, timeout=timeout
            ) as connection:
                try:
                    result = await connection.client.call_tool(tool, arguments)
                finally:
                    tools_changed = connection.tools_changed
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our caller cancelled us (a cancelled turn, a stopping worker)
        # Nobody cancelled this task: the SDK's transport task failed mid-call and its cancel scope
        # let the cancellation out instead of the error. The expert failed; the caller goes on.
        failure = ErrorCode.SERVICE_UNAVAILABLE
        raise ExpertCallError(
            ErrorCode.SERVICE_UNAVAILABLE, f"The expert {expert!r} failed: the connection failed during the call."
        ) from None
    except CortexError as exc:  # refused host, unreachable, no key, or it answered too much (`connect`)
        failure = exc.code
        raise ExpertCallError(exc.code, exc.message) from None
    except MCPError as exc:
        failure = ErrorCode.TOOL_ERROR
        sent = CortexError.from_mcp_data(exc.data, exc.message)
        raise ExpertCallError(
            sent.code if sent else ErrorCode.TOOL_ERROR, said(sent.message if sent else exc.message)
        ) from None
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - a transport failure: the expert is unreachable
        inner = unwrap(exc)
        if isinstance(inner, MCPError):
            failure = ErrorCode.TOOL_ERROR
            raise ExpertCallError(ErrorCode.TOOL_ERROR, said(inner.message)) from None
        failure = ErrorCode.SERVICE_UNAVAILABLE
        raise ExpertCallError(
            ErrorCode.SERVICE_UNAVAILABLE, f"The expert {expert!r} failed: {said(describe(exc))}"
        ) from None
    finally:
        metrics.MCP_CALLS.labels("expert", "call_tool").observe(time.perf_counter() - started)
        if failure is not None:
            metrics.MCP_ERRORS.labels("expert", "call_tool", str(failure)).inc()
        if tools_changed:
            await db_call(services.expert_tools_expire)(expert_id=found.id)

    text = "\n".join(part.text for part in result.content if isinstance(part, TextContent))
    limit = settings.EXPERT_RESULT_MAX_BYTES
    size = len(text.encode())
    if result.structured_content is not None:
        size += len(json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        metrics.MCP_ERRORS.labels("expert", "call_tool", ErrorCode.PAYLOAD_TOO_LARGE).inc()
        raise ExpertCallError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The expert {expert!r} answered {size:,} bytes; at most {limit:,} are accepted (EXPERT_RESULT_MAX_BYTES).",
        )
    if result.is_error:
        sent = CortexError.from_mcp_data((result.structured_content or {}).get("error"), text or f"{tool} failed")
        metrics.MCP_ERRORS.labels("expert", "call_tool", ErrorCode.TOOL_ERROR).inc()
        raise ExpertCallError(
            ErrorCode.TOOL_ERROR, said(sent.message if sent is not None else text or f"{tool} failed")
        )
    return {"content": text, "structured": result.structured_content}
