"""Blocking SSE and WebSocket clients for real server processes (end-to-end tests, benchmark)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2
from websockets.sync.client import ClientConnection, connect


def login(base_url: str, email: str, password: str) -> str:
    response = httpx2.post(f"{base_url}/auth/login", json={"email": email, "password": password}, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]


class SSEStream:
    """One `GET /output/stream` response, read event by event."""

    def __init__(
        self, base_url: str, *, token: str | None = None, headers: dict[str, str] | None = None, **params: Any
    ) -> None:
        all_headers = {"Authorization": f"Bearer {token}"} if token else {}
        all_headers.update(headers or {})
        self.client = httpx2.Client(base_url=base_url, timeout=httpx2.Timeout(10.0))
        self._cm = self.client.stream("GET", "/output/stream", headers=all_headers, params=params)
        self.response = self._cm.__enter__()
        self._lines = self.response.iter_lines()
        self.last_id: str | None = None

    def event(self, timeout: float = 10.0) -> tuple[str | None, dict]:
        """The next event (comments and `retry:` skipped). Heartbeats keep the deadline checked."""
        deadline = time.monotonic() + timeout
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if "data" in fields:
                    self.last_id = fields.get("id", self.last_id)
                    return fields.get("id"), json.loads(fields["data"])
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            if time.monotonic() > deadline:
                raise TimeoutError("no event in time")
        raise EOFError("the stream ended")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self.client.close()

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def websocket(
    base_url: str, *, token: str | None = None, query: str = "", origin: str | None = None
) -> ClientConnection:
    url = base_url.replace("http://", "ws://") + "/output/ws" + (f"?{query}" if query else "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(url, additional_headers=headers, origin=origin, open_timeout=10, legacy=True)


def ws_event(connection: ClientConnection, timeout: float = 10.0) -> dict:
    return json.loads(connection.recv(timeout=timeout))
