"""A test expert outside the project: an MCP server that writes every `Authorization` header it
receives to a file (one line each, "-" for none), and answers `tools/list` with a cache hint.

    python -m tests.experts.recording_expert --port P --log FILE [--ttl-ms N] [--crash-tool]

It verifies nothing: the tests read its log to see exactly what the core sent.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings


def build(ttl_ms: int, *, crash_tool: bool = False) -> MCPServer:
    server = MCPServer("Recorder", cache_hints={"tools/list": CacheHint(ttl_ms=ttl_ms)})

    @server.tool()
    async def echo(text: str) -> dict[str, Any]:
        """Return the text."""
        return {"text": text}

    @server.tool()
    async def fail(reason: str) -> dict[str, Any]:
        """Always fails with the reason."""
        raise ToolError(reason)

    if crash_tool:

        @server.tool()
        async def crash() -> dict[str, Any]:
            """The process dies in the middle of the call (an expert that crashes)."""
            os._exit(3)

    return server


def recording(app: Any, log_path: str) -> Any:
    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            value = headers.get(b"authorization", b"-").decode()
            with open(log_path, "a") as log:
                log.write(value + "\n")
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ttl-ms", type=int, default=0)
    parser.add_argument("--crash-tool", action="store_true")
    options = parser.parse_args()
    security = TransportSecuritySettings(allowed_hosts=["127.0.0.1:*", "localhost:*"], allowed_origins=[])
    app = build(options.ttl_ms, crash_tool=options.crash_tool).streamable_http_app(
        stateless_http=True, json_response=True, transport_security=security, host="127.0.0.1"
    )
    uvicorn.run(recording(app, options.log), host="127.0.0.1", port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
