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
configured), invalid_input (arguments that cannot be sent), tool_error (the tool failed; its message),
denied (the expert's `tool_policy` denies the tool).

An expert may ask the user for input during a call (MCP elicitation), in either form of the SDK:
- 2026-07-28 `input_required`: the call returns the question and an opaque `request_state`;
  `expert_call` raises `ExpertNeedsInput` and the connection is closed. The caller stores both and
  calls again, whenever the answer comes, with `input_responses` and `request_state`.
- up to 2025-11-25, `elicitation/create` sent in the middle of the call: the connection has to stay
  open. `ask` (an async callable) is awaited for the answer; without it the expert is told the
  client cannot answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone
from mcp import MCPError
from mcp_types import (
    INVALID_REQUEST,
    CallToolResult,
    ElicitRequest,
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
    ErrorData,
    InputRequiredResult,
    TextContent,
)
from opentelemetry.trace import SpanKind

from common import metrics, tracing
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
class Question:
    """What an expert asks the user during a call: a form (`schema`, a flat JSON schema) or a URL."""

    message: str
    schema: dict[str, Any] | None = None
    url: str | None = None
    key: str = ""  # input_required: the key of the request in `input_requests`
    request_state: str | None = None  # input_required: echoed back verbatim with the answer


# The answer to a question: {"action": "accept" | "decline" | "cancel", "content": {...}?}.
Answer = dict[str, Any]
Ask = Callable[[Question], Awaitable[Answer]]


class ExpertNeedsInput(Exception):
    """The expert answered the call with `input_required`: nothing is held open; call again with
    the answer (`input_responses={question.key: ...}`, `request_state=question.request_state`)."""

    def __init__(self, question: Question) -> None:
        super().__init__(question.message)
        self.question = question


def _question(params: ElicitRequestParams, *, key: str = "", request_state: str | None = None) -> Question:
    if isinstance(params, ElicitRequestURLParams):
        return Question(message=params.message, url=params.url, key=key, request_state=request_state)
    return Question(message=params.message, schema=dict(params.requested_schema), key=key, request_state=request_state)


def elicit_result(answer: Answer) -> ElicitResult:
    if answer.get("action") == "accept":
        return ElicitResult(action="accept", content=answer.get("content") or {})
    return ElicitResult(action=answer.get("action", "cancel"))


def _needs_input(result: InputRequiredResult) -> ExpertNeedsInput | ExpertCallError:
    """The one question an `input_required` result asks; more than one elicitation at once, or
    another kind of input (sampling, roots), is not something a person can answer here."""
    requests = result.input_requests or {}
    elicitations = [(key, request) for key, request in requests.items() if isinstance(request, ElicitRequest)]
    if len(requests) != 1 or len(elicitations) != 1:
        return ExpertCallError(
            ErrorCode.TOOL_ERROR, "The expert asked for input this client cannot give (one question at a time)."
        )
    key, request = elicitations[0]
    return ExpertNeedsInput(_question(request.params, key=key, request_state=result.request_state))


@dataclass(frozen=True)
class ExpertTool:
    """One tool of a registered expert, as the model sees it."""

    expert: str  # the expert's name (a slug, unique in its workspace)
    name: str
    description: str
    input_schema: dict[str, Any]
    policy: str = "ask"  # "auto" | "ask" (denied tools are not listed)


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
            policy=tool["policy"],
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


async def expert_tool_policy(*, user_id: uuid.UUID, workspace_id: uuid.UUID, expert: str, tool: str) -> str:
    """The policy of one tool for a call on `user_id`'s behalf (a direct call asks this first);
    an expert the user cannot reach is `auto` here: the call itself refuses it with its reason."""
    found = await db_call(_expert_for)(user_id, workspace_id, expert)
    return "auto" if found is None else found.policy_for(tool)


async def expert_call(
    *,
    user_id: uuid.UUID,
    workspace_id: uuid.UUID,
    expert: str,
    tool: str,
    arguments: dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT,
    ask: Ask | None = None,
    input_responses: dict[str, Answer] | None = None,
    request_state: str | None = None,
) -> dict[str, Any]:
    """Call `tool` of the workspace's expert named `expert` on behalf of `user_id`.

    Returns `{"content": <the result's text>, "structured": <structured content or None>}`;
    raises `ExpertCallError`, or `ExpertNeedsInput` when the expert asks a question with
    `input_required` (see the module docstring; `input_responses` and `request_state` answer it).
    """
    found = await db_call(_expert_for)(user_id, workspace_id, expert)
    if found is None:
        raise ExpertCallError(ErrorCode.NOT_FOUND, f"No expert named {expert!r} in this workspace.")
    if found.allowed_tools is not None and tool not in found.allowed_tools:
        raise ExpertCallError(ErrorCode.PERMISSION_DENIED, f"The tool {tool!r} of {expert!r} is not allowed here.")
    if found.policy_for(tool) == "deny":
        raise ExpertCallError(ErrorCode.DENIED, f"The tool {tool!r} of {expert!r} is denied by its tool policy.")
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
                url=found.url,
                auth=found.auth,
                caller=Caller(user_id, workspace_id),
                tool=tool,
                timeout=timeout,
                elicit=_elicitation_callback(ask),
            ) as connection:
                # MCP semantic conventions; the expert gets the trace in `_meta` (`traceparent`).
                attributes = {"mcp.method.name": "tools/call", "gen_ai.tool.name": tool, "cortex.expert": expert}
                try:
                    with tracing.span(f"tools/call {tool}", kind=SpanKind.CLIENT, attributes=attributes):
                        result = await connection.client.session.call_tool(
                            tool,
                            arguments,
                            input_responses={
                                key: elicit_result(answer) for key, answer in (input_responses or {}).items()
                            }
                            or None,
                            request_state=request_state,
                            allow_input_required=True,
                            meta=tracing.meta(),  # type: ignore[arg-type]
                        )
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

    if isinstance(result, InputRequiredResult):
        raise _needs_input(result)
    if not isinstance(result, CallToolResult):
        raise ExpertCallError(ErrorCode.TOOL_ERROR, f"The expert {expert!r} answered with an unexpected result.")
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


def _elicitation_callback(ask: Ask | None) -> Any:
    """The mid-call form (`elicitation/create`): the question goes to `ask`, awaited on the event
    loop (no thread waits). Without `ask`, the expert is told this client cannot answer."""
    if ask is None:
        return None

    async def on_elicit(context: Any, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        try:
            return elicit_result(await ask(_question(params)))
        except CortexError as exc:
            return ErrorData(code=INVALID_REQUEST, message=exc.message)

    return on_elicit
