"""Which requests `common.web.asgi.LeanRoutes` serves itself, and that it hands every other one on
untouched (its body replayed). What the answers are is compared from outside, against Django's
handler, in `test_input_asgi_route_e2e.py`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator

from accounts.services import token_pair_issue
from common.web.asgi import LeanRoutes
from tests.factories import UserFactory
from workspaces.models import Message

pytestmark = pytest.mark.django_db(transaction=True)
TIMEOUT = 15  # a liveness bound


class Behind:
    """The app behind the route: records what reached it and answers 299."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        body = b""
        if scope["type"] == "http":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        self.seen.append((scope["method"], scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"behind"})


async def _post(app: Any, path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]], method: str = "POST"):
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    communicator = ApplicationCommunicator(app, scope)
    for n, chunk in enumerate(chunks):
        await communicator.send_input({"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1})
    start = await communicator.receive_output(TIMEOUT)
    body = b""
    while True:
        message = await communicator.receive_output(TIMEOUT)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(TIMEOUT)
    return start["status"], dict(start["headers"]), body


@pytest.fixture
def lean_settings(settings):
    settings.CORTEX = {**settings.CORTEX, "INPUT_LEAN_PATH": True, "INPUT_GROUP_COMMIT": False}


async def test_a_common_input_is_answered_and_stored_by_the_route_alone(lean_settings):
    user = await sync_to_async(UserFactory)()
    token = (await sync_to_async(token_pair_issue)(user=user))["access_token"]
    behind = Behind()
    app = LeanRoutes(behind, paths=["/input"])
    status, headers, body = await _post(
        app, "/input", [b'{"content": ', b'"hello"}'], [(b"authorization", f"Bearer {token}".encode())]
    )
    assert status == 200, body
    assert json.loads(body)["data"]["content"] == "hello"
    assert behind.seen == []  # never handed on
    assert headers[b"X-Content-Type-Options"] == b"nosniff"  # the API's middleware ran around it
    assert headers[b"Allow"] == b"POST, OPTIONS"
    assert await Message.objects.filter(sender=user, content="hello").acount() == 1


async def test_what_the_lean_path_leaves_reaches_the_app_behind_with_its_body(lean_settings):
    user = await sync_to_async(UserFactory)()
    token = (await sync_to_async(token_pair_issue)(user=user))["access_token"]
    auth = [(b"authorization", f"Bearer {token}".encode())]
    behind = Behind()
    app = LeanRoutes(behind, paths=["/input"])
    cases = [
        ("/input", [b'{"content": "no token"}'], [], "POST"),  # no credentials: DRF's 401
        ("/input", [b'{"content": ', b"5}"], auth, "POST"),  # refused by msgspec: DRF's 400
        ("/input", [b'{"content": "hi"}'], auth, "PUT"),  # another method
        ("/messages", [b'{"content": "hi"}'], auth, "POST"),  # another path
    ]
    for path, chunks, headers, method in cases:
        assert await _post(app, path, chunks, headers, method) == (299, {}, b"behind")
    assert behind.seen == [(method, path, b"".join(chunks)) for path, chunks, _headers, method in cases]
    assert await Message.objects.filter(sender=user).acount() == 0  # nothing written on the way


async def test_without_paths_everything_goes_behind(lean_settings):
    behind = Behind()
    assert await _post(LeanRoutes(behind, paths=[]), "/input", [b"{}"], []) == (299, {}, b"behind")
    assert behind.seen == [("POST", "/input", b"{}")]
