"""The parts of issue 8 that have a contract of their own, in process: the immediate stop of a
deactivated user's streams, the client address behind proxies, cognition's candidate cap,
metadata depth through the services, and the no-write paths on both databases."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEntry
from audit.services import write_behind
from common.web.addresses import client_address
from streaming import services as streaming_services
from tests.streaming.conftest import SSEClient, WSClient, bearer, fresh_channel_layer  # noqa: F401 (autouse)


@pytest.mark.django_db(transaction=True)
async def test_deactivation_stops_open_streams_at_once_through_the_channel_layer(alice, bob, settings):
    settings.CORTEX = {**settings.CORTEX, "STREAM_RECHECK_SECONDS": 3600}  # only the message can do it
    sse = await SSEClient(headers=await bearer(alice)).open()
    ws = await WSClient(headers=await bearer(alice)).open()
    other = await SSEClient(headers=await bearer(bob)).open()
    assert await sse.frame() == "retry: 3000"

    def deactivate() -> None:
        alice.is_active = False
        alice.save(update_fields=["is_active"])

    await database_sync_to_async(deactivate)()
    assert await sse.payload(timeout=10) == {"type": "end", "reason": "revoked"}
    assert sse.ended  # the final frame closed the response
    assert await ws.payload(timeout=10) == {"type": "end", "reason": "revoked"}
    assert await ws.communicator.receive_output(10) == {"type": "websocket.close", "code": 4403}
    assert await other.frame() == "retry: 3000"  # bob's stream is untouched
    await other.close()


@pytest.mark.parametrize(
    "remote, forwarded, trusted, expected",
    [
        ("10.0.0.5", "203.0.113.9", [], "10.0.0.5"),  # no proxy configured: the header is ignored
        ("10.0.0.5", "203.0.113.9", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.5", "198.51.100.1, 203.0.113.9", ["10.0.0.0/8"], "203.0.113.9"),  # the client can prepend
        ("10.0.0.5", "203.0.113.9, 10.0.0.7", ["10.0.0.0/8"], "203.0.113.9"),  # two proxies
        ("192.0.2.1", "203.0.113.9", ["10.0.0.0/8"], "192.0.2.1"),  # not from a proxy
    ],
)
def test_the_client_address_trusts_forwarding_headers_only_from_configured_proxies(
    settings, remote, forwarded, trusted, expected
):
    settings.TRUSTED_PROXIES = trusted
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_address(request) == expected


@pytest.mark.django_db
def test_metadata_deeper_than_32_levels_is_refused_by_the_services_too(alice):
    from django.core.exceptions import ValidationError

    from workspaces.services import workspace_create

    deep: dict = {}
    for _ in range(32):
        deep = {"d": deep}
    with pytest.raises(ValidationError):
        workspace_create(owner=alice, name="deep", metadata=deep)
    assert workspace_create(owner=alice, name="ok", metadata=deep["d"]).metadata == deep["d"]


def _writes(queries: CaptureQueriesContext) -> list[str]:
    keywords = ("BEGIN", "INSERT", "UPDATE", "DELETE", "SAVEPOINT")
    return [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(keywords)]


@pytest.mark.django_db(transaction=True)
def test_bad_credentials_open_no_write_transaction_on_either_database(api, alice, settings):
    settings.CORTEX = {**settings.CORTEX, "AUDIT_WRITE_BEHIND": True}  # as the servers run
    with CaptureQueriesContext(connection) as queries:
        assert (
            api.post("/auth/login", {"email": "alice@example.com", "password": "wrong"}, format="json").status_code
            == 401
        )
        assert api.post("/auth/refresh", {"refresh_token": "not.a.token"}, format="json").status_code == 401
        assert streaming_services.ticket_consume(ticket="garbage-ticket") is None
    assert _writes(queries) == []
    # The failed sign-in is audited all the same, by the writer thread, off the request's path.
    write_behind().flush()
    deadline = time.monotonic() + 10
    while not AuditEntry.objects.filter(action="auth.login_failed", actor_id=alice.id).exists():
        assert time.monotonic() < deadline, "the failed sign-in was never audited"
        time.sleep(0.05)


def _signed_in(user) -> dict:
    """A login's tokens, a spare ticket and the stream cookie, as a browser holds them."""
    from accounts.services import token_pair_issue
    from conftest import client_for

    tokens = token_pair_issue(user=user)
    response = client_for(user).post("/output/ticket")
    return {
        **tokens,
        "ticket": response.json()["ticket"],
        "cookie": [
            (b"cookie", f"{streaming_services.STREAM_COOKIE}={response.cookies['cortex_stream'].value}".encode())
        ],
    }


async def _refused(**kwargs) -> str:
    sse = await SSEClient(**kwargs).open()
    assert sse.status == 401, sse.status
    return json.loads(await sse.body())["error"]["code"]


def _logout(refresh_token: str) -> None:
    from conftest import client_for

    assert client_for().post("/auth/logout", {"refresh_token": refresh_token}, format="json").status_code == 204


def _change_password(user) -> None:
    user.set_password("a-brand-new-password-42")
    user.save(update_fields=["password"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ending", ["logout", "password change"])
async def test_logout_and_password_change_end_open_streams_and_refuse_earlier_tickets_and_cookies(
    alice, bob, settings, ending
):
    settings.CORTEX = {**settings.CORTEX, "STREAM_RECHECK_SECONDS": 3600}  # only the message can end them now
    before = await database_sync_to_async(_signed_in)(alice)
    bearer_header = [(b"authorization", f"Bearer {before['access_token']}".encode())]
    sse = await SSEClient(headers=bearer_header).open()
    ws = await WSClient(headers=before["cookie"]).open()
    other = await SSEClient(headers=await bearer(bob)).open()
    assert sse.status == 200 and ws.connected
    await asyncio.sleep(1.1)  # an access token's `iat` has whole seconds (streaming.auth)

    if ending == "logout":
        await database_sync_to_async(_logout)(before["refresh_token"])
    else:
        await database_sync_to_async(_change_password)(alice)
    assert await sse.payload(timeout=10) == {"type": "end", "reason": "revoked"}
    assert await ws.payload(timeout=10) == {"type": "end", "reason": "revoked"}
    assert await ws.communicator.receive_output(10) == {"type": "websocket.close", "code": 4403}
    assert await other.frame() == "retry: 3000"  # bob's stream is untouched
    await other.close()

    assert await _refused(ticket=before["ticket"]) == "invalid_token"
    assert await _refused(headers=before["cookie"]) == "invalid_token"
    # What was issued after it works.
    after = await database_sync_to_async(_signed_in)(alice)
    for kwargs in ({"ticket": after["ticket"]}, {"headers": after["cookie"]}, {"headers": await bearer(alice)}):
        fresh = await SSEClient(**kwargs).open()
        assert fresh.status == 200, kwargs
        await fresh.close()


@pytest.mark.django_db(transaction=True)
async def test_a_logout_whose_message_is_lost_ends_the_stream_at_the_next_recheck(alice, settings):
    from django.utils import timezone

    from accounts.models import User

    settings.CORTEX = {**settings.CORTEX, "STREAM_RECHECK_SECONDS": 1}
    sse = await SSEClient(headers=await bearer(alice)).open()
    assert await sse.frame() == "retry: 3000"
    await asyncio.sleep(1.1)
    # A write that sends no signal (another process, a raw update): only the re-check sees it.
    await database_sync_to_async(User.objects.filter(pk=alice.pk).update)(sessions_ended_at=timezone.now())
    assert await sse.payload(timeout=10) == {"type": "end", "reason": "revoked"}
