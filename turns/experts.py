"""The workspace's expert tools, as a turn offers them to the model (the experts themselves, their
tokens and host policy: `mcp_services.experts.calls`)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from mcp_services.experts.calls import TaskSeen, expert_call, expert_task, expert_tool_policy, expert_tools


@dataclass(frozen=True)
class FunctionTool:
    """An expert tool offered to the model as a function (names limited to `[A-Za-z0-9_-]{1,64}`)."""

    function: str
    expert: str
    tool: str
    description: str
    input_schema: dict[str, Any]
    policy: str = "ask"  # "auto" | "ask": an `ask` tool waits for the requester's approval


def _function_name(expert: str, tool: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{expert}__{tool}")[:64]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base[: 64 - len(str(n)) - 1]}_{n}"
    return name


async def workspace_tools(*, workspace_id: uuid.UUID, user_id: uuid.UUID, shared: bool) -> list[FunctionTool]:
    """The tools offered to the model in a turn of `user_id` (none for an inactive user); `shared`:
    the conversation has other participants (a tool without a `tool_policy` entry asks there)."""
    functions: list[FunctionTool] = []
    taken: set[str] = set()
    for tool in await expert_tools(workspace_id=workspace_id, user_id=user_id, shared=shared):
        name = _function_name(tool.expert, tool.name, taken)
        taken.add(name)
        functions.append(
            FunctionTool(
                function=name,
                expert=tool.expert,
                tool=tool.name,
                description=tool.description or "",
                input_schema=tool.input_schema or {"type": "object", "properties": {}},
                policy=tool.policy,
            )
        )
    return functions


async def tool_policy(*, user_id: uuid.UUID, workspace_id: uuid.UUID, expert: str, tool: str, shared: bool) -> str:
    return await expert_tool_policy(user_id=user_id, workspace_id=workspace_id, expert=expert, tool=tool, shared=shared)


async def call(
    *,
    user_id: uuid.UUID,
    workspace_id: uuid.UUID,
    expert: str,
    tool: str,
    arguments: dict[str, Any],
    timeout: float,
    **answers: Any,
) -> dict[str, Any]:
    """`{"content": str, "structured": ...}`; a refusal or failure is an `ExpertCallError` (a CortexError),
    a question asked with `input_required` an `ExpertNeedsInput`; `answers`: `input_responses` and
    `request_state` that answer one."""
    return await expert_call(
        user_id=user_id,
        workspace_id=workspace_id,
        expert=expert,
        tool=tool,
        arguments=arguments,
        timeout=timeout,
        **answers,
    )


async def task(
    *, user_id: uuid.UUID, workspace_id: uuid.UUID, expert: str, tool: str, task_id: str, **options: Any
) -> TaskSeen:
    """One look at (or answer to, or cancel of) a call's task (`expert_task`)."""
    return await expert_task(
        user_id=user_id, workspace_id=workspace_id, expert=expert, tool=tool, task_id=task_id, **options
    )
