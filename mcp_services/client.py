"""MCP clients for the memory and cognition services: one long-lived client per service per process.

Opening a client costs about 34 ms (PLATFORM-NOTES: 25 calls/s when opening one per call, about
420/s over a long-lived one), so each process keeps one per service and reuses it:

- `ServiceClient` is the async client for one event loop. It connects lazily, sends the service
  token (never a user's JWT), bounds every call with a timeout and, after a transport failure
  (the service restarted, a timeout), drops the connection so the next call reconnects.
- Sync code (DRF views, the outbox drainer, management commands) goes through `call()`, which runs
  a coroutine on the process's service loop: one daemon thread whose event loop owns the
  module-level clients (`memory()`, `cognition()`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
from django.conf import settings
from opentelemetry.trace import SpanKind

from common import metrics, tracing
from common.errors import CortexError, ErrorCode
from common.logs import REQUEST_ID, REQUEST_ID_HEADER
from mcp_services.basics import cognition_token

if TYPE_CHECKING:
    from mcp import Client, MCPError
    from mcp.server.mcpserver import MCPServer

# The MCP SDK is imported where a call is first made, not with this module: every Django process
# imports this one at start-up (the apps' receivers), and most `manage.py` commands never call a
# service (mcp_services.basics says why). The core imports the SDK at start-up (operations.health).

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServiceUnavailable(CortexError):
    """The service could not be reached or did not answer in time (worth retrying)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message)


class ServiceToolError(CortexError):
    """The service answered, with a refusal (`permanent`: the same call will be refused again).

    The code is the one the service put in the JSON-RPC error's `data` (`serving.refusal`);
    a tool that crashed (`is_error` with only text) is a `tool_error`, which may be transient.
    """

    @classmethod
    def from_mcp_error(cls, exc: MCPError) -> ServiceToolError:
        sent = CortexError.from_mcp_data(exc.data, exc.message)
        if sent is None:
            return cls(ErrorCode.TOOL_ERROR, str(exc.message))
        return cls(sent.code, sent.message, fields=sent.fields)


async def _stamp_request_id(request: httpx2.Request) -> None:
    """Every call carries the id of the request that caused it (the transport sends each message in
    its sender's context), so the services' log lines join the core's."""
    request_id = REQUEST_ID.get()
    if request_id:
        request.headers[REQUEST_ID_HEADER] = request_id


class UnsendableArguments(CortexError):
    """The arguments cannot be encoded as a JSON-RPC request (e.g. a lone surrogate in a string):
    no call is made, the connection stays up, and the same arguments will never be sendable."""

    permanent = True

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_INPUT, message)


def encoding_error(arguments: Any) -> str | None:
    """Why `arguments` cannot go over the wire as UTF-8 JSON, or None if they can."""
    try:
        json.dumps(arguments, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        return f"{type(exc).__name__}: {exc}"
    return None


def unwrap(exc: BaseException) -> BaseException:
    """The one exception inside nested single-exception groups (anyio wraps what a task raised)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ServiceClient:
    """A long-lived MCP client to one service, used from one event loop."""

    def __init__(self, *, name: str, target: str | MCPServer, token: str | None, timeout: float) -> None:
        self.name = name
        self.target = target
        self._token = token
        self.timeout = timeout
        self._client: Client | None = None
        self._stop: asyncio.Event | None = None
        self._owner: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        target = self.target if isinstance(self.target, str) else "in-process"
        return f"<ServiceClient {self.name} {target}>"

    # --- connection -------------------------------------------------------------------------

    async def _hold(self, ready: asyncio.Future[Client], stop: asyncio.Event) -> None:
        """Owns the client: entered and exited in this one task, as anyio's scopes require."""
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        try:
            async with contextlib.AsyncExitStack() as stack:
                if isinstance(self.target, str):
                    headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
                    http = await stack.enter_async_context(
                        httpx2.AsyncClient(
                            headers=headers,
                            timeout=httpx2.Timeout(self.timeout),
                            event_hooks={"request": [_stamp_request_id, tracing.stamp_request]},
                        )
                    )
                    transport = streamable_http_client(self.target, http_client=http, terminate_on_close=False)
                    client = Client(transport, read_timeout_seconds=self.timeout, cache=None)
                else:
                    client = Client(self.target, read_timeout_seconds=self.timeout, cache=None)
                await stack.enter_async_context(client)
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting caller, or logged
            if not ready.done():
                if isinstance(exc, Exception):
                    ready.set_exception(exc)
                else:  # cancelled by `_connected` after its timeout: nobody waits any more
                    ready.cancel()
            elif not isinstance(exc, asyncio.CancelledError):
                logger.info("%s: connection closed: %r", self.name, unwrap(exc))
        finally:
            if self._stop is stop:
                self._client = None
                self._stop = None

    async def _connected(self) -> Client:
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is not None:
                return self._client
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[Client] = loop.create_future()
            stop = asyncio.Event()
            self._stop = stop
            self._owner = loop.create_task(self._hold(ready, stop), name=f"mcp-client-{self.name}")
            try:
                async with asyncio.timeout(self.timeout):
                    self._client = await asyncio.shield(ready)
            except BaseException as exc:  # noqa: BLE001 - any failure to connect, reported as unavailable
                self._stop = None
                self._owner.cancel()
                if ready.done() and not ready.cancelled():
                    ready.exception()  # retrieved: it is reported below
                raise ServiceUnavailable(f"{self.name} service unreachable: {describe(exc)}") from None
            logger.debug("%s: connected to %s", self.name, self.target)
            return self._client

    def _drop(self, client: Client | None = None) -> None:
        """Forget the connection (`client`: only if it is still the current one, so a late failure
        on an old connection cannot drop a fresh one); the next call reconnects."""
        if client is not None and client is not self._client:
            return
        if self._stop is not None:
            self._stop.set()
        self._client = None
        self._stop = None

    async def aclose(self) -> None:
        owner = self._owner
        self._drop()
        if owner is not None and not owner.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(owner, timeout=5)

    # --- calls ------------------------------------------------------------------------------

    async def _request(self, operation: str, make: Callable[[Client], Awaitable[T]]) -> T:
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        started = time.perf_counter()
        failure: str | None = None
        try:
            client = await self._connected()
            try:
                async with asyncio.timeout(self.timeout):
                    return await make(client)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - sorted into answer or outage
                inner = unwrap(exc)
                # A dead transport fails pending requests with CONNECTION_CLOSED: that is not an answer.
                if isinstance(inner, MCPError) and inner.code != CONNECTION_CLOSED:
                    raise inner from None  # an answer: the caller counts the refusal by its code
                self._drop(client)
                raise ServiceUnavailable(f"{self.name} service failed: {describe(inner)}") from None
        except ServiceUnavailable:
            failure = ErrorCode.SERVICE_UNAVAILABLE
            raise
        finally:
            metrics.MCP_CALLS.labels(self.name, operation).observe(time.perf_counter() - started)
            if failure is not None:
                metrics.MCP_ERRORS.labels(self.name, operation, failure).inc()

    def _refused(self, operation: str, error: ServiceToolError) -> ServiceToolError:
        metrics.MCP_ERRORS.labels(self.name, operation, error.code).inc()
        return error

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The tool's structured result; `ServiceToolError` if it refused, `ServiceUnavailable` if unreachable,
        `UnsendableArguments` if the arguments cannot be encoded (checked before anything is sent: the
        transport would fail mid-write and take the shared connection down with it)."""
        from mcp import MCPError

        problem = encoding_error(arguments)
        if problem is not None:
            raise UnsendableArguments(f"{tool}: arguments cannot be sent ({problem})")
        try:
            with tracing.span(
                f"tools/call {tool}",
                kind=SpanKind.CLIENT,
                attributes={"mcp.method.name": "tools/call", "gen_ai.tool.name": tool, "cortex.service": self.name},
            ):
                meta = tracing.meta()  # `traceparent` in `_meta`: the service's span continues this trace
                result = await self._request(tool, lambda client: client.call_tool(tool, arguments, meta=meta))  # type: ignore[arg-type]
        except MCPError as exc:
            raise self._refused(tool, ServiceToolError.from_mcp_error(exc)) from None
        if result.is_error:
            refused = CortexError.from_mcp_data((result.structured_content or {}).get("error"), f"{tool} refused")
            if refused is not None:
                raise self._refused(tool, ServiceToolError(refused.code, refused.message, fields=refused.fields))
            text = " ".join(getattr(part, "text", "") for part in result.content)
            raise self._refused(tool, ServiceToolError(ErrorCode.TOOL_ERROR, text or f"{tool} failed"))
        if result.structured_content is None:
            raise self._refused(tool, ServiceToolError(ErrorCode.TOOL_ERROR, f"{tool} returned no structured content"))
        return result.structured_content

    async def read_json(self, uri: str) -> Any:
        from mcp import MCPError
        from mcp_types import TextResourceContents

        try:
            result = await self._request("read_resource", lambda client: client.read_resource(uri))
        except MCPError as exc:
            raise self._refused("read_resource", ServiceToolError.from_mcp_error(exc)) from None
        if not result.contents:
            return None
        content = result.contents[0]
        return json.loads(content.text if isinstance(content, TextResourceContents) else content.blob)

    async def check(self) -> None:
        """Readiness: one authenticated round trip (`tools/list`; 2026-07-28 has no ping)."""
        from mcp import MCPError

        try:
            await self._request("list_tools", lambda client: client.list_tools())
        except MCPError as exc:
            raise ServiceUnavailable(f"{self.name} service refused the check: {exc}") from None


def describe(exc: BaseException) -> str:
    """A transport failure in a few words, for a log line or an error message."""
    exc = unwrap(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- the process's service loop (for sync callers) ---------------------------------------------


class _ServiceLoop:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.clients: dict[tuple[str, str, str | None, float], ServiceClient] = {}

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="cortex-mcp-clients", daemon=True)
                thread.start()
                self._loop = loop
            return self._loop

    def client(self, name: str, url: str, token: str | None) -> ServiceClient:
        """The process's client for `url` (settings may change in tests: keyed by them)."""
        timeout = float(settings.CORTEX["SERVICE_TIMEOUT_SECONDS"])
        key = (name, url, token, timeout)
        with self._lock:
            client = self.clients.get(key)
            if client is None:
                client = self.clients[key] = ServiceClient(name=name, target=url, token=token, timeout=timeout)
            return client

    def call(self, factory: Callable[[], Awaitable[T]], *, timeout: float) -> T:
        import mcp  # noqa: F401 - the first call imports the SDK here, before its time limit starts

        request_id = REQUEST_ID.get()

        async def in_callers_request() -> T:
            # The loop thread has its own context: carry the caller's request id over.
            REQUEST_ID.set(request_id)
            return await factory()

        future = asyncio.run_coroutine_threadsafe(in_callers_request(), self.loop())
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise ServiceUnavailable("timed out") from None

    def close(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        clients = list(self.clients.values())
        self.clients.clear()

        async def close_all() -> None:
            await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=5)


_service_loop = _ServiceLoop()
atexit.register(_service_loop.close)


def memory() -> ServiceClient:
    return _service_loop.client("memory", settings.CORTEX["MEMORY_URL"], settings.CORTEX["SERVICE_TOKEN"])


def cognition() -> ServiceClient:
    return _service_loop.client("cognition", settings.CORTEX["COGNITION_URL"], cognition_token())


def call(factory: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
    """Run `factory()` on the service loop from sync code and wait for it (bounded)."""
    limit = timeout if timeout is not None else settings.CORTEX["SERVICE_TIMEOUT_SECONDS"] * 2 + 1
    return _service_loop.call(factory, timeout=limit)
