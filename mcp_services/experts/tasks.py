"""MCP Tasks on the wire, for both revisions the core speaks (the core's side of `calls`).

- 2026-07-28, the Tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663): the client declares
  the extension in each request's capabilities and the server decides, per call, to answer
  `tools/call` with a task handle (`resultType: "task"`). `tasks/get` returns the task with its
  `inputRequests` (status `input_required`), its `result` (completed) or `error` (failed);
  `tasks/update` answers the input requests; `tasks/cancel` asks it to stop.
- 2025-11-25, tasks in the core protocol: the client asks for a task (`params.task`) on tools whose
  `execution.taskSupport` is `required` or `optional`; `tools/call` answers `CreateTaskResult`,
  `tasks/get` the status, `tasks/result` the result once it is done; `tasks/cancel`. A task that
  needs input there asks it through `tasks/result` with `elicitation/create`, on a held connection
  (the older mid-call form).

The MCP SDK (mcp 2.3.0) carries the 2025-11-25 task types but sends none of these methods: requests
go through the session's dispatcher with its own stamping (headers, per-request capabilities), and
answers are read here, as data from an expert that may be hostile (bounded, checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mcp.client import ClientSession
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.inbound import MCP_NAME_HEADER, encode_header_value
from mcp_types import CallToolResult, ElicitRequest, Result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, ValidationError

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
STATUSES = ("working", "input_required", "completed", "failed", "cancelled")
FINAL = ("completed", "failed", "cancelled")
TASK_ID_MAX_CHARS = 256
# The expert's pollInterval, kept within these bounds (seconds): a hint of 0 would make a busy loop,
# one of an hour would leave a finished task unseen for that long.
POLL_MIN_SECONDS = 0.2
POLL_MAX_SECONDS = 5.0


class TaskHandle(Result):
    """A 2026-07-28 `tools/call` answered with a task (`resultType: "task"`)."""

    model_config = ConfigDict(extra="allow")
    result_type: Literal["task"] = "task"
    task_id: str
    status: str = "working"
    status_message: str | None = None
    poll_interval: int | None = None


async def _unresolved(result: TaskHandle, context: ClaimContext) -> CallToolResult:
    raise RuntimeError("tasks are followed by the core's turns, not resolved in the call")  # never called


class Tasks(ClientExtension):
    """Declares the Tasks extension and lets `tools/call` return its task handle (the caller follows it)."""

    identifier = TASKS_EXTENSION

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=_unresolved)]


@dataclass(frozen=True)
class TaskState:
    """What one look at a task says (either revision)."""

    task_id: str
    status: str
    message: str | None = None
    poll_seconds: float = 1.0
    # input_required (2026-07-28): the key and the elicitation the task waits for.
    input_key: str | None = None
    input_request: ElicitRequest | None = None
    result: CallToolResult | None = None  # completed (2026-07-28: in `tasks/get`)
    error: str | None = None  # failed

    @property
    def final(self) -> bool:
        return self.status in FINAL


def poll_seconds(interval_ms: Any) -> float:
    seconds = interval_ms / 1000 if isinstance(interval_ms, int | float) and interval_ms == interval_ms else 1.0
    return max(POLL_MIN_SECONDS, min(seconds, POLL_MAX_SECONDS))


class TaskAnswerError(Exception):
    """The expert's answer about a task is not one this client can read."""


def task_state(raw: Any) -> TaskState:
    """A task as `tools/call` (either revision's handle) or `tasks/get` returned it."""
    if not isinstance(raw, dict):
        raise TaskAnswerError("not an object")
    wrapped = raw.get("task")
    task: dict[str, Any] = wrapped if isinstance(wrapped, dict) else raw  # 2025-11-25 wraps it in `task`
    task_id, status = task.get("taskId"), task.get("status")
    if not isinstance(task_id, str) or not task_id or len(task_id) > TASK_ID_MAX_CHARS:
        raise TaskAnswerError("no task id")
    if status not in STATUSES:
        raise TaskAnswerError(f"unknown status {str(status)[:40]!r}")
    message = task.get("statusMessage")
    state: dict[str, Any] = {
        "task_id": task_id,
        "status": status,
        "message": message[:500] if isinstance(message, str) and message else None,
        "poll_seconds": poll_seconds(task.get("pollInterval")),
    }
    if status == "input_required" and isinstance(task.get("inputRequests"), dict):
        requests = task["inputRequests"]
        if len(requests) != 1:
            raise TaskAnswerError("a task may ask one question at a time here")
        key, request = next(iter(requests.items()))
        try:
            state["input_request"] = ElicitRequest.model_validate(request)
        except ValidationError:
            raise TaskAnswerError("the task asks for input this client cannot give (only questions)") from None
        state["input_key"] = str(key)[:200]
    if status == "completed" and isinstance(task.get("result"), dict):
        try:
            state["result"] = CallToolResult.model_validate(task["result"])
        except ValidationError:
            raise TaskAnswerError("its result is not a tool result") from None
    if status == "failed":
        error = task.get("error")
        text = error.get("message") if isinstance(error, dict) else message
        state["error"] = str(text or "the task failed")[:1000]
    return TaskState(**state)


def tool_result(raw: Any) -> CallToolResult:
    """A task's result (`tasks/result`, or a 2025-11-25 `tools/call` answered without a task)."""
    try:
        return CallToolResult.model_validate(raw)
    except ValidationError:
        raise TaskAnswerError("its result is not a tool result") from None


async def send(session: ClientSession, method: str, params: dict[str, Any], timeout: float) -> Any:
    """One request the SDK has no method for, stamped as the session stamps its own (the
    negotiated version's headers, and per-request capabilities on 2026-07-28, with the task id in
    `Mcp-Name` as SEP-2663 asks). Raises `MCPError` for the expert's refusal."""
    data: dict[str, Any] = {"method": method, "params": params}
    options: Any = {"timeout": timeout}
    session._stamp(data, options)  # noqa: SLF001 - the SDK's own stamping; no public way to send another method
    if session.protocol_version in MODERN_PROTOCOL_VERSIONS and "taskId" in params:
        options.setdefault("headers", {})[MCP_NAME_HEADER] = encode_header_value(params["taskId"])
    return await session._dispatcher.send_raw_request(method, data.get("params"), options)  # noqa: SLF001
