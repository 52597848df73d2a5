"""`GET /output/stream` (SSE) and `GET /output/ws` (WebSocket): one user's live event log.

Both consumers parse, authorize and then follow the same protocol (`_EventStream`):

1. Join the user's channel-layer group *first*, then read the log head from the database. Every
   event committed after that read is published after this subscription, so it arrives live.
2. On resume, replay `(last_event_id, head]` from the durable log, then go live.
3. Live copies carry the recipient's gap-free seq. A copy at or below what the stream has already
   covered is a duplicate (the seam between replay and live) and is dropped. A copy that skips
   ahead means an earlier one is late or was dropped by the layer (publications of concurrent
   commits may arrive out of order; channels_redis drops over capacity): the stream fetches the
   missing range from the database, where it is committed already, before going on.

Live copies wait in a bounded per-connection queue; a client that falls behind by more than
`STREAM_BUFFER_EVENTS` events or about `STREAM_BUFFER_BYTES` is disconnected and resumes with its
last event id (under daphne, which buffers whatever is written, `daphne_compat` cuts off a
connection whose socket buffer passes the same byte bound). Group membership and the stream's slot
(`streaming.slots`, at most `STREAMS_PER_USER`) are released on every exit path (`__call__`'s finally).
A stream joins its group again every half `group_expiry`, so a membership never expires under it.

A stream never outlives its credential. It ends, with a final `{"type": "end", "reason": ...}`
(SSE: a `data:` line without `id:`, so `Last-Event-ID` stays on the last real event; WebSocket: a
text frame, then close code 4401 or 4403):
- `token_expired` (close 4401) when the access token that opened it (or requested its ticket)
  expires: reconnect with a fresh token and `Last-Event-ID`, nothing is lost;
- `revoked` (close 4403) when its user is deactivated or deleted, or logs out or changes the
  password after its credential (token, ticket, cookie) was issued: at once through a `stream.revoke`
  message to the user's group, and at the latest at the next re-check of the user
  (`STREAM_RECHECK_SECONDS`, default 15: one read per process for all its streaming users, never
  one per stream or per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import Http404

from accounts.models import User
from common.errors import CortexError, ErrorCode
from common.web import daphne_compat, shutdown
from streaming import selectors, slots
from streaming.auth import stream_user
from streaming.services import STREAM_EVENT, STREAM_REVOKE, LiveMessage, user_group
from workspaces.selectors import conversation_get_for_user

logger = logging.getLogger(__name__)

REPLAY_PAGE = 500
WS_CLOSE_POLICY = 1008  # auth failures, forbidden or malformed requests
WS_CLOSE_GOING_AWAY = 1001  # server shutdown
WS_CLOSE_TRY_LATER = 1013  # fell behind (resume with the last event id), or too many streams
WS_CLOSE_TOKEN_EXPIRED = 4401  # the credential expired: reconnect with a fresh token and the last event id
WS_CLOSE_REVOKED = 4403  # the user was deactivated or deleted
END_REASONS = {"token_expired": WS_CLOSE_TOKEN_EXPIRED, "revoked": WS_CLOSE_REVOKED}
STREAMS_FULL_RETRY_AFTER = 10
# Under daphne a stream stops writing while its connection holds more unsent output than this
# (uvicorn's send waits by itself); a client that stays stalled this long is cut off.
DRAIN_HIGH_WATER_BYTES = 256 * 1024
DRAIN_POLL_SECONDS = 0.02
DRAIN_GIVE_UP_SECONDS = 30
WRITE_CHUNK_BYTES = 64 * 1024


def _approx_bytes(message: LiveMessage) -> int:
    """What a queued live event holds: its JSON text (and the bytes it will take on the wire)."""
    return len(message.get("json") or "") + 64


class _Stalled(Exception):
    """The client has read nothing for a long time."""


class _Rechecks:
    """The process's re-check of its streaming users: one query for all of them every
    `STREAM_RECHECK_SECONDS`, not one per stream (5,000 idle streams made 5,000 queries a period,
    which delayed their heartbeats). `revoked` maps a user to the moment before which their streams'
    credentials are void: infinity for users found inactive or deleted, their last logout or
    password change otherwise. Each stream looks at it on its own period; the immediate path is
    `streams_revoke`'s message."""

    def __init__(self) -> None:
        self.users: dict[uuid.UUID, int] = {}  # user id -> open streams in this process
        self.revoked: dict[uuid.UUID, float] = {}
        self.task: asyncio.Task | None = None

    def add(self, user_id: uuid.UUID) -> None:
        self.users[user_id] = self.users.get(user_id, 0) + 1
        if self.revoked.get(user_id) == math.inf:
            del self.revoked[user_id]  # they were checked active just now, when the stream opened
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._run(), name="cortex-stream-rechecks")

    def remove(self, user_id: uuid.UUID) -> None:
        left = self.users.get(user_id, 0) - 1
        if left > 0:
            self.users[user_id] = left
        else:
            self.users.pop(user_id, None)
        if not self.users and self.task is not None:  # no stream left: nothing to re-check
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while self.users:
            await asyncio.sleep(settings.CORTEX["STREAM_RECHECK_SECONDS"])
            try:
                active = await database_sync_to_async(selectors.users_may_stream)(user_ids=list(self.users))
            except Exception:
                logger.exception("Re-checking streaming users failed; trying again next period")
                continue
            revoked = {
                user_id: math.inf if user_id not in active else active[user_id].timestamp()
                for user_id in self.users
                if user_id not in active or active[user_id] is not None
            }
            layer = get_channel_layer()
            for user_id, before in revoked.items():
                if self.revoked.get(user_id) != before:  # end their streams in this process now
                    message = (
                        {"type": STREAM_REVOKE} if before == math.inf else {"type": STREAM_REVOKE, "before": before}
                    )
                    with contextlib.suppress(Exception):
                        await layer.group_send(user_group(user_id), message)
            self.revoked = revoked


_rechecks = _Rechecks()


class _Ticker:
    """One task per process for what every open stream needs now and then: the heartbeat (a
    `: ping` once a stream has been quiet for `SSE_HEARTBEAT_SECONDS`), the end at its credential's
    expiry or its user's revocation, and its slot's renewal. Per-stream timers and a waiting task
    per idle stream cost memory on every open connection; this costs one set entry."""

    def __init__(self) -> None:
        self.streams: set[Any] = set()
        self.task: asyncio.Task | None = None

    def add(self, stream: Any) -> None:
        self.streams.add(stream)
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._run(), name="cortex-stream-ticker")

    def discard(self, stream: Any) -> None:
        self.streams.discard(stream)
        if not self.streams and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while self.streams:
            await asyncio.sleep(TICK_SECONDS)
            now, wall = time.monotonic(), time.time()
            for stream in list(self.streams):
                try:
                    await stream.tick(now, wall)
                except Exception:  # a stream whose client is gone: its own teardown follows
                    logger.debug("tick of a stream failed", exc_info=True)


_ticker = _Ticker()
TICK_SECONDS = 0.5


def _rejoin_seconds(layer: Any) -> float:
    """How often a stream joins its group again: Channels' layers drop a group membership once it
    is `group_expiry` old (a day by default, in memory and in Redis alike), and a stream open longer
    would silently receive no more live events. Joining again renews it; halfway leaves margin."""
    return max(TICK_SECONDS, getattr(layer, "group_expiry", 86400) / 2)


class _EventStream:
    """The protocol shared by the SSE and WebSocket consumers (see the module docstring)."""

    # Provided by the Channels consumer this is mixed into.
    scope: dict[str, Any]
    channel_layer: Any
    channel_name: str

    user: User | None = None
    conversation_id: uuid.UUID | None = None
    last_event_id: int | None = None
    group: str | None = None
    # Live copies waiting for the pump. A list and a future, not an `asyncio.Queue`: a queue is
    # three deques (about 2.3 KB) on every idle stream; an empty list is 56 bytes.
    queue: list[LiveMessage] | None = None
    next_ping: float = 0.0  # monotonic: when the ticker pings this stream next
    next_renew: float = 0.0  # monotonic: when the ticker renews its slot next
    next_rejoin: float = 0.0  # monotonic: when the ticker adds the stream to its group again
    ending: bool = False  # the ticker has asked the consumer to end the stream
    pump: asyncio.Task | None = None
    last_seen: int = 0  # highest seq this stream has covered (sent, or filtered out)
    streaming: bool = False
    finished: bool = False
    expires_at: float = 0.0  # epoch seconds: the credential's expiry
    issued_at: float = 0.0  # epoch seconds: when the credential was issued (a later logout ends the stream)
    slot: str | None = None
    queued_bytes: int = 0
    server_send: Any = None  # the server's ASGI send callable (daphne flow control)

    async def _drain(self) -> None:
        """Wait while the connection holds too much unsent output (daphne only, see daphne_compat)."""
        waited = 0.0
        while (unsent := daphne_compat.unsent_bytes(self.server_send)) is not None and unsent > DRAIN_HIGH_WATER_BYTES:
            if waited >= DRAIN_GIVE_UP_SECONDS:
                raise _Stalled
            await asyncio.sleep(DRAIN_POLL_SECONDS)
            waited += DRAIN_POLL_SECONDS

    # Implemented by the concrete consumers.
    async def _write_event(self, seq: int, event_json: str) -> None:
        """Send one event, given as its JSON text (encoded once, whatever the number of streams)."""
        raise NotImplementedError

    async def _write_events(self, events: list[tuple[int, str]]) -> None:
        """A page of a replay, in order (one write where the protocol allows it)."""
        for seq, event_json in events:
            await self._write_event(seq, event_json)

    async def _write_ping(self) -> None:
        raise NotImplementedError

    async def _finish(self, reason: str) -> None:
        """End the stream; for END_REASONS first tell the client why."""
        raise NotImplementedError

    # Setup: parse and authorize.
    def _request(self) -> tuple[dict[bytes, bytes], dict[str, list[str]]]:
        headers = {name.lower(): value for name, value in self.scope.get("headers", [])}
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        return headers, query

    async def _stream_prepare(self) -> None:
        headers, query = self._request()
        credential = await stream_user(headers=headers, query=query)
        self.user = credential.user
        self.expires_at = credential.expires_at.timestamp()
        self.issued_at = credential.issued_at.timestamp()
        # The token check may use a cached user row (accounts.authentication): a stream is long, so
        # it starts only for a user who is active now and has not logged out or changed the password
        # since its credential was issued (one read per stream, none per event).
        if not await database_sync_to_async(selectors.user_may_stream)(
            user_id=self.user.id, issued_at=credential.issued_at
        ):
            raise CortexError(ErrorCode.INVALID_TOKEN, "The token is invalid or expired.")

        raw_id = headers.get(b"last-event-id", b"").decode("latin-1").strip() or (
            query.get("last_event_id", [""])[0].strip()
        )
        if raw_id:
            if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 19):
                raise CortexError(ErrorCode.INVALID_INPUT, "Last-Event-ID must be an event id of this stream.")
            self.last_event_id = int(raw_id)

        conversation_ids = query.get("conversation_id")
        if conversation_ids:
            try:
                conversation = await database_sync_to_async(conversation_get_for_user)(
                    user=self.user, conversation_id=conversation_ids[0]
                )
            except Http404:
                raise CortexError(ErrorCode.NOT_FOUND, "Conversation not found.") from None
            self.conversation_id = conversation.id

        # Last: every refusal above leaves no slot behind.
        self.slot = await slots.slot_acquire(user_id=self.user.id, holder=self.channel_name)
        if self.slot is None:
            limit = settings.CORTEX["STREAMS_PER_USER"]
            raise CortexError(
                ErrorCode.TOO_MANY_STREAMS, f"At most {limit} open streams per user; close one and retry."
            )

    # Streaming.
    async def _stream_subscribe(self) -> selectors.LogPosition:
        """Before the client sees a response: once it does, every later event reaches it."""
        assert self.user is not None
        self.queue = []
        self.group = user_group(self.user.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        _rechecks.add(self.user.id)
        return await database_sync_to_async(selectors.log_position)(user_id=self.user.id)

    def _stream_start(self, position: selectors.LogPosition) -> None:
        self.streaming = True
        now = time.monotonic()
        self.next_ping = now + settings.CORTEX["SSE_HEARTBEAT_SECONDS"]
        self.next_renew = now + settings.CORTEX["STREAM_RECHECK_SECONDS"]
        self.next_rejoin = now + _rejoin_seconds(self.channel_layer)
        self.pump = asyncio.create_task(self._pump(self._replay_then_deliver(position)))
        _ticker.add(self)
        shutdown.register(self)

    async def going_away(self) -> None:
        """The server is shutting down: end the stream so the client resumes elsewhere at once."""
        await self._stop_pump()
        await self._finish("shutdown")

    async def _replay_then_deliver(self, position: selectors.LogPosition) -> None:
        start = self.last_event_id
        reset_at = None
        if start is not None and not (position.floor <= start <= position.head):
            # Events after `start` are gone (retention), or the id is not from this log: the
            # client must refetch history; everything still retained follows.
            reset_at = start = position.floor
        if start is not None and position.head - start > settings.CORTEX["REPLAY_LIMIT_EVENTS"]:
            # Too far back to replay: refetch history, the stream goes on from the head.
            reset_at = start = position.head
        if reset_at is not None:
            await self._write_event(reset_at, json.dumps({"id": str(reset_at), "type": "reset"}))
        if start is None:
            self.last_seen = position.head
        else:
            self.last_seen = start
            await self._catch_up(position.head)
        await self._deliver_queued()

    async def _deliver_queued(self) -> None:
        """Write the waiting live copies in order, then return: an idle stream runs no task (its
        heartbeat, expiry and re-checks are the process's `_ticker`'s)."""
        assert self.queue is not None
        while self.queue:
            message = self.queue.pop(0)
            self.queued_bytes -= _approx_bytes(message)
            seq = message["seq"]
            if seq <= self.last_seen:
                continue
            if seq == self.last_seen + 1:
                self.last_seen = seq
                if self._wanted(message):
                    await self._write_event(seq, message["json"])
                    self.next_ping = time.monotonic() + settings.CORTEX["SSE_HEARTBEAT_SECONDS"]
            else:
                await self._catch_up(seq)

    async def _pump(self, work: Any) -> None:
        """Run the stream's writing (`work`, a coroutine) as its pump task; a failure ends the stream."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except _Stalled:
            logger.info("Stream of user %s stalled; disconnecting it", self.user.id if self.user else None)
            with contextlib.suppress(Exception):
                await self._end("overflow")
        except Exception:
            logger.exception("Stream of user %s failed", self.user.id if self.user else None)
            # Stop through our own channel so the consumer's dispatch loop ends the connection.
            with contextlib.suppress(Exception):
                await self.channel_layer.send(self.channel_name, {"type": "stream.stop"})

    async def tick(self, now: float, wall: float) -> None:
        """Called by the process's `_ticker` every TICK_SECONDS (0.5 s)."""
        if self.finished or not self.streaming or self.ending:
            return
        if self.expires_at - wall <= 0:
            self.ending = True  # one end message is enough
            await self._end("token_expired")
            return
        if self.user is not None and self.issued_at < _rechecks.revoked.get(self.user.id, -math.inf):
            self.ending = True
            await self._end("revoked")
            return
        if now >= self.next_renew:
            self.next_renew = now + settings.CORTEX["STREAM_RECHECK_SECONDS"]
            if self.slot is not None:
                await slots.slot_renew(key=self.slot, holder=self.channel_name)
        if now >= self.next_rejoin and self.group is not None:
            self.next_rejoin = now + _rejoin_seconds(self.channel_layer)
            await self.channel_layer.group_add(self.group, self.channel_name)
        if now >= self.next_ping and (self.pump is None or self.pump.done()):
            self.next_ping = now + settings.CORTEX["SSE_HEARTBEAT_SECONDS"]
            await self._write_ping()

    async def _end(self, reason: str) -> None:
        """From the pump: stop through our own channel, so the consumer's dispatch loop ends the
        connection (and drops whatever is still queued)."""
        await self.channel_layer.send(self.channel_name, {"type": "stream.stop", "reason": reason})

    def _wanted(self, message: LiveMessage) -> bool:
        return self.conversation_id is None or message["conversation_id"] == str(self.conversation_id)

    async def _catch_up(self, through: int) -> None:
        """Send the logged events in `(last_seen, through]`: all committed, per the seq invariant."""
        after = self.last_seen
        while True:
            page = await database_sync_to_async(selectors.event_page)(
                user_id=self.user.id,  # type: ignore[union-attr]  # set before streaming starts
                after=after,
                through=through,
                conversation_id=self.conversation_id,
                limit=REPLAY_PAGE,
            )
            if page:
                await self._write_events(page)
                after = page[-1][0]
            if len(page) < REPLAY_PAGE:
                break
        self.last_seen = through

    # Channel-layer handlers.
    async def dispatch(self, message: dict) -> None:
        # Channels runs close_old_connections in the sync thread before every handler: one hop
        # to that single thread per live event per stream, which starves the request views at
        # fan-out rates. This handler never touches the database (our only way in is
        # database_sync_to_async, which cleans up itself), so it skips the hop.
        if message["type"] == STREAM_EVENT:
            await self.stream_event(message)  # type: ignore[arg-type]
        else:
            await super().dispatch(message)  # type: ignore[misc]  # the consumer's, after this mixin

    async def stream_event(self, message: LiveMessage) -> None:
        if self.queue is None or self.finished:
            return
        size = _approx_bytes(message)
        try:
            if self.queue and (
                len(self.queue) >= settings.CORTEX["STREAM_BUFFER_EVENTS"]
                or self.queued_bytes + size > settings.CORTEX["STREAM_BUFFER_BYTES"]
            ):
                raise asyncio.QueueFull
            self.queue.append(message)
            self.queued_bytes += size
            if self.streaming and (self.pump is None or self.pump.done()):
                self.pump = asyncio.create_task(self._pump(self._deliver_queued()))
        except asyncio.QueueFull:
            logger.info("Stream of user %s fell behind; disconnecting it", self.user.id if self.user else None)
            await self._stop_pump()
            await self._finish("overflow")
            raise StopConsumer() from None

    async def stream_stop(self, message: dict) -> None:
        await self._stop_pump()
        await self._finish(message.get("reason", "error"))
        raise StopConsumer()

    async def stream_revoke(self, message: dict) -> None:
        """The user was deactivated or deleted, or logged out or changed the password `before` a
        moment (`streaming.services.streams_revoke`): end now, unless opened after that moment."""
        if self.finished:
            raise StopConsumer()
        before = message.get("before")
        if before is not None and self.issued_at >= before:
            return
        await self.stream_stop({"reason": "revoked"})

    # Teardown.
    async def _stop_pump(self) -> None:
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump

    async def _stream_cleanup(self) -> None:
        _ticker.discard(self)
        await self._stop_pump()
        if self.group is not None:
            group, self.group = self.group, None
            await self.channel_layer.group_discard(group, self.channel_name)
            _rechecks.remove(self.user.id)  # type: ignore[union-attr]  # a group means a user
        if self.slot is not None:
            slot, self.slot = self.slot, None
            with contextlib.suppress(Exception):
                await slots.slot_release(key=slot, holder=self.channel_name)

    async def _run(self, run: Any, scope: dict, receive: Any, send: Any) -> None:
        self.server_send = send
        try:
            await run(scope, receive, send)
        except asyncio.CancelledError:
            # The server is shutting down (daphne cancels every application): say goodbye so
            # clients reconnect elsewhere at once.
            with contextlib.suppress(Exception):
                await self._stop_pump()
                await self._finish("shutdown")
            raise
        finally:
            await self._stream_cleanup()


class EventStreamConsumer(_EventStream, AsyncHttpConsumer):
    """`GET /output/stream`: Server-Sent Events."""

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self._run(super().__call__, scope, receive, send)

    async def http_request(self, message: dict) -> None:
        if message.get("more_body") or self.streaming:
            return
        try:
            if self.scope["method"] not in ("GET",):
                raise CortexError(ErrorCode.METHOD_NOT_ALLOWED, f'Method "{self.scope["method"]}" not allowed.')
            await self._stream_prepare()
        except CortexError as err:
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
            if err.status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="api"'))
            if err.status == 405:
                headers.append((b"allow", b"GET"))
            if err.status == 429:
                headers.append((b"retry-after", str(STREAMS_FULL_RETRY_AFTER).encode()))
            await self.send_response(err.status, json.dumps(err.body()).encode(), headers=headers)
            self.finished = True
            raise StopConsumer() from None
        position = await self._stream_subscribe()
        await self.send_headers(
            status=200,
            headers=[
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        )
        self.streaming = True  # from here on the response must be ended properly
        await self.send_body(f"retry: {settings.CORTEX['SSE_RETRY_MS']}\n\n".encode(), more_body=True)
        self._stream_start(position)

    async def _write_event(self, seq: int, event_json: str) -> None:
        await self._drain()
        await self.send_body(f"id: {seq}\ndata: {event_json}\n\n".encode(), more_body=True)

    async def _write_events(self, events: list[tuple[int, str]]) -> None:
        # Chunks of about 64 KB, each after a drain: a replay of big events never piles up unsent.
        chunk: list[str] = []
        size = 0
        for seq, event_json in events:
            frame = f"id: {seq}\ndata: {event_json}\n\n"
            chunk.append(frame)
            size += len(frame)
            if size >= WRITE_CHUNK_BYTES:
                await self._drain()
                await self.send_body("".join(chunk).encode(), more_body=True)
                chunk, size = [], 0
        if chunk:
            await self._drain()
            await self.send_body("".join(chunk).encode(), more_body=True)

    async def _write_ping(self) -> None:
        await self.send_body(b": ping\n\n", more_body=True)

    async def _finish(self, reason: str) -> None:
        if self.streaming and not self.finished:
            self.finished = True
            final = b""
            if reason in END_REASONS:
                final = f"data: {json.dumps({'type': 'end', 'reason': reason})}\n\n".encode()
            await self.send_body(final, more_body=False)

    async def http_disconnect(self, message: dict) -> None:
        self.finished = True  # nothing may be sent any more
        await super().http_disconnect(message)


class EventSocketConsumer(_EventStream, AsyncWebsocketConsumer):
    """`GET /output/ws`: the same event JSON objects as text frames; clients only listen."""

    accepted: bool = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self._run(super().__call__, scope, receive, send)

    async def connect(self) -> None:
        try:
            await self._stream_prepare()
        except CortexError as err:
            # Accept first: a close before the handshake is an HTTP 403 and the code is lost.
            await self.accept()
            await self.send(text_data=json.dumps(err.body()))
            self.finished = True
            await self.close(code=WS_CLOSE_TRY_LATER if err.status == 429 else WS_CLOSE_POLICY)
            return
        position = await self._stream_subscribe()
        await self.accept()
        self.accepted = True
        self._stream_start(position)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen; anything they send is ignored."""

    async def _write_event(self, seq: int, event_json: str) -> None:
        await self._drain()
        await self.send(text_data=event_json)

    async def _write_ping(self) -> None:
        """Protocol-level pings are the server's (daphne/uvicorn ping idle WebSockets)."""

    async def _finish(self, reason: str) -> None:
        if self.accepted and not self.finished:
            self.finished = True
            if reason in END_REASONS:
                await self.send(text_data=json.dumps({"type": "end", "reason": reason}))
            code = {"shutdown": WS_CLOSE_GOING_AWAY, "overflow": WS_CLOSE_TRY_LATER, **END_REASONS}.get(reason, 1011)
            await self.close(code=code)

    async def websocket_disconnect(self, message: dict) -> None:
        self.finished = True
        await super().websocket_disconnect(message)
