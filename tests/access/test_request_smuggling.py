"""Issue 24 (low): a request with both `Content-Length` and `Transfer-Encoding` (or two different
`Content-Length`s) is refused with a 400 envelope before anything reads its body. httptools refuses
such a request itself; h11 passes it on, and the guard used to believe `Content-Length` (a
smuggling primitive behind a proxy that believes the other header). The guard in process, and a
real uvicorn speaking h11."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator

import pytest
from asgiref.testing import ApplicationCommunicator

from common.web.asgi import RequestGuard
from tests.servers import ServerProcess, free_port, running, server_env

REACHED: list[dict] = []


async def _app(scope, receive, send) -> None:
    REACHED.append(scope)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _scope(*headers: tuple[bytes, bytes]) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": "/auth/login",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", b"5"), (b"transfer-encoding", b"chunked")],
        [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
        [(b"content-length", b"5"), (b"content-length", b"50")],
    ],
    ids=["cl-then-te", "te-then-cl", "two-lengths"],
)
async def test_the_guard_refuses_an_ambiguous_body_length_400(settings, headers):
    settings.ALLOWED_HOSTS = ["testserver"]
    REACHED.clear()
    communicator = ApplicationCommunicator(RequestGuard(_app), _scope(*headers))
    await communicator.send_input({"type": "http.request", "body": b"hello", "more_body": False})
    start = await communicator.receive_output(5)
    body = await communicator.receive_output(5)
    assert start["status"] == 400
    assert json.loads(body["body"])["error"]["code"] == "bad_request"
    assert REACHED == []


async def test_the_same_length_twice_and_either_header_alone_pass(settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    for headers in ([(b"content-length", b"5"), (b"content-length", b"5")], [(b"content-length", b"5")]):
        REACHED.clear()
        communicator = ApplicationCommunicator(RequestGuard(_app), _scope(*headers))
        await communicator.send_input({"type": "http.request", "body": b"hello", "more_body": False})
        assert (await communicator.receive_output(5))["status"] == 204 and len(REACHED) == 1


@pytest.fixture(scope="module")
def h11_port() -> Iterator[int]:
    port = free_port()
    env = server_env(SQLITE_PATH=os.path.join(tempfile.mkdtemp(), "unused.sqlite3"))
    argv = [sys.executable, "-m", "uvicorn", "--http", "h11", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--no-access-log", "--no-proxy-headers", "cortex_site.asgi:application"]
    with running(ServerProcess(name=f"core-h11:{port}", argv=argv, port=port, env=env)):
        yield port


@pytest.mark.e2e
@pytest.mark.database_agnostic  # refused by the guard before anything reads the database
def test_uvicorn_with_h11_answers_both_headers_with_the_400_envelope(h11_port):
    body = b'{"email": "a@example.com", "password": "x"}'
    head = (
        f"POST /auth/login HTTP/1.1\r\nHost: 127.0.0.1:{h11_port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with socket.create_connection(("127.0.0.1", h11_port), timeout=10) as sock:
        sock.sendall(head + chunked)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, rest = data.split(b"\r\n", 1)
    assert status_line.split(b" ")[1] == b"400", data[:300]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"
