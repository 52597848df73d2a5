"""The workspace's expert tools, as a turn uses them (the experts themselves: `mcp_services.experts`)."""

from __future__ import annotations

import importlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from common.errors import CortexError, ErrorCode


@dataclass(frozen=True)
class FunctionTool:
    """An expert tool offered to the model as a function (names limited to `[A-Za-z0-9_-]{1,64}`)."""

    function: str
    expert: str
    tool: str
    description: str
    input_schema: dict[str, Any]


def _experts() -> Any:
    try:
        return importlib.import_module("mcp_services.experts")
    except ImportError:  # a deployment without the experts app: no tools
        return None


def _function_name(expert: str, tool: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{expert}__{tool}")[:64]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base[: 64 - len(str(n)) - 1]}_{n}"
    return name


async def workspace_tools(*, workspace_id: uuid.UUID) -> list[FunctionTool]:
    experts = _experts()
    if experts is None:
        return []
    tools = await sync_to_async(experts.expert_tools)(workspace_id=workspace_id)
    functions: list[FunctionTool] = []
    taken: set[str] = set()
    for tool in tools:
        name = _function_name(tool.expert, tool.name, taken)
        taken.add(name)
        functions.append(
            FunctionTool(
                function=name,
                expert=tool.expert,
                tool=tool.name,
                description=tool.description or "",
                input_schema=tool.input_schema or {"type": "object", "properties": {}},
            )
        )
    return functions


async def call(
    *, user_id: uuid.UUID, workspace_id: uuid.UUID, expert: str, tool: str, arguments: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """`{"content": str, "structured": ...}`; a refusal or failure is a CortexError (`ExpertCallError`)."""
    experts = _experts()
    if experts is None:
        raise CortexError(ErrorCode.NOT_FOUND, f"No expert named {expert!r} in this workspace.")
    return await experts.expert_call(
        user_id=user_id, workspace_id=workspace_id, expert=expert, tool=tool, arguments=arguments, timeout=timeout
    )
