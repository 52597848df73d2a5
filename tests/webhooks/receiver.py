"""A webhook receiver for the tests: a real HTTP server on a loopback port (in a thread of the test
process: it stands for the world outside). Each path behaves as its name says and records every
request it gets; `/ok/...` verifies the signature with the Standard Webhooks reference code."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

from tests.servers import free_port


@dataclass
class Hit:
    at: float  # monotonic
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None = None
    wall: float = field(default_factory=time.time)  # when it arrived, for delays measured across processes


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    secrets: dict[str, str] = field(default_factory=dict)  # path prefix -> the webhook's secret
    hits: list[Hit] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=dict)  # path -> 500s still to answer
    hang_seconds: float = 6.0
    keep_alive: bool = False  # HTTP/1.1 (connections reused, as most real receivers allow): the benchmark
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, path: str) -> list[Hit]:
        with self.lock:
            return [hit for hit in self.hits if hit.path == path]

    def wait_for(self, predicate, *, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver: {what} not seen after {timeout}s")
            time.sleep(0.05)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                hit = Hit(at=time.monotonic(), path=self.path, headers=headers, body=body)
                secret = next((s for prefix, s in receiver.secrets.items() if self.path.startswith(prefix)), None)
                if secret is not None:
                    try:
                        Webhook(secret).verify(body, headers)
                        hit.verified = True
                    except WebhookVerificationError:
                        hit.verified = False
                with receiver.lock:
                    receiver.hits.append(hit)
                    failing = receiver.failures_left.get(self.path, 0)
                    if failing:
                        receiver.failures_left[self.path] = failing - 1
                # /hang/...: every request hangs; /slow/...: only the first one (the one in flight
                # when the worker is killed). (`of` scans every hit: only where needed, not under load.)
                if self.path.startswith("/hang") or (
                    self.path.startswith("/slow") and len(receiver.of(self.path)) == 1
                ):
                    time.sleep(receiver.hang_seconds)
                if self.path.startswith("/redirect"):
                    self.send_response(307)
                    self.send_header("Location", f"{receiver.url}/target")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 500 if failing else (401 if hit.verified is False else 204)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
