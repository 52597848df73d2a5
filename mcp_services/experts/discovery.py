"""Talking to an expert over MCP (streamable HTTP): one connection per call, and tool discovery.

Each call gets its own token (`tokens.expert_token_mint`), so each opens its own MCP `Client` with
that token in its `Authorization` header, over an `httpx2.AsyncClient` shared per event loop (its
construction is the expensive part, about 34 ms). Before connecting, the host is resolved and
checked (`hosts.check_resolved`). Redirects are not followed by our client; the MCP SDK itself
follows only same-origin 307/308 redirects of a request, which stay on the allowed host.

An expert is outside the project and may be hostile. What it answers is read up to one budget per
operation (`hosts.ResponseBudget`), its error messages are cut (`said`) before they go anywhere,
and discoveries, which the core's requests wait for, run at most EXPERT_DISCOVERY_CONCURRENCY at
once per event loop, each within EXPERT_DISCOVERY_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx2
from django.conf import settings
from django.utils import timezone
from mcp import Client, ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    INVALID_REQUEST,
    ClientCapabilities,
    ClientTasksCapability,
    DiscoverResult,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    InitializeResult,
    TasksCancelCapability,
    ToolListChangedNotification,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from common import tracing
from common.errors import CortexError, ErrorCode
from mcp_services.client import describe, unwrap
from mcp_services.experts import hosts, tokens
from mcp_services.experts import tasks as tasks_extension
from mcp_services.experts.credentials import ExpertNeedsConnection, broker
from workspaces import services

_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncHTTPTransport] = (
    weakref.WeakKeyDictionary()
)


def _loop_transport() -> httpx2.AsyncHTTPTransport:
    loop = asyncio.get_running_loop()
    transport = _transports.get(loop)
    if transport is None:
        transport = _transports[loop] = hosts.checked_transport()
    return transport


def prepare() -> None:
    """At a worker's start, on its loop: what the first expert call would otherwise pay for inside a
    turn (about 60 ms of CPU, the first `tool.call` after an answer in `bench.turns`): the loop's
    transport (its TLS context, built even for http://) and jsonschema, which the MCP SDK imports
    only when it first validates a tool's structured result."""
    import jsonschema  # noqa: F401

    _loop_transport()


def _http(
    headers: dict[str, str], timeout: float, budget: hosts.ResponseBudget, on_response: Any = None
) -> httpx2.AsyncClient:
    """A client with this call's headers and budget over the loop's shared transport (its connection
    pool and TLS context, the costly part). Not closed after the call: nothing of it is its own."""
    return httpx2.AsyncClient(
        transport=hosts.BoundedTransport(_loop_transport(), budget),
        headers={**headers, "Accept-Encoding": "identity"},
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        event_hooks={"request": [tracing.stamp_request], "response": [on_response] if on_response is not None else []},
    )


# The expert's `server/discover` answer, reused for as long as its cache hint allows: a call is then
# one request instead of two. Forgotten when a connection fails (the expert may have changed).
_discovered: dict[str, tuple[str, DiscoverResult, float]] = {}


# The revision each expert answered with ("legacy": 2025-11-25 and older, with `initialize` and
# sessions; else the modern version, stateless with `server/discover`), kept from the first
# connection (discovery): later calls go straight to it instead of probing again. A connection that
# fails forgets it, and the next one probes again (an expert upgraded or downgraded in between).
_revisions: dict[str, str] = {}


def _prior(url: str) -> dict[str, Any]:
    known = _discovered.get(url)
    if known is None or known[2] <= time.monotonic():
        _discovered.pop(url, None)
        return {"mode": "legacy"} if _revisions.get(url) == "legacy" else {}
    return {"mode": known[0], "prior_discover": known[1]}


def _remember(url: str, client: Client) -> None:
    result = client.session.discover_result
    _revisions[url] = "legacy" if result is None else client.protocol_version
    if result is not None and result.ttl_ms > 0 and url not in _discovered:
        ttl = min(result.ttl_ms / 1000, settings.EXPERT_TOOLS_MAX_TTL_SECONDS)
        _discovered[url] = (client.protocol_version, result, time.monotonic() + ttl)


def forget(url: str) -> None:
    """The expert's revision is no longer trusted (a call says it changed): the next connection probes."""
    _discovered.pop(url, None)
    _revisions.pop(url, None)


def revision(url: str) -> str | None:
    """The revision the expert answered with last ("legacy" or a modern version), if known."""
    return _revisions.get(url)


async def _cannot_answer(context: Any, params: ElicitRequestParams) -> ElicitResult | ErrorData:
    """Where nobody can answer (discovery): the expert is told so. Passing a callback at all is what
    declares the elicitation capability (form and URL) to the expert, as every call does."""
    return ErrorData(code=INVALID_REQUEST, message="No one can answer a question during this request.")


# An expert's error message goes into every participant's log, to the model and into `last_error`:
# a sentence or two is what a person reads, and an expert could otherwise send a megabyte of it.
MESSAGE_MAX_CHARS = 1000


def said(text: str) -> str:
    """An expert's own words (an error message, a failure's description), cut to MESSAGE_MAX_CHARS."""
    if len(text) <= MESSAGE_MAX_CHARS:
        return text
    return f"{text[:MESSAGE_MAX_CHARS]}... (cut: {len(text):,} characters)"


class _Session(ClientSession):
    """Declares tasks to 2025-11-25 experts too (`capabilities.tasks`, at `initialize`): the SDK
    declares what it has callbacks for, and tasks are followed by the core's turns instead."""

    def _build_capabilities(self, version: str) -> ClientCapabilities:
        capabilities = super()._build_capabilities(version)
        if version not in MODERN_PROTOCOL_VERSIONS:
            capabilities.tasks = ClientTasksCapability(cancel=TasksCancelCapability())
        return capabilities


class ExpertClient(Client):
    """The SDK's client with the core's session (`_Session`), and a way back into a 2025-11-25
    session (`rejoin`: its `initialize` result, adopted without a second handshake)."""

    rejoin: InitializeResult | None = None

    async def _build_session(self, exit_stack: contextlib.AsyncExitStack) -> ClientSession:
        session = await super()._build_session(exit_stack)
        session.__class__ = _Session  # the same object, with the capabilities above (no state of its own)
        return session

    async def __aenter__(self) -> ExpertClient:
        if self.rejoin is None:
            await super().__aenter__()
            return self
        # As `Client.__aenter__` does, with `adopt` for the handshake the session already had.
        self._entered = True
        async with contextlib.AsyncExitStack() as exit_stack:
            session = await self._build_session(exit_stack)
            session = await exit_stack.enter_async_context(session)
            session.adopt(self.rejoin)
            self._session = session
            self._exit_stack = exit_stack.pop_all()
        return self


@dataclass
class Connection:
    client: Client
    tools_changed: bool = False  # the expert sent notifications/tools/list_changed during the call
    session_id: str | None = None  # 2025-11-25: the expert's `Mcp-Session-Id`

    def rejoin(self) -> dict[str, Any] | None:
        """What `connect(rejoin=...)` needs to come back to this 2025-11-25 session (its tasks may
        belong to it), or None on 2026-07-28 (stateless: nothing to come back to)."""
        result = self.client.session.initialize_result
        if result is None or not self.session_id:
            return None
        return {"session_id": self.session_id, "initialize": result.model_dump(by_alias=True, mode="json")}


@dataclass(frozen=True)
class Caller:
    """On whose behalf a connection is made (the token's `sub` and `workspace_id`); for an `oauth`
    expert, which one (its id and name: whose account's token is used)."""

    user_id: uuid.UUID
    workspace_id: uuid.UUID
    expert_id: uuid.UUID | None = None
    expert: str = ""


class OAuthBearer(httpx2.Auth):
    """`auth: "oauth"`: the requester's own access token (`credentials.broker`), and on a 401 one
    refresh and one retry. Never the Cortex token nor an ID token. `needs` is set when the account
    must be connected again (refresh refused, still refused, or `insufficient_scope`): `connect`
    raises it once the SDK has given up."""

    def __init__(self, caller: Caller, token: str) -> None:
        self.caller, self.token = caller, token
        self.retried = False
        self.needs: ExpertNeedsConnection | None = None

    def _needs(self, reason: str, scopes: list[str]) -> ExpertNeedsConnection:
        assert self.caller.expert_id is not None
        return ExpertNeedsConnection(self.caller.expert_id, self.caller.expert, scopes, reason)

    async def async_auth_flow(self, request: httpx2.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        response = yield request
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 403 and "insufficient_scope" in challenge:
            await response.aread()
            match = re.search(r'scope="([^"]*)"', challenge)
            asked = match.group(1).split() if match else []
            assert self.caller.expert_id is not None
            wanted = await broker().step_up(self.caller.expert_id, self.caller.user_id, asked)
            self.needs = self._needs("insufficient_scope", wanted)
            return
        if response.status_code != 401:
            return
        await response.aread()
        if self.retried:
            if self.needs is None:
                self.needs = self._needs("needs_reconsent", [])
            return
        self.retried = True
        assert self.caller.expert_id is not None
        try:
            self.token = await broker().bearer(self.caller.expert_id, self.caller.user_id, stale=self.token)
        except ExpertNeedsConnection as needs:
            self.needs = needs
            return
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def _too_much(budget: hosts.ResponseBudget, exc: BaseException) -> CortexError | None:
    """payload_too_large if the operation ran out of budget, whatever the failure looks like by
    now (a read error, "SSE stream ended without a response", a cancellation out of the SDK's
    task group); None if it did not, or if our own caller cancelled us."""
    if budget.exceeded is None:
        return None
    task = asyncio.current_task()
    if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
        return None
    return CortexError(ErrorCode.PAYLOAD_TOO_LARGE, f"The expert answered too much: {budget.exceeded}.")


@contextlib.asynccontextmanager
async def connect(
    *,
    url: str,
    auth: str,
    caller: Caller,
    tool: str,
    timeout: float,
    elicit: Any = None,
    tasks: bool = True,
    rejoin: dict[str, Any] | None = None,
) -> AsyncIterator[Connection]:
    """An MCP client to the expert at `url` for one operation (`tool`, or `tokens.DISCOVERY_TOOL`);
    `elicit`: the `elicitation_callback` that answers an expert's mid-call question; `tasks`: the
    caller follows tasks, so the Tasks extension is declared (2026-07-28: the expert may answer
    `tools/call` with a task only then). Elicitation, form and URL, is always declared. `rejoin`
    (`Connection.rejoin()`): go back into that 2025-11-25 session instead of opening one.

    Raises `CortexError`: permission_denied for a refused host, service_unavailable when the
    expert cannot be reached or no token can be minted, payload_too_large when the expert sent
    more than `hosts.response_limit()` bytes (whatever else the SDK made of the cut-off answer).
    """
    await hosts.check_resolved(url)
    headers: dict[str, str] = {}
    bearer: OAuthBearer | None = None
    if auth == "core_token":
        token = tokens.expert_token_mint(
            audience=url, user_id=caller.user_id, workspace_id=caller.workspace_id, tool=tool
        )
        headers["Authorization"] = f"Bearer {token}"
    elif auth == "oauth":
        if caller.expert_id is None:
            raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, "An oauth expert is called for one registered expert.")
        bearer = OAuthBearer(caller, await broker().bearer(caller.expert_id, caller.user_id))
    connection: Connection | None = None

    async def on_message(message: Any) -> None:
        if isinstance(message, ToolListChangedNotification) and connection is not None:
            connection.tools_changed = True

    session_seen: list[str] = []

    async def on_response(response: httpx2.Response) -> None:
        if value := response.headers.get("mcp-session-id"):
            session_seen.append(value[:200])

    adopted: InitializeResult | None = None
    if rejoin is not None:
        adopted = InitializeResult.model_validate(rejoin["initialize"])
        headers["mcp-session-id"] = str(rejoin["session_id"])
        headers["mcp-protocol-version"] = adopted.protocol_version
    budget = hosts.ResponseBudget(hosts.response_limit())
    http = _http(headers, timeout, budget, on_response)
    if bearer is not None:
        http.auth = bearer
    for attempt in range(2):
        prior = _prior(url)
        transport = streamable_http_client(url, http_client=http, terminate_on_close=False)
        client = ExpertClient(
            transport,
            read_timeout_seconds=timeout,
            cache=None,
            message_handler=on_message,
            elicitation_callback=elicit or _cannot_answer,
            extensions=[tasks_extension.Tasks()] if tasks else None,
            **({} if adopted is not None else prior),
        )
        client.rejoin = adopted
        connection = Connection(client=client)
        try:
            async with asyncio.timeout(timeout):
                await client.__aenter__()
            break
        except BaseException as exc:  # noqa: BLE001 - any failure to connect is the expert being unreachable
            forget(url)
            if bearer is not None and bearer.needs is not None:
                raise bearer.needs from None
            too_much = _too_much(budget, exc)
            if too_much is not None:
                raise too_much from None
            if isinstance(exc, asyncio.CancelledError):
                raise
            if attempt == 0 and prior and isinstance(unwrap(exc), MCPError):
                continue  # it refused the revision it spoke before: probe again, once
            raise CortexError(
                ErrorCode.SERVICE_UNAVAILABLE, f"The expert is unreachable: {said(describe(exc))}"
            ) from None
    if adopted is None:
        _remember(url, client)
    assert connection is not None  # the loop above connected, or raised
    connection.session_id = session_seen[-1] if session_seen else (rejoin or {}).get("session_id")
    failed: BaseException | None = None
    try:
        yield connection
    except BaseException as exc:  # noqa: BLE001 - raised again below, once the client is closed
        forget(url)
        failed = exc
    finally:
        with contextlib.suppress(BaseException):
            await client.__aexit__(None, None, None)
    if failed is not None:
        if bearer is not None and bearer.needs is not None:
            raise bearer.needs from None
        # Judged after the client's task group has exited: until then its own cancellation of
        # this task (the transport failed) is indistinguishable from our caller's.
        too_much = _too_much(budget, failed)
        if too_much is not None:
            raise too_much from None
        raise failed


@dataclass(frozen=True)
class Discovery:
    """What `tools/list` found: the tools (or the reason it failed) and until when to trust them."""

    status: str  # "ok" | "unreachable"
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    discovered_at: datetime = field(default_factory=timezone.now)
    expires_at: datetime | None = None

    def outcome(self) -> services.ExpertDiscovery:
        """What the `workspaces` services store."""
        return services.ExpertDiscovery(
            status=self.status,
            tools=self.tools,
            last_error=self.error,
            discovered_at=self.discovered_at,
            tools_expire_at=self.expires_at,
        )


def _expiry(ttl_ms: int | None, now: datetime) -> datetime:
    """The server's `ttlMs` cache hint, kept within EXPERT_TOOLS_MIN/MAX_TTL_SECONDS (a hint of 0,
    "immediately stale", still waits the minimum: every model turn would otherwise re-list)."""
    seconds = (ttl_ms or 0) / 1000
    seconds = max(settings.EXPERT_TOOLS_MIN_TTL_SECONDS, min(seconds, settings.EXPERT_TOOLS_MAX_TTL_SECONDS))
    return now + timedelta(seconds=seconds)


def tool_entry(tool: Any) -> dict[str, Any]:
    annotations = getattr(tool, "annotations", None)
    execution = getattr(tool, "execution", None)
    return {
        "name": tool.name,
        "description": tool.description or "",
        "input_schema": tool.input_schema or {"type": "object"},
        # The expert's own word that the tool only reads (MCP `readOnlyHint`): the default policy.
        "read_only": bool(annotations is not None and annotations.read_only_hint is True),
        # 2025-11-25 `execution.taskSupport` ("required" | "optional" | "forbidden"): whether the core
        # asks for a task (on 2026-07-28 the expert decides, per call).
        "task_support": (execution.task_support or "forbidden") if execution is not None else "forbidden",
    }


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _discovery_slot(wait: float) -> AsyncIterator[None]:
    """One of EXPERT_DISCOVERY_CONCURRENCY discoveries on this loop (the core's requests all
    discover on the process's one service loop), waited for at most `wait` seconds; else
    service_unavailable. Requests that register or refresh experts cannot make the process hold
    more than that many connections to experts that answer slowly, or never."""
    loop = asyncio.get_running_loop()
    size = settings.EXPERT_DISCOVERY_CONCURRENCY
    known = _slots.get(loop)
    if known is None or known[0] != size:
        known = _slots[loop] = (size, asyncio.Semaphore(size))
    semaphore = known[1]
    try:
        async with asyncio.timeout(wait):
            await semaphore.acquire()
    except TimeoutError:
        raise CortexError(
            ErrorCode.SERVICE_UNAVAILABLE,
            f"{size} expert discoveries are already running (EXPERT_DISCOVERY_CONCURRENCY); try again shortly.",
        ) from None
    try:
        yield
    finally:
        semaphore.release()


async def discover(*, url: str, auth: str, caller: Caller, timeout: float | None = None) -> Discovery:
    """List the expert's tools (all pages). Never raises for an unreachable or refusing expert:
    the result says so, and the expert is kept with that status. Raises `CortexError`
    (service_unavailable) when no discovery slot frees up within the time limit: that is this
    process being busy, not the expert's status. At most twice the limit in all."""
    limit = float(timeout or settings.EXPERT_DISCOVERY_TIMEOUT_SECONDS)
    async with _discovery_slot(limit):
        return await _discover(url=url, auth=auth, caller=caller, limit=limit)


async def _discover(*, url: str, auth: str, caller: Caller, limit: float) -> Discovery:
    now = timezone.now()
    try:
        async with asyncio.timeout(limit):
            async with connect(url=url, auth=auth, caller=caller, tool=tokens.DISCOVERY_TOOL, timeout=limit) as conn:
                tools: list[dict[str, Any]] = []
                ttl_ms: int | None = None
                cursor: str | None = None
                for _page in range(100):
                    result = await conn.client.list_tools(cursor=cursor, cache_mode="bypass")
                    tools.extend(tool_entry(tool) for tool in result.tools)
                    ttl_ms = result.ttl_ms if ttl_ms is None else min(ttl_ms, result.ttl_ms)
                    cursor = result.next_cursor
                    if not cursor:
                        break
    except ExpertNeedsConnection as needs:
        return Discovery(
            status="needs_connection", error=f"No usable account ({needs.reason}) to list the tools.", discovered_at=now
        )
    except CortexError as exc:
        return Discovery(status="unreachable", error=exc.message, discovered_at=now)
    except MCPError as exc:
        return Discovery(status="unreachable", error=f"tools/list refused: {said(exc.message)}", discovered_at=now)
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - any transport failure: unreachable
        return Discovery(
            status="unreachable", error=f"The expert is unreachable: {said(describe(exc))}", discovered_at=now
        )
    return Discovery(status="ok", tools=tools, discovered_at=now, expires_at=_expiry(ttl_ms, now))
