"""In-process stream clients over the whole ASGI application (Channels' communicators)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import ApplicationCommunicator, WebsocketCommunicator

from accounts.services import token_pair_issue
from conftest import client_for

TIMEOUT = 15  # a liveness bound: in-process, yet the machine may be loaded


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A new in-memory layer per test: its queues belong to the test's event loop."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def access_token(user) -> str:
    return token_pair_issue(user=user)["access_token"]


async def bearer(user) -> list[tuple[bytes, bytes]]:
    token = await sync_to_async(access_token)(user)
    return [(b"authorization", f"Bearer {token}".encode())]


def application():
    from cortex_site.asgi import application as app

    return app


class SSEClient:
    """`GET /output/stream` through the ASGI application, read frame by frame."""

    def __init__(self, *, headers: list[tuple[bytes, bytes]] | None = None, **query: Any) -> None:
        self.communicator = ApplicationCommunicator(
            application(),
            {
                "type": "http",
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/output/stream",
                "raw_path": b"/output/stream",
                "query_string": urlencode(query).encode(),
                "headers": [(b"host", b"testserver"), *(headers or [])],
                "client": ("127.0.0.1", 50000),
                "server": ("testserver", 80),
            },
        )
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.buffer = b""
        self.ended = False
        self.frames: list[str] = []

    async def open(self) -> SSEClient:
        await self.communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.communicator.receive_output(TIMEOUT)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = dict(start["headers"])
        return self

    async def body(self) -> bytes:
        """The whole body of a response that ends (error responses)."""
        data = b""
        while True:
            message = await self.communicator.receive_output(TIMEOUT)
            data += message.get("body", b"")
            if not message.get("more_body"):
                return data

    async def frame(self, timeout: float = TIMEOUT) -> str:
        """The next raw frame (an event, `retry:`, or `: ping`)."""
        while b"\n\n" not in self.buffer:
            message = await self.communicator.receive_output(timeout)
            assert message["type"] == "http.response.body"
            self.buffer += message.get("body", b"")
            if not message.get("more_body"):
                self.ended = True
                if b"\n\n" not in self.buffer:
                    raise EOFError("stream ended")
        frame, self.buffer = self.buffer.split(b"\n\n", 1)
        self.frames.append(frame.decode())
        return frame.decode()

    async def event(self, timeout: float = TIMEOUT) -> tuple[str | None, dict]:
        """The next event as (SSE id, JSON); comments and `retry:` are skipped."""
        while True:
            frame = await self.frame(timeout)
            lines = frame.split("\n")
            if all(line.startswith(":") or line.startswith("retry:") for line in lines):
                continue
            fields = dict(line.split(": ", 1) for line in lines)
            assert set(fields) <= {"id", "data"}, frame
            return fields.get("id"), json.loads(fields["data"])

    async def payload(self, timeout: float = TIMEOUT) -> dict:
        return (await self.event(timeout))[1]

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(TIMEOUT)


class WSClient:
    def __init__(self, *, headers: list[tuple[bytes, bytes]] | None = None, origin: str | None = None, **query: Any):
        extra = [(b"origin", origin.encode())] if origin else []
        path = "/output/ws" + (f"?{urlencode(query)}" if query else "")
        self.communicator = WebsocketCommunicator(
            application(), path, headers=[(b"host", b"testserver"), *extra, *(headers or [])]
        )
        self.connected = False

    async def open(self) -> WSClient:
        self.connected, _ = await self.communicator.connect(TIMEOUT)
        return self

    async def payload(self, timeout: float = TIMEOUT) -> dict:
        return await self.communicator.receive_json_from(timeout)

    async def close(self) -> None:
        await self.communicator.disconnect(timeout=TIMEOUT)


async def post_input(user, content: str, conversation=None, **extra: Any):
    body = {"content": content, "conversation_id": str(conversation.id) if conversation else None}
    headers = {"HTTP_IDEMPOTENCY_KEY": extra.pop("idempotency_key")} if "idempotency_key" in extra else {}
    body.update(extra)

    def post():
        return client_for(user).post("/input", body, format="json", **headers)

    return await sync_to_async(post)()


def layer():
    return get_channel_layer()


async def settle() -> None:
    """Let already-scheduled consumer work run (no timing assumptions beyond one loop turn)."""
    for _ in range(5):
        await asyncio.sleep(0)
