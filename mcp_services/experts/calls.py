"""The core's calls to experts, for turns (the model's function tools and direct `/<expert> <tool>` calls).

    tools = await expert_tools(workspace_id=..., user_id=...)   # what the model may call
    result = await expert_call(user_id=..., workspace_id=..., expert="notes", tool="add_note", arguments={...})
    # {"content": "<the result's text>", "structured": {...} or None, "blocks": [...]}

Reads and writes run through `db_call` (a worker thread whose connection is closed afterwards: a
turn worker holds no database connection between calls). Each call is made on the user's behalf with a token minted for that call (`tokens`), never with
the user's own token, to a host checked just before the call (`hosts`). Refusals are
`ExpertCallError` with a stable code (an `oauth` expert the requester has no usable account at:
`ExpertNeedsConnection`): not_found (no such expert in the workspace, the user is not
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
import math
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
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry.trace import SpanKind

from common import metrics, tracing
from common.db import db_call
from common.errors import CortexError, ErrorCode
from mcp_services.client import describe, encoding_error, unwrap
from mcp_services.experts import tasks as wire
from mcp_services.experts.content import result_blocks
from mcp_services.experts.credentials import ExpertNeedsConnection
from mcp_services.experts.discovery import Caller, Connection, connect, discover, said
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
# The expert's progress on a call: (progress, total or None, message or None).
Progress = Callable[[float, float | None, str | None], Awaitable[None]]


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
    found = await discover(
        url=expert.url, auth=expert.auth, caller=Caller(user_id, expert.workspace_id, expert.id, expert.name)
    )
    if found.status == Expert.Status.NEEDS_CONNECTION and expert.status == Expert.Status.OK:
        return expert  # this user has no account there: the tools another account listed stay
    return await db_call(services.expert_discovery_save)(expert=expert, discovery=found.outcome())


async def expert_tools(*, workspace_id: uuid.UUID, user_id: uuid.UUID, shared: bool = False) -> list[ExpertTool]:
    """The tools of the workspace's experts that their allowlists let through, from the cache, for
    `user_id` (`selectors.experts_for_member`: none for a user who takes no part, or is inactive),
    each with its policy (`Expert.policy_for`; `shared`: for a conversation with other participants).

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
        for tool in expert.visible_tools(shared=shared)
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


async def expert_tool_policy(
    *, user_id: uuid.UUID, workspace_id: uuid.UUID, expert: str, tool: str, shared: bool = False
) -> str:
    """The policy of one tool for a call on `user_id`'s behalf (a direct call asks this first;
    `shared`: `Expert.policy_for`).
    An expert the user cannot reach, or a tool the expert does not have (its list re-discovered
    first when stale), is `auto` here: the call itself refuses it (not_found), and nobody is asked
    to approve a call that cannot happen."""
    found = await db_call(_expert_for)(user_id, workspace_id, expert)
    if found is None:
        return "auto"
    if found.tools_expire_at is None or found.tools_expire_at <= timezone.now():
        try:
            found = await expert_refresh(found, user_id=user_id)
        except CortexError as exc:
            logger.warning("expert %s: refresh failed: %s", found.name, exc.message)
    if found.status == Expert.Status.OK and tool not in {entry["name"] for entry in found.tools}:
        return "auto"
    return found.policy_for(tool, shared=shared)


async def _checked(user_id: uuid.UUID, workspace_id: uuid.UUID, expert: str, tool: str) -> Expert:
    """The expert a call on `user_id`'s behalf may reach for `tool`, or the refusal."""
    found = await db_call(_expert_for)(user_id, workspace_id, expert)
    if found is None:
        raise ExpertCallError(ErrorCode.NOT_FOUND, f"No expert named {expert!r} in this workspace.")
    if found.allowed_tools is not None and tool not in found.allowed_tools:
        raise ExpertCallError(ErrorCode.PERMISSION_DENIED, f"The tool {tool!r} of {expert!r} is not allowed here.")
    if found.policy_for(tool) == "deny":
        raise ExpertCallError(ErrorCode.DENIED, f"The tool {tool!r} of {expert!r} is denied by its tool policy.")
    return found


async def _operate(
    found: Expert,
    caller: Caller,
    *,
    tool: str,
    operation: str,
    timeout: float,
    body: Callable[[Connection], Awaitable[Any]],
    ask: Ask | None = None,
    tasks: bool = True,
    rejoin: dict[str, Any] | None = None,
) -> Any:
    """`body` on a connection to the expert, with every failure as an `ExpertCallError` and the
    call's metrics (`operation`: call_tool, or a tasks/* method)."""
    expert = found.name
    started = time.perf_counter()
    failure: str | None = None
    tools_changed = False
    try:
        async with asyncio.timeout(timeout):
            async with connect(
                url=found.url,
                auth=found.auth,
                caller=caller,
                tool=tool,
                timeout=timeout,
                elicit=_elicitation_callback(ask),
                tasks=tasks,
                rejoin=rejoin,
            ) as connection:
                # MCP semantic conventions; the expert gets the trace in `_meta` (`traceparent`).
                method = "tools/call" if operation == "call_tool" else operation
                attributes = {"mcp.method.name": method, "gen_ai.tool.name": tool, "cortex.expert": expert}
                try:
                    with tracing.span(f"{method} {tool}", kind=SpanKind.CLIENT, attributes=attributes):
                        return await body(connection)
                finally:
                    tools_changed = connection.tools_changed
    except ExpertNeedsConnection:
        failure = "needs_connection"
        raise  # the requester connects their account first (turns ask them)
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
    except ExpertCallError as exc:
        failure = exc.code
        raise
    except CortexError as exc:  # refused host, unreachable, no key, or it answered too much (`connect`)
        failure = exc.code
        raise ExpertCallError(exc.code, exc.message) from None
    except wire.TaskAnswerError as exc:  # a task, or its result, this client cannot read
        failure = ErrorCode.TOOL_ERROR
        raise ExpertCallError(
            ErrorCode.TOOL_ERROR, f"The expert {expert!r} answered a task unreadably: {said(str(exc))}"
        ) from None
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
        metrics.MCP_CALLS.labels("expert", operation).observe(time.perf_counter() - started)
        if failure is not None:
            metrics.MCP_ERRORS.labels("expert", operation, str(failure)).inc()
        if tools_changed:
            await db_call(services.expert_tools_expire)(expert_id=found.id)


def _task_support(found: Expert, tool: str) -> str:
    entry = next((entry for entry in found.tools if entry.get("name") == tool), None)
    return str((entry or {}).get("task_support") or "forbidden")


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
    progress: Progress | None = None,
    tasks: bool = False,
) -> dict[str, Any]:
    """Call `tool` of the workspace's expert named `expert` on behalf of `user_id`.

    Returns `{"content": <the result's text>, "structured": <structured content or None>,
    "blocks": [<every non-text block>]}` (`content.result_blocks`); `progress` is awaited with the
    expert's progress notifications (`progress`, `total`, `message`);
    raises `ExpertCallError`, or `ExpertNeedsInput` when the expert asks a question with
    `input_required` (see the module docstring; `input_responses` and `request_state` answer it).

    `tasks`: the caller follows tasks (a turn, which waits for them durably). The core then declares
    the Tasks extension (2026-07-28: the expert may answer with a task) and asks for a task on a
    2025-11-25 expert's tools whose `taskSupport` is `required` or `optional` (optional ones too: a
    task holds nothing of the core while it runs and survives a worker's restart, at the cost of
    one more round trip). A task started raises `ExpertTaskStarted`.
    """
    found = await _checked(user_id, workspace_id, expert, tool)
    fresh = found.status == Expert.Status.OK and found.tools_expire_at and found.tools_expire_at > timezone.now()
    if fresh and tool not in {entry["name"] for entry in found.tools}:
        raise ExpertCallError(ErrorCode.NOT_FOUND, f"The expert {expert!r} has no tool {tool!r}.")
    if not isinstance(arguments, dict):
        raise ExpertCallError(ErrorCode.INVALID_INPUT, "The arguments must be a JSON object.")
    problem = encoding_error(arguments)
    if problem is not None:
        raise ExpertCallError(ErrorCode.INVALID_INPUT, f"The arguments cannot be sent ({problem}).")
    as_task = tasks and _task_support(found, tool) in ("required", "optional")

    async def call(connection: Connection) -> Any:
        session = connection.client.session
        if as_task and connection.client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            ttl = settings.EXPERT_TASK_MAX_SECONDS * 1000
            raw = await wire.send(
                session, "tools/call", {"name": tool, "arguments": arguments, "task": {"ttl": ttl}}, timeout
            )
            if isinstance(raw, dict) and isinstance(raw.get("task"), dict):
                return wire.task_state(raw), connection.rejoin()
            return wire.tool_result(raw)
        result = await session.call_tool(
            tool,
            arguments,
            input_responses={key: elicit_result(answer) for key, answer in (input_responses or {}).items()} or None,
            request_state=request_state,
            allow_input_required=True,
            allow_claimed=True,
            progress_callback=_progress_callback(progress),
            meta=tracing.meta(),  # type: ignore[arg-type]
        )
        if isinstance(result, wire.TaskHandle):
            return wire.task_state(result.model_dump(by_alias=True, mode="json", exclude_none=True))
        return result

    result = await _operate(
        found,
        Caller(user_id, workspace_id, found.id, found.name),
        tool=tool,
        operation="call_tool",
        timeout=timeout,
        body=call,
        ask=ask,
        tasks=tasks,
    )
    if isinstance(result, wire.TaskState):
        raise ExpertTaskStarted(result)
    if isinstance(result, tuple):  # a 2025-11-25 task: it may belong to the session that started it
        raise ExpertTaskStarted(result[0], rejoin=result[1])
    if isinstance(result, InputRequiredResult):
        raise _needs_input(result)
    return _tool_answer(expert, tool, result)


def _tool_answer(expert: str, tool: str, result: Any) -> dict[str, Any]:
    """A tool's result as the core keeps it, or the refusal (too large, or the tool failed)."""
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
    blocks, dropped = result_blocks(list(result.content))
    answer: dict[str, Any] = {"content": text, "structured": result.structured_content, "blocks": blocks}
    if dropped:
        answer["blocks_dropped"] = dropped
    return answer


class ExpertTaskStarted(Exception):
    """The expert runs the call as a task (`state`): follow it with `expert_task`."""

    def __init__(self, state: wire.TaskState, rejoin: dict[str, Any] | None = None) -> None:
        super().__init__(state.task_id)
        self.state = state
        # 2025-11-25: the session the task was started in (servers may keep tasks per session):
        # kept with the task, and every later look at it goes back into that session.
        self.rejoin = rejoin


@dataclass(frozen=True)
class TaskSeen:
    """One look at a task (`expert_task`): its state, its question as a `Question` when it waits
    for input (2026-07-28), and its result as `expert_call` returns one when it completed."""

    state: wire.TaskState
    question: Question | None = None
    answer: dict[str, Any] | None = None


async def expert_task(
    *,
    user_id: uuid.UUID,
    workspace_id: uuid.UUID,
    expert: str,
    tool: str,
    task_id: str,
    action: str = "get",
    answer: tuple[str, Answer] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ask: Ask | None = None,
    rejoin: dict[str, Any] | None = None,
) -> TaskSeen:
    """Look at a task of `tool` (`action` "get"), answer its question (`"update"`, `answer`: the
    input key and the requester's answer; 2026-07-28 `tasks/update`), or cancel it (`"cancel"`).

    A 2025-11-25 expert's task gives its result with `tasks/result`, fetched once `tasks/get` says
    it completed; one that needs input asks it there, mid-request (`ask`, on a held connection)."""
    found = await _checked(user_id, workspace_id, expert, tool)

    async def follow(connection: Connection) -> TaskSeen:
        session = connection.client.session
        modern = connection.client.protocol_version in MODERN_PROTOCOL_VERSIONS
        if action == "cancel":
            await wire.send(session, "tasks/cancel", {"taskId": task_id}, timeout)
            return TaskSeen(state=wire.TaskState(task_id=task_id, status="cancelled"))
        if action == "update" and answer is not None:
            key, reply = answer
            responses = {key: elicit_result(reply).model_dump(by_alias=True, mode="json", exclude_none=True)}
            await wire.send(session, "tasks/update", {"taskId": task_id, "inputResponses": responses}, timeout)
        state = wire.task_state(await wire.send(session, "tasks/get", {"taskId": task_id}, timeout))
        if state.task_id != task_id:
            raise wire.TaskAnswerError("it answered about another task")
        question = None
        if state.input_request is not None:
            question = _question(state.input_request.params, key=state.input_key or "")
        result = state.result
        # 2025-11-25 asks a task's question inside `tasks/result` (when `tasks/get` does not carry it).
        asks_inside = state.status == "input_required" and question is None and ask is not None
        if not modern and (state.status == "completed" or asks_inside):
            result = wire.tool_result(await wire.send(session, "tasks/result", {"taskId": task_id}, timeout))
            state = wire.TaskState(task_id=task_id, status="completed", message=state.message, result=result)
        if state.status == "completed" and result is None:
            raise wire.TaskAnswerError("it completed without a result")
        return TaskSeen(
            state=state, question=question, answer=None if result is None else _tool_answer(expert, tool, result)
        )

    operation = f"tasks/{action}"
    caller = Caller(user_id, workspace_id, found.id, found.name)
    return await _operate(
        found, caller, tool=tool, operation=operation, timeout=timeout, body=follow, ask=ask, rejoin=rejoin
    )


def _progress_callback(progress: Progress | None) -> Any:
    """The SDK's progress callback: checked numbers and a cut message, to `progress`. A failure in
    `progress` (the turn's log could not be written) is the turn's to see later, not the call's."""
    if progress is None:
        return None

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        if not isinstance(done, int | float) or not math.isfinite(done):
            return
        if total is not None and (not isinstance(total, int | float) or not math.isfinite(total) or total <= 0):
            total = None
        try:
            await progress(
                float(done), None if total is None else float(total), said(message)[:200] if message else None
            )
        except Exception:  # noqa: BLE001 - progress is a courtesy; the call goes on
            logger.warning("progress of an expert call could not be shown", exc_info=True)

    return on_progress


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
