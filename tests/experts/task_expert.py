"""A test expert outside the project, built with the MCP SDK, for the core's MCP client: every kind of
content, progress, questions with defaults, and long-running tools as tasks (the Tasks extension).

    python -m tests.experts.task_expert --port P --log FILE [--legacy]

Without `--legacy` it speaks 2026-07-28 (stateless, `server/discover`); with it, 2025-11-25 (it
refuses `server/discover`, so clients fall back to `initialize`, and keeps sessions). It logs, one
JSON line per request, what the tests need to see of what the client sent: the method, the client
capabilities it declared, the tool, and whether the call asked for a task.

On 2025-11-25 a task belongs to the session that started it (as in the MCP reference server):
`tasks/*` from another session is answered "Task not found".

Tools:
- `picture` (`size`: bytes of image data): a PNG header and `size` bytes, and a line of text.
- `links`: a resource link, an embedded text resource, and a link with a `javascript:` URI.
- `preferences`: asks a form (`input_required` on 2026-07-28, `elicitation/create` mid-call on
  2025-11-25) whose fields have `default`s, and returns the answer as it arrived.
- `steps` (`count`, `delay_ms`): reports progress `count` times, `delay_ms` apart.
- `research` (`seconds`, `ask`): `taskSupport: "required"`. Runs `seconds` as a task; with `ask`, its
  status becomes `input_required` halfway (the question in `tasks/get`'s `inputRequests`), answered
  with `tasks/update`. Each start is counted (`started` in the log): a task is never started twice.
- `quick` (`text`): `taskSupport: "optional"`, finishes at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from mcp import MCPError
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import (
    AudioContent,
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    ImageContent,
    InputRequiredResult,
    RequestParams,
    ResourceLink,
    TextContent,
    TextResourceContents,
    ToolExecution,
)
from pydantic import BaseModel, ConfigDict

from tests.experts.recording_expert import legacy_only

PNG = b"\x89PNG\r\n\x1a\n"
PREFERENCES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "title": "Name"},
        "color": {"type": "string", "enum": ["red", "green", "blue"], "default": "green"},
        "count": {"type": "integer", "minimum": 1, "default": 3},
        "subscribe": {"type": "boolean", "default": True},
    },
    "required": ["name"],
}
CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"go_on": {"type": "boolean", "default": True}, "note": {"type": "string", "default": "as planned"}},
}
TASK_TOOLS = {"research": "required", "quick": "optional"}


class Log:
    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a") as log:
            log.write(json.dumps(entry) + "\n")


class TaskIdParams(RequestParams):
    model_config = ConfigDict(extra="allow")
    task_id: str


class TaskUpdateParams(RequestParams):
    model_config = ConfigDict(extra="allow")
    task_id: str
    input_responses: dict[str, Any] | None = None


class Job:
    def __init__(self, task_id: str, poll_ms: int, *, modern: bool) -> None:
        self.modern = modern
        self.session = ""  # 2025-11-25: the session that started it (its Mcp-Session-Id)
        self.task_id = task_id
        self.status = "working"
        self.message: str | None = None
        self.created = datetime.now(UTC).isoformat()
        self.updated = self.created
        self.poll_ms = poll_ms
        self.result: CallToolResult | None = None
        self.input_requests: dict[str, Any] | None = None
        self.answer: asyncio.Future[dict[str, Any]] | None = None
        self.runner: asyncio.Task | None = None

    def set(self, status: str, message: str | None = None) -> None:
        self.status, self.message, self.updated = status, message, datetime.now(UTC).isoformat()

    def view(self, *, detailed: bool = True) -> dict[str, Any]:
        view: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "createdAt": self.created,
            "lastUpdatedAt": self.updated,
            "ttl": 3_600_000,
            "pollInterval": self.poll_ms,
        }
        if self.message:
            view["statusMessage"] = self.message
        if detailed and self.status == "input_required" and self.input_requests:
            view["inputRequests"] = self.input_requests
        if detailed and self.modern and self.status == "completed" and self.result is not None:
            view["result"] = self.result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return view


class Tasks(Extension):
    """The Tasks extension, as far as the tests need it: task-augmented `tools/call`, `tasks/get`,
    `tasks/result`, `tasks/cancel`, and `tasks/update` (the answer to an `input_required` task)."""

    identifier = "io.modelcontextprotocol/tasks"

    def __init__(self, log: Log, poll_ms: int) -> None:
        self.log = log
        self.poll_ms = poll_ms
        self.jobs: dict[str, Job] = {}

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self.get),
            MethodBinding("tasks/result", TaskIdParams, self.result),
            MethodBinding("tasks/cancel", TaskIdParams, self.cancel),
            MethodBinding("tasks/update", TaskUpdateParams, self.update),
        ]

    def _job(self, task_id: str) -> Job:
        job = self.jobs.get(task_id)
        if job is None:
            raise MCPError(-32602, f"No task {task_id}")
        return job

    async def intercept_tool_call(self, params: Any, ctx: Any, call_next: Any) -> Any:
        support = TASK_TOOLS.get(params.name)
        modern = ctx.protocol_version != "2025-11-25"
        if modern:  # 2026-07-28: the server decides, for a client that declared the extension
            capabilities = ctx.session.client_capabilities
            declared = capabilities is not None and self.identifier in (capabilities.extensions or {})
            wanted = declared and support is not None
            if support == "required" and not declared:
                raise MCPError(-32003, f"Tool {params.name} requires the tasks extension")
        else:
            wanted = params.task is not None and support is not None
            if support == "required" and not wanted:
                raise MCPError(-32601, f"Tool {params.name} requires task augmentation")
        if not wanted:
            return await call_next(ctx)
        handle = self.start(params.name, params.arguments or {}, modern=modern)
        return {"resultType": "task", **handle} if modern else {"task": handle}

    def start(self, name: str, arguments: dict[str, Any], *, modern: bool) -> dict[str, Any]:
        job = Job(uuid.uuid4().hex, self.poll_ms, modern=modern)
        self.jobs[job.task_id] = job
        self.log.write({"started": name, "task_id": job.task_id, "arguments": arguments})
        job.runner = asyncio.get_running_loop().create_task(self._run(job, name, arguments))
        return job.view(detailed=False)

    async def _run(self, job: Job, name: str, arguments: dict[str, Any]) -> None:
        try:
            if name == "quick":
                text = str(arguments.get("text", ""))
                job.result = CallToolResult(content=[TextContent(text=f"quick: {text}")], structured_content=None)
                job.set("completed")
                return
            seconds = float(arguments.get("seconds", 2))
            half = seconds / 2
            job.set("working", "gathering sources")
            await asyncio.sleep(half)
            answer: dict[str, Any] | None = None
            if arguments.get("ask"):
                job.answer = asyncio.get_running_loop().create_future()
                question = ElicitRequestFormParams(message="Go on with the research?", requested_schema=CONFIRM_SCHEMA)
                job.input_requests = {
                    "confirm": ElicitRequest(params=question).model_dump(by_alias=True, mode="json", exclude_none=True)
                }
                job.set("input_required", "waiting for your answer")
                answer = await job.answer
                job.input_requests = None
                self.log.write({"answered": job.task_id, "answer": answer})
                if answer.get("action") != "accept" or not (answer.get("content") or {}).get("go_on"):
                    job.result = CallToolResult(content=[TextContent(text="stopped as asked")], is_error=False)
                    job.set("completed")
                    return
                job.set("working", "writing the report")
            await asyncio.sleep(half)
            report = {"topic": arguments.get("topic", ""), "answer": answer}
            job.result = CallToolResult(
                content=[TextContent(text=f"report on {report['topic']}")], structured_content=report
            )
            job.set("completed")
            self.log.write({"completed": job.task_id, "at": time.time()})
        except asyncio.CancelledError:
            self.log.write({"cancelled": job.task_id})
            job.set("cancelled")

    async def get(self, ctx: Any, params: TaskIdParams) -> dict[str, Any]:
        self.log.write({"method": "tasks/get", "task_id": params.task_id})
        return {"resultType": "complete", **self._job(params.task_id).view()}

    async def result(self, ctx: Any, params: TaskIdParams) -> dict[str, Any]:
        job = self._job(params.task_id)
        while job.status not in ("completed", "failed", "cancelled"):
            await asyncio.sleep(0.05)
        if job.result is None:
            raise MCPError(-32000, f"Task {job.status}")
        return job.result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def cancel(self, ctx: Any, params: TaskIdParams) -> dict[str, Any]:
        job = self._job(params.task_id)
        self.log.write({"method": "tasks/cancel", "task_id": params.task_id})
        if job.status not in ("completed", "failed", "cancelled") and job.runner is not None:
            job.runner.cancel()
            job.set("cancelled")
        return {"resultType": "complete"}

    async def update(self, ctx: Any, params: TaskUpdateParams) -> dict[str, Any]:
        job = self._job(params.task_id)
        responses = params.input_responses or {}
        if job.status != "input_required" or job.answer is None or "confirm" not in responses:
            raise MCPError(-32602, "This task is not waiting for that input.")
        job.answer.set_result(responses["confirm"])
        job.set("working", "answer received")
        return {"resultType": "complete"}


class TaskServer(MCPServer):
    async def list_tools(self) -> list[Any]:
        tools = await super().list_tools()
        for tool in tools:
            if tool.name in TASK_TOOLS:
                tool.execution = ToolExecution(task_support=TASK_TOOLS[tool.name])  # type: ignore[arg-type]
        return tools


class Preferences(BaseModel):
    name: str
    color: str = "green"
    count: int = 3
    subscribe: bool = True


def build(log: Log, tasks: Tasks, *, legacy: bool) -> MCPServer:
    server = TaskServer("Tasks", extensions=[tasks])

    @server.tool()
    async def picture(size: int = 64) -> list[Any]:
        """A picture of `size` bytes."""
        data = base64.b64encode(PNG + b"\0" * max(size - len(PNG), 0)).decode()
        return [TextContent(text="a picture"), ImageContent(data=data, mime_type="image/png")]

    @server.tool()
    async def sound() -> list[Any]:
        """A second of silence (not valid base64: a hostile expert's)."""
        return [
            AudioContent(data="not base64!", mime_type="audio/wav"),
            AudioContent(data="AAAA", mime_type="audio/wav"),
        ]

    @server.tool()
    async def links() -> list[Any]:
        """Links and an embedded resource."""
        return [
            TextContent(text="see these"),
            ResourceLink(uri="https://example.com/report.pdf", name="report", mime_type="application/pdf"),
            ResourceLink(uri="javascript:alert(1)", name="trap"),
            EmbeddedResource(
                resource=TextResourceContents(uri="file:///notes.txt", mime_type="text/plain", text="hello")
            ),
        ]

    @server.tool()
    async def steps(count: int, ctx: Context, delay_ms: int = 10) -> dict[str, Any]:
        """Reports progress `count` times."""
        for index in range(count):
            await ctx.report_progress(index + 1, count, f"step {index + 1}")
            await asyncio.sleep(delay_ms / 1000)
        return {"steps": count}

    if legacy:

        @server.tool()
        async def preferences(ctx: Context) -> dict[str, Any]:
            """Asks for preferences (a form with defaults) in the middle of the call."""
            answer = await ctx.elicit("Your preferences?", Preferences)
            data = getattr(answer, "data", None)
            return {"action": answer.action, "content": data.model_dump() if data is not None else None}

    else:

        @server.tool()
        async def preferences(ctx: Context) -> dict[str, Any] | InputRequiredResult:
            """Asks for preferences (a form with defaults), with `input_required`."""
            reply = (ctx.input_responses or {}).get("prefs")
            if not isinstance(reply, ElicitResult):
                question = ElicitRequestFormParams(message="Your preferences?", requested_schema=PREFERENCES_SCHEMA)
                return InputRequiredResult(input_requests={"prefs": ElicitRequest(params=question)})
            return {"action": reply.action, "content": reply.content}

    @server.tool()
    async def research(topic: str, seconds: float = 2.0, ask: bool = False) -> dict[str, Any]:
        """Researches a topic for a while (a task)."""
        raise RuntimeError("only as a task")

    @server.tool()
    async def quick(text: str) -> dict[str, Any]:
        """Answers at once (may run as a task)."""
        return {"text": f"quick: {text}"}

    return server


def logging_requests(app: Any, log: Log, tasks: Tasks) -> Any:
    """Log each JSON-RPC request's method, the client's declared capabilities and the task flag.
    A 2025-11-25 task-augmented `tools/call` is answered here: the SDK's server validates a
    2025-11-25 `tools/call` result as a `CallToolResult` only, so its `CreateTaskResult` is sent
    as the JSON-RPC answer directly."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict) and "method" in request:
            params = request.get("params") or {}
            capabilities = params.get("capabilities") or (params.get("_meta") or {}).get(
                "io.modelcontextprotocol/clientCapabilities"
            )
            log.write(
                {
                    "request": request["method"],
                    "capabilities": capabilities,
                    "tool": params.get("name"),
                    "task": params.get("task"),
                    "at": time.time(),
                }
            )
            session = dict(scope.get("headers") or []).get(b"mcp-session-id", b"").decode()
            job = tasks.jobs.get(str(params.get("taskId", "")))
            if request["method"].startswith("tasks/") and job is not None and job.session != session:
                # As the MCP reference server does on 2025-11-25: a task belongs to its session.
                error = {"code": -32602, "message": "Failed to retrieve task: Task not found"}
                answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": error}).encode()
                await send(
                    {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": answer})
                return None
            if request["method"] == "tools/call" and params.get("task") and params.get("name") in TASK_TOOLS:
                handle = tasks.start(params["name"], params.get("arguments") or {}, modern=False)
                tasks.jobs[handle["taskId"]].session = session
                answer = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": {"task": handle}}).encode()
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": answer})
                return None
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--poll-ms", type=int, default=200)
    options = parser.parse_args()
    log = Log(options.log)
    security = TransportSecuritySettings(allowed_hosts=["127.0.0.1:*", "localhost:*"], allowed_origins=[])
    legacy = options.legacy
    tasks = Tasks(log, options.poll_ms)
    app = build(log, tasks, legacy=legacy).streamable_http_app(
        stateless_http=not legacy, json_response=not legacy, transport_security=security, host="127.0.0.1"
    )
    if legacy:
        app = legacy_only(app)
    uvicorn.run(logging_requests(app, log, tasks), host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
