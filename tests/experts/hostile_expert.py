"""A hostile expert outside the project: a raw HTTP/1.1 server on loopback (threads of the test
process) in front of a real MCP expert. A request whose JSON-RPC method is `target` gets the
answer of `mode`; every other request (the MCP handshake) is relayed to the real expert unchanged.

Modes:
- "chunked": a JSON-RPC result, `Transfer-Encoding: chunked`, no `Content-Length`, `size` bytes;
- "chunked-error": the same as a 500 whose body is a JSON-RPC error with an endless message;
- "sse": `text/event-stream`, no length, `size` bytes of comment lines (free for an SSE parser's
  per-event limit), then the connection closes;
- "error": a JSON-RPC error whose message is `size` characters (with its `Content-Length`);
- "gzip": a JSON-RPC result of `size` bytes, gzip-encoded (about a thousandth of that on the wire);
- "stall": no answer until the peer hangs up, or `stall` seconds (`most_running` counts how many
  were held at once).

`sent` is what the server's kernel accepted for the last hostile answer before the peer hung up:
the bytes the core read plus what the two socket buffers held (the server's send buffer is made
small, so that is mostly the core's receive buffer).
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
from urllib.parse import urlsplit

CHUNK = 64 * 1024


class _Gone(Exception):
    """The peer closed the connection."""


class HostileExpert:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.mode = "chunked"
        self.target = "tools/call"
        self.size = 64 * 1024 * 1024
        self.stall = 5.0
        self.sent = 0
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="hostile-expert", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(30)
            try:
                request = _read_request(connection)
                if request is None:
                    return
                verb, path, headers, body = request
                try:
                    message = json.loads(body) if body else {}
                except ValueError:
                    message = {}
                if isinstance(message, dict) and message.get("method") == self.target:
                    self._hostile(connection, message.get("id"))
                else:
                    self._relay(connection, verb, path, headers, body)
            except (_Gone, OSError):
                return

    def _relay(self, connection: socket.socket, verb: str, path: str, headers: dict[str, str], body: bytes) -> None:
        upstream = http.client.HTTPConnection(*self._upstream, timeout=10)
        skipped = {"host", "connection", "content-length", "accept-encoding", "transfer-encoding"}
        upstream.request(verb, path, body=body, headers={k: v for k, v in headers.items() if k not in skipped})
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        head = [f"HTTP/1.1 {response.status} {response.reason}"]
        head += [f"{k}: {v}" for k, v in response.getheaders() if k.lower() not in skipped]
        head += [f"Content-Length: {len(data)}", "Connection: close"]
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)

    def _send(self, connection: socket.socket, data: bytes) -> None:
        try:
            connection.sendall(data)
        except OSError:
            raise _Gone from None
        self.sent += len(data)

    def _hostile(self, connection: socket.socket, request_id: object) -> None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        self.sent = 0
        if self.mode == "stall":
            with self._lock:
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            try:
                connection.settimeout(self.stall)
                connection.recv(1)  # b"" when the core gives up and closes
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    self.running -= 1
            return
        if self.mode == "error":
            body = json.dumps(
                {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32000, "message": "y" * self.size}}
            ).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            connection.sendall(head.encode() + b"Connection: close\r\n\r\n")
            self._send(connection, body)
            return
        if self.mode == "gzip":
            result = {"content": [{"type": "text", "text": "x" * self.size}]}
            body = gzip.compress(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode())
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            connection.sendall(f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
            self._send(connection, body)
            return
        if self.mode == "sse":
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            line = b": " + b"x" * (CHUNK - 3) + b"\n"
            while self.sent < self.size:
                self._send(connection, line)
            return
        status, opening, closing = (
            ("500 Internal Server Error", b', "error": {"code": -32000, "message": "', b'"}}')
            if self.mode == "chunked-error"
            else ("200 OK", b', "result": {"content": [{"type": "text", "text": "', b'"}]}}')
        )
        connection.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n".encode()
            + b"Connection: close\r\n\r\n"
        )
        self._send(connection, _chunk(json.dumps({"jsonrpc": "2.0", "id": request_id})[:-1].encode() + opening))
        while self.sent < self.size:
            self._send(connection, _chunk(b"x" * CHUNK))
        self._send(connection, _chunk(closing) + b"0\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _read_request(connection: socket.socket) -> tuple[str, str, dict[str, str], bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        more = connection.recv(65536)
        if not more:
            return None
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    verb, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        more = connection.recv(65536)
        if not more:
            return None
        body += more
    return verb, path, headers, body
