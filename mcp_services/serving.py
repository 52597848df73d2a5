"""What every MCP server of the project shares (memory, cognition, the notes expert): service-token auth, Host/Origin checks, DB access from async
tools, and running the ASGI app under uvicorn with clean shutdown."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import uvicorn
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from mcp import MCPError
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import INVALID_PARAMS, CallToolResult, InputRequiredResult, TextContent
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from common import tracing
from common.errors import CortexError, ErrorCode
from common.web.asgi import ObservedApp
from mcp_services.basics import cognition_token, is_loopback

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
TRANSPORTS = ("streamable-http", "sse", "stdio")


def add_service_arguments(parser: Any, *, port: int) -> None:
    """The arguments of `run_memory_service` and `run_cognition_service`."""
    parser.add_argument("--host", default="127.0.0.1", help="Bind address (loopback unless a token is set).")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--transport", choices=TRANSPORTS, default="streamable-http")


READ_SCOPE = "memory:read"
WRITE_SCOPE = "memory:write"


class ServiceTokenVerifier(TokenVerifier):
    """Accepts exactly the configured tokens (constant-time compare); user JWTs never come here.

    The service token may do everything; a read-only token (cognition's) only `READ_SCOPE`.
    """

    def __init__(self, token: str, *, read_only: str | None = None) -> None:
        self._tokens = [(token.encode(), "cortex-service", [READ_SCOPE, WRITE_SCOPE])]
        if read_only and read_only != token:
            self._tokens.append((read_only.encode(), "cortex-cognition", [READ_SCOPE]))

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = token.encode()
        for expected, client_id, scopes in self._tokens:
            if hmac.compare_digest(presented, expected):
                return AccessToken(token=client_id, client_id=client_id, scopes=list(scopes))
        return None


def may_write() -> bool:
    """Inside a tool: whether the caller's credential may change memory (no auth: in-process)."""
    token = get_access_token()
    return token is None or WRITE_SCOPE in token.scopes


def refusal(error: CortexError | ErrorCode, message: str = "") -> MCPError:
    """A refused call as a JSON-RPC "invalid params" error whose `data` is the envelope's error
    object: the client reads the code from there (`CortexError.from_mcp_data`), never from text."""
    if not isinstance(error, CortexError):
        error = CortexError(error, message)
    return MCPError(code=INVALID_PARAMS, message=error.message, data=error.mcp_data())


def invalid_arguments(exc: ValidationError, *, names: dict[int, str] | None = None) -> CortexError:
    """Arguments that fail their declared types, as one `invalid_input` naming each field (`names`:
    the argument names of a validated tuple's positions)."""
    problems: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        if names and loc and isinstance(loc[0], int):
            loc[0] = names.get(loc[0], loc[0])
        name = ".".join(str(part) for part in loc) or "arguments"
        problems.setdefault(name, []).append(error["msg"])
    message = "; ".join(f"{name}: {', '.join(messages)}" for name, messages in problems.items())
    return CortexError(ErrorCode.INVALID_INPUT, message + ".", fields=problems)


def _refused(error: CortexError) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=str(error))], structured_content=error.body(), is_error=True
    )


class CortexMCPServer(MCPServer):
    """An MCP server whose refusals carry the error envelope.

    A tool's `CortexError`, and arguments that fail the tool's typed signature (the SDK validates
    them against the published `inputSchema`), come back as an error result (`is_error`, so a model
    can read and correct it) whose structured content is the envelope: callers read the code, not
    the text. Anything else stays the SDK's (a crash is logged and answered without its details).
    """

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            meta = context.request_context.meta if context is not None else None
            parent = str((meta or {}).get("traceparent") or "")[:64]
            attributes = {"mcp.method.name": "tools/call", "gen_ai.tool.name": name}
            with tracing.span(f"tools/call {name}", parent=parent, kind=SpanKind.SERVER, attributes=attributes):
                return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, CortexError):
                return _refused(cause)
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                return _refused(invalid_arguments(cause))
            raise


def service_token(*, host: str, token: str | None = None, name: str = "CORTEX_SERVICE_TOKEN") -> str | None:
    """The token this service requires. Without one it runs only in debug mode on loopback: any
    local process (or a browser tricked into it) could otherwise read every user's memory."""
    token = settings.CORTEX["SERVICE_TOKEN"] if token is None else token
    if not token and not is_loopback(host):
        raise ImproperlyConfigured(
            f"Refusing to listen on {host} without {name}: anyone who can reach the port could "
            "read and write every user's memory. Set the token, or bind to 127.0.0.1."
        )
    if not token and not settings.DEBUG:
        raise ImproperlyConfigured(
            f"Refusing to run without {name} with DEBUG off (also on loopback): set the token, or DEBUG=1."
        )
    if token and len(token) < 16:
        raise ImproperlyConfigured(f"{name} must be at least 16 characters.")
    return token


def auth_options(*, host: str, port: int, cognition: bool = False) -> dict[str, Any]:
    """MCPServer keyword arguments that require the service's token (none only in debug on loopback).

    Memory takes the service token (read and write) and cognition's (read only); cognition takes
    its own token, so its process never holds the credential that may write or delete memory.
    """
    if cognition:
        token = service_token(
            host=host, token=cognition_token(), name="CORTEX_COGNITION_TOKEN (or CORTEX_SERVICE_TOKEN)"
        )
        read_only = None
    else:
        token = service_token(host=host)
        read_only = settings.CORTEX["COGNITION_TOKEN"]
    if not token:
        logger.warning("No service token: serving on %s:%s without authentication (debug mode)", host, port)
        return {}
    return {
        "token_verifier": ServiceTokenVerifier(token, read_only=read_only),
        "auth": AuthSettings(issuer_url=f"http://{host}:{port}", resource_server_url=None),  # type: ignore[arg-type]
    }


def transport_security(*, host: str) -> TransportSecuritySettings:
    """DNS-rebinding protection: only loopback names, the bound address and configured names.

    No browser origin is allowed unless configured: the callers are servers, which send no Origin.
    """
    hosts = {*LOOPBACK_NAMES, *settings.CORTEX["SERVICE_ALLOWED_HOSTS"]}
    if host not in ("0.0.0.0", "::"):
        hosts.add(f"[{host}]" if ":" in host else host)
    allowed_hosts = sorted({pattern for name in hosts for pattern in (name, f"{name}:*")})
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=allowed_hosts,
        allowed_origins=list(settings.CORTEX["SERVICE_ALLOWED_ORIGINS"]),
    )


def build_app(server: MCPServer, *, transport: str, host: str) -> ObservedApp:
    """The service's ASGI app, logging each request with the caller's `X-Request-ID`."""
    security = transport_security(host=host)
    name = server.name.removeprefix("Cortex").lower()
    if transport == "sse":
        return ObservedApp(server.sse_app(transport_security=security, host=host), service=name)  # type: ignore[arg-type]
    # Stateless JSON: the 2026-07-28 protocol is one POST per request, and nothing needs a session.
    app = server.streamable_http_app(stateless_http=True, json_response=True, transport_security=security, host=host)
    return ObservedApp(app, service=name, routes=["/mcp"])  # type: ignore[arg-type]  # Starlette's scope types


class _UvicornServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the process
    before `on_shutdown` runs; forgetting the signal lets us clean up and exit 0."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


async def serve(
    server: MCPServer,
    *,
    transport: str,
    host: str,
    port: int,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn traps both and drains in-flight requests)."""
    try:
        if transport == "stdio":
            # stdout is the protocol channel: every log line goes to stderr (Django's LOGGING).
            await server.run_stdio_async()
            return
        config = uvicorn.Config(
            build_app(server, transport=transport, host=host),
            host=host,
            port=port,
            log_config=None,  # Django's LOGGING: stderr
            access_log=False,
            lifespan="on",
            ws="none",  # MCP over HTTP: no WebSocket (uvicorn's default imports a WebSocket stack to start)
            timeout_graceful_shutdown=5,
        )
        await _UvicornServer(config).serve()
    finally:
        if on_shutdown is not None:
            await on_shutdown()


def run(server: MCPServer, **options: Any) -> None:
    asyncio.run(serve(server, **options))
