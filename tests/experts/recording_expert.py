"""A test expert outside the project: an MCP server that writes every `Authorization` header it
receives to a file (one line each, "-" for none), and answers `tools/list` with a cache hint.

    python -m tests.experts.recording_expert --port P --log FILE [--ttl-ms N] [--crash-tool] [--legacy-asker]
        [--form-asker] [--notes]

It verifies nothing: the tests read its log to see exactly what the core sent. `--legacy-asker`:
an expert of the older protocol (2025-11-25: it refuses `server/discover`, so clients fall back to
`initialize`, and keeps sessions) whose tool `confirm` asks the user in the middle of the call
(`elicitation/create`), the form that needs the call to stay open. `--form-asker`: a tool `ask_form`
that asks (2026-07-28 `input_required`) with whatever schema it is given, as a hostile expert would.
`--notes`: a read-only tool
`add_note` (the one the fake model asks for) that appends the `_meta` of each call it gets, as a JSON
line, to FILE.meta (what a tracing test checks: the `traceparent` the core sent).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult, ToolAnnotations
from pydantic import BaseModel


class Confirmation(BaseModel):
    sure: bool


def build(
    ttl_ms: int, *, crash_tool: bool = False, asker: bool = False, form_asker: bool = False, notes_log: str = ""
) -> MCPServer:
    server = MCPServer("Recorder", cache_hints={"tools/list": CacheHint(ttl_ms=ttl_ms)})

    @server.tool()
    async def echo(text: str) -> dict[str, Any]:
        """Return the text."""
        return {"text": text}

    @server.tool()
    async def fail(reason: str) -> dict[str, Any]:
        """Always fails with the reason."""
        raise ToolError(reason)

    if notes_log:

        @server.tool(annotations=ToolAnnotations(read_only_hint=True))
        async def add_note(title: str, ctx: Context) -> dict[str, Any]:
            """Records the call's `_meta` and answers as a note."""
            meta = ctx.request_context.meta or {}
            with open(notes_log, "a") as log:
                log.write(json.dumps({"title": title, "meta": dict(meta)}, default=str) + "\n")
            return {"id": 1, "title": title}

    if crash_tool:

        @server.tool()
        async def crash() -> dict[str, Any]:
            """The process dies in the middle of the call (an expert that crashes)."""
            os._exit(3)

    if asker:

        @server.tool()
        async def confirm(what: str, ctx: Context) -> dict[str, Any]:
            """Asks the user to confirm `what`, mid-call, and says what they answered."""
            answer = await ctx.elicit(f"Really {what}?", Confirmation)
            return {"action": answer.action, "sure": getattr(getattr(answer, "data", None), "sure", None)}

    if form_asker:

        @server.tool()
        async def ask_form(schema: str, ctx: Context) -> dict[str, Any] | InputRequiredResult:
            """Asks the user to fill in a form whose schema is `schema` (JSON text), and says the answer."""
            reply = (ctx.input_responses or {}).get("form")
            if not isinstance(reply, ElicitResult):
                question = ElicitRequestFormParams(message="Fill this in.", requested_schema=json.loads(schema))
                return InputRequiredResult(input_requests={"form": ElicitRequest(params=question)})
            return {"action": reply.action, "content": reply.content}

    return server


def legacy_only(app: Any) -> Any:
    """Refuse `server/discover` (an older server): the client falls back to `initialize`."""

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if b"server/discover" in body:
            request = json.loads(body)
            error = {
                "jsonrpc": "2.0",
                "id": request.get("id"),
                "error": {"code": -32601, "message": "Method not found"},
            }
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": json.dumps(error).encode()})
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


def recording(app: Any, log_path: str) -> Any:
    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            value = headers.get(b"authorization", b"-").decode()
            with open(log_path, "a") as log:
                log.write(value + "\n")
            if b"traceparent" in headers:  # the W3C header a tracing core sends (next to `_meta`)
                with open(f"{log_path}.traceparent", "a") as log:
                    log.write(headers[b"traceparent"].decode() + "\n")
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ttl-ms", type=int, default=0)
    parser.add_argument("--crash-tool", action="store_true")
    parser.add_argument("--legacy-asker", action="store_true")
    parser.add_argument("--form-asker", action="store_true")
    parser.add_argument("--notes", action="store_true")
    options = parser.parse_args()
    security = TransportSecuritySettings(allowed_hosts=["127.0.0.1:*", "localhost:*"], allowed_origins=[])
    asker = options.legacy_asker
    notes_log = f"{options.log}.meta" if options.notes else ""
    app = build(
        options.ttl_ms, crash_tool=options.crash_tool, asker=asker, form_asker=options.form_asker, notes_log=notes_log
    ).streamable_http_app(
        stateless_http=not asker, json_response=not asker, transport_security=security, host="127.0.0.1"
    )
    if asker:
        app = legacy_only(app)
    uvicorn.run(recording(app, options.log), host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
