"""Fixtures for the memory and cognition services: in-process servers for fast tests, and real
processes (started by their management commands on free ports) for end-to-end ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_services.client import ServiceClient
from mcp_services.memory.server import build_memory_server
from tests.servers import ServerProcess, core_server, free_port, fresh_database, manage_command, running, server_env

TOKEN = os.environ["CORTEX_SERVICE_TOKEN"]
COGNITION_TOKEN = os.environ["CORTEX_COGNITION_TOKEN"]  # cognition's own, read-only at memory
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def memory_server():
    return build_memory_server()


@contextlib.asynccontextmanager
async def held(client: Client) -> AsyncIterator[Client]:
    """Enter and exit `client` in a task of its own: pytest-asyncio sets a fixture up and tears it
    down in different tasks, and anyio's cancel scopes must exit in the task that entered them."""
    ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        try:
            async with client:
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    task = asyncio.create_task(hold())
    try:
        yield await ready
    finally:
        stop.set()
        await task


@pytest.fixture
async def memory(memory_server) -> AsyncIterator[Client]:
    """An in-process MCP client to the memory service (tools run in threads: use transactional DB)."""
    async with held(Client(memory_server, cache=None)) as client:
        yield client


@contextlib.asynccontextmanager
async def http_client(url: str, *, token: str | None = TOKEN, **headers: str) -> AsyncIterator[Client]:
    """A real MCP client over streamable HTTP, sending the service token."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
        async with Client(streamable_http_client(url, http_client=http), cache=None) as client:
            yield client


def wait_until(predicate: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met after {timeout}s")


def ready(url: str) -> bool:
    """Whether the core at `url` says it is ready (`/readyz` 200). No answer in time counts as not
    yet: a supervisor's processes start together, and the first check of the services imports the
    MCP SDK (mcp_services.basics), which takes seconds on a loaded machine."""
    try:
        return httpx2.get(f"{url}/readyz", timeout=10).status_code == 200
    except httpx2.TransportError:
        return False


def memory_history(url: str, user_id: str) -> list[dict]:
    """A user's items as the memory service at `url` returns them (over real MCP)."""

    async def read() -> list[dict]:
        async with http_client(url) as memory:
            result = await memory.read_resource(f"history/{user_id}")
            return json.loads(result.contents[0].text)

    return asyncio.run(read())


def memory_history_if_up(url: str, user_id: str) -> list[dict] | None:
    """`memory_history`, or None while the service cannot be reached (stopped, or restarting).

    Only transport failures mean that; any other error (a refused token, a bad answer) fails."""
    try:
        return memory_history(url, user_id)
    except* httpx2.TransportError:
        pass
    return None


def outbox_pending(database: dict[str, str]) -> int:
    """Outbox entries not yet delivered (nor refused), read straight from a server's database."""
    query = "SELECT count(*) FROM mcp_services_outboxentry WHERE delivered_at IS NULL AND failed_at IS NULL"
    if database.get("DATABASE_URL"):
        import psycopg

        with psycopg.connect(database["DATABASE_URL"]) as conn:
            return conn.execute(query).fetchone()[0]
    with contextlib.closing(sqlite3.connect(database["SQLITE_PATH"], timeout=20)) as conn:
        return conn.execute(query).fetchone()[0]


# --- real processes ---------------------------------------------------------------------------


def memory_service(env: dict[str, str], *args: str, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    return manage_command("run_memory_service", "--port", str(port), *args, env=env, port=port)


def cognition_service(env: dict[str, str], *, port: int | None = None) -> ServerProcess:
    port = port or free_port()
    return manage_command("run_cognition_service", "--port", str(port), env=env, port=port)


def outbox_worker(env: dict[str, str]) -> ServerProcess:
    return manage_command("memory_outbox_worker", env=env, port=0, ready_line="memory outbox worker: running")


@dataclass
class Stack:
    """A fresh database, and the processes' environment pointing at fixed service ports."""

    env: dict[str, str]
    memory_port: int
    cognition_port: int

    @property
    def memory_url(self) -> str:
        return f"http://127.0.0.1:{self.memory_port}/mcp"

    @property
    def cognition_url(self) -> str:
        return f"http://127.0.0.1:{self.cognition_port}/mcp"

    def memory(self, *args: str) -> ServerProcess:
        return memory_service(self.env, *args, port=self.memory_port)

    def cognition(self) -> ServerProcess:
        return cognition_service(self.env, port=self.cognition_port)

    def core(self) -> ServerProcess:
        return core_server(env=self.env)

    def worker(self) -> ServerProcess:
        return outbox_worker(self.env)

    def memory_client(self) -> ServiceClient:
        return ServiceClient(name="memory", target=self.memory_url, token=TOKEN, timeout=10)


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    memory_port, cognition_port = free_port(), free_port()
    with fresh_database() as database:
        env = server_env(
            **database,
            MEMORY_URL=f"http://127.0.0.1:{memory_port}/mcp",
            COGNITION_URL=f"http://127.0.0.1:{cognition_port}/mcp",
            MEMORY_DRAIN_ON_COMMIT="1",
            OUTBOX_BACKOFF_BASE_SECONDS="1",
            OUTBOX_BACKOFF_MAX_SECONDS="2",
            OUTBOX_POLL_SECONDS="1",
            INPUT_RATE="100000/min",
            READYZ_CACHE_SECONDS="1",
        )
        yield Stack(env=env, memory_port=memory_port, cognition_port=cognition_port)


__all__ = ["COGNITION_TOKEN", "PASSWORD", "TOKEN", "Stack", "http_client", "running", "stack", "wait_until"]
