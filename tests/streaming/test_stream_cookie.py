"""The browser's stream cookie: set with each ticket, reusable until it expires, so EventSource's
built-in reconnect (same URL, spent ticket, `Last-Event-ID`) resumes the stream by itself."""

from __future__ import annotations

from datetime import timedelta
from http.cookies import SimpleCookie

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.utils import timezone

from conftest import client_for
from streaming import services
from tests.streaming.conftest import SSEClient, WSClient, post_input

pytestmark = pytest.mark.django_db(transaction=True)


def ticket_and_cookie(user) -> tuple[str, str]:
    response = client_for(user).post("/output/ticket")
    assert response.status_code == 200, response.content
    return response.json()["ticket"], response.cookies[services.STREAM_COOKIE].value


def cookie_header(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"other=1; {services.STREAM_COOKIE}={value}".encode())]


def test_the_ticket_response_sets_a_short_lived_httponly_strict_cookie_for_the_streams_only(alice):
    response = client_for(alice).post("/output/ticket")
    # Parsed back from the Set-Cookie line the client receives.
    morsel = SimpleCookie(response.cookies[services.STREAM_COOKIE].output(header=""))[services.STREAM_COOKIE]
    assert morsel["path"] == "/output/"
    assert morsel["httponly"] and morsel["samesite"] == "Strict"
    assert 595 <= int(morsel["max-age"]) <= 600, "STREAM_COOKIE_SECONDS (the access token lasts longer)"
    assert not morsel["secure"], "the tests run without TLS (SECURE_COOKIES=0); production sets Secure"
    assert morsel.value != response.json()["ticket"]


async def test_a_reconnect_with_the_spent_ticket_and_the_cookie_resumes_after_the_last_event_id(alice):
    ticket, cookie = await sync_to_async(ticket_and_cookie)(alice)
    first = await SSEClient(ticket=ticket, headers=cookie_header(cookie)).open()
    await post_input(alice, "one")
    last_id, _ = await first.event()
    await first.close()
    await post_input(alice, "missed while away")
    # What EventSource sends when it reconnects: the same URL, the cookie, and Last-Event-ID.
    again = await SSEClient(
        ticket=ticket, headers=[*cookie_header(cookie), (b"last-event-id", last_id.encode())]
    ).open()
    assert again.status == 200
    assert (await again.event())[1]["data"]["content"] == "missed while away"
    await again.close()


async def test_the_cookie_alone_opens_the_stream_and_the_websocket(alice, bob):
    _, cookie = await sync_to_async(ticket_and_cookie)(alice)
    sse = await SSEClient(headers=cookie_header(cookie)).open()
    ws = await WSClient(headers=cookie_header(cookie)).open()
    assert sse.status == 200 and ws.connected
    await post_input(bob, "bob's own")
    await post_input(alice, "alice's")
    assert (await sse.event())[1]["data"]["content"] == "alice's"
    assert (await ws.payload())["data"]["content"] == "alice's"
    await sse.close()
    await ws.close()


async def refused(headers, **query) -> dict:
    sse = await SSEClient(headers=headers, **query).open()
    assert sse.status == 401
    import json

    return json.loads(await sse.body())["error"]


async def test_a_spent_ticket_without_the_cookie_is_still_refused(alice):
    ticket, _ = await sync_to_async(ticket_and_cookie)(alice)
    await (await SSEClient(ticket=ticket).open()).close()
    assert (await refused([], ticket=ticket))["code"] == "invalid_token"


async def test_an_expired_forged_or_revoked_cookie_is_refused(alice):
    _, cookie = await sync_to_async(ticket_and_cookie)(alice)
    with time_machine.travel(timezone.now() + timedelta(seconds=601)):
        assert (await refused(cookie_header(cookie)))["code"] == "invalid_token"
    assert (await refused(cookie_header(cookie[:-2] + "xx")))["code"] == "invalid_token"

    def change_password() -> None:
        alice.set_password("a-brand-new-password-42")
        alice.save(update_fields=["password"])

    await sync_to_async(change_password)()
    assert (await refused(cookie_header(cookie)))["code"] == "invalid_token", "a password change ends it"


def test_the_cookie_lasts_no_longer_than_the_access_token_that_asked_for_it(alice, settings):
    from datetime import UTC, datetime

    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=timedelta(seconds=120))
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.post("/output/ticket")
    assert response.status_code == 200, response.content
    assert 115 <= int(response.cookies[services.STREAM_COOKIE]["max-age"]) <= 120
    found = services.stream_cookie_user(value=response.cookies[services.STREAM_COOKIE].value)
    assert found is not None and found[1] <= datetime.fromtimestamp(token["exp"], tz=UTC)


async def test_a_deactivated_users_cookie_is_refused(alice):
    _, cookie = await sync_to_async(ticket_and_cookie)(alice)

    def deactivate() -> None:
        alice.is_active = False
        alice.save(update_fields=["is_active"])

    await sync_to_async(deactivate)()
    assert (await refused(cookie_header(cookie)))["code"] == "invalid_token"
