"""Issue 24 (low): the WebSocket's origin check compares the whole origin (scheme, host, port). A
page on another port (or scheme) of the same host cannot open the stream with the browser's
stream cookie and read the user's live events; the page's own origin and the listed
`WS_ALLOWED_ORIGINS` can."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from tests.streaming.conftest import WSClient, bearer, post_input
from tests.streaming.test_stream_cookie import cookie_header, ticket_and_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def connects(headers, origin: str | None) -> bool:
    ws = WSClient(headers=headers, origin=origin)
    connected, _ = await ws.communicator.connect()
    if connected:
        await ws.close()
    return connected


@pytest.mark.parametrize(
    "origin",
    ["http://testserver:8080", "https://testserver", "http://localhost:3000", "http://testserver.evil.example"],
)
async def test_another_port_or_scheme_of_the_same_host_cannot_use_the_stream_cookie(alice, origin):
    _, cookie = await sync_to_async(ticket_and_cookie)(alice)
    assert not await connects(cookie_header(cookie), origin)


async def test_the_pages_own_origin_opens_it_and_reads_live_events(alice):
    _, cookie = await sync_to_async(ticket_and_cookie)(alice)
    for origin in ("http://testserver", "http://testserver:80", "HTTP://TestServer"):
        assert await connects(cookie_header(cookie), origin), origin
    ws = await WSClient(headers=cookie_header(cookie), origin="http://testserver").open()
    await post_input(alice, "mine")
    assert (await ws.payload())["data"]["content"] == "mine"
    await ws.close()


async def test_listed_origins_are_whole_origins(alice, settings):
    settings.CORTEX = {**settings.CORTEX, "WS_ALLOWED_ORIGINS": ["http://localhost:3000", "app.example.com"]}
    headers = await bearer(alice)
    assert await connects(headers, "http://localhost:3000")
    assert not await connects(headers, "http://localhost:3001")
    assert await connects(headers, "https://app.example.com")  # a bare host means https on 443
    assert not await connects(headers, "http://app.example.com")
    assert await connects(headers, None)  # no Origin: not a browser (it authenticates like any client)
