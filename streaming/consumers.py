"""`GET /output/stream` (SSE) and `GET /output/ws` (WebSocket): one user's live event log.

The SSE stream is a plain ASGI application (`EventStream.asgi`: no Channels consumer, its object
answers the server's `receive` and `send` itself); the WebSocket is a Channels consumer
(`EventSocketConsumer`). Both parse, authorize and then follow the same protocol (`_EventStream`):

1. Join the user's channel-layer group *first*, then read the log head from the database. Every
   event committed after that read is published after this subscription, so it arrives live.
2. On resume, replay `(last_event_id, head]` from the durable log, then go live.
3. Live copies carry the recipient's gap-free seq. A copy at or below what the stream has already
   covered is a duplicate (the seam between replay and live) and is dropped. A copy that skips
   ahead means an earlier one is late or was dropped by the layer (publications of concurrent
   commits may arrive out of order; channels_redis drops over capacity): the stream fetches the
   missing range from the database, where it is committed already, before going on.

Fan-out (`streaming.hub`): the stream registers a writer (`_deliver`) for its user's group; the
publisher's task calls it with each live copy, and it writes the event to the socket there and
then. Only when that write cannot finish at once (the client reads slowly), or a gap must be
fetched from the log, or the replay runs, does the stream get a task of its own (`pump`), which
ends once it has caught up; meanwhile live copies wait in a bounded buffer. A client that falls
behind by more than `STREAM_BUFFER_EVENTS` events or about `STREAM_BUFFER_BYTES` is disconnected
and resumes with its last event id (under daphne, which buffers whatever is written,
`daphne_compat` cuts off a connection whose socket buffer passes the same byte bound). An idle
stream is its connection's own task waiting for the client, and a few entries in shared tables:
no task, queue or timer of its own (the heartbeat, expiry and slot renewal are the process's
`_ticker` wheel's, the re-check of its user `_rechecks`'). Group membership and the stream's slot
(`streaming.slots`, at most `STREAMS_PER_USER`) are released on every exit path (`_run`'s finally).

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

Whatever ends a stream from outside its own task (the writer, the ticker, a revocation) records
the reason and cancels the connection's task (`_end`); the task, waiting for the client, ends the
stream itself (`_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import logging
import math
import time
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from channels import DEFAULT_CHANNEL_LAYER
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import Http404

from accounts.models import User
from common.db import db_call
from common.errors import CortexError, ErrorCode
from common.web import daphne_compat, shutdown
from common.web.asgi import Observation, ObservedApp
from streaming import selectors, slots
from streaming.auth import stream_user
from streaming.hub import hub
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
    which delayed their heartbeats). A user found inactive or deleted, or with a logout or password
    change not yet acted on, gets a `stream.revoke` handed to their streams in this process (each
    process re-checks its own); `revoked` remembers what was sent (infinity: inactive or deleted;
    else the last logout or password change), so it is sent once. The immediate path is
    `streams_revoke`'s message."""

    def __init__(self) -> None:
        self.users: dict[uuid.UUID, int] = {}  # user id -> open streams in this process
        self.groups: dict[uuid.UUID, str] = {}  # user id -> their group's name, one string for all their streams
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
            self.revoked.pop(user_id, None)
            self.groups.pop(user_id, None)
        if not self.users and self.task is not None:  # no stream left: nothing to re-check
            self.task.cancel()
            self.task = None

    def group(self, user_id: uuid.UUID) -> str:
        """The user's group name (`user_group`), shared by their streams in this process while any is open."""
        name = self.groups.get(user_id)
        if name is None:
            name = self.groups[user_id] = user_group(user_id)
        return name

    async def _run(self) -> None:
        while self.users:
            await asyncio.sleep(settings.CORTEX["STREAM_RECHECK_SECONDS"])
            try:
                active = await db_call(selectors.users_may_stream)(user_ids=list(self.users))
            except Exception:
                logger.exception("Re-checking streaming users failed; trying again next period")
                continue
            revoked: dict[uuid.UUID, float] = {}
            for user_id in self.users:
                if user_id not in active:
                    revoked[user_id] = math.inf
                elif (ended := active[user_id]) is not None:
                    revoked[user_id] = ended.timestamp()
            fanout = hub()
            for user_id, before in revoked.items():
                if self.revoked.get(user_id) != before:  # end their streams in this process now
                    message = (
                        {"type": STREAM_REVOKE} if before == math.inf else {"type": STREAM_REVOKE, "before": before}
                    )
                    fanout.deliver(user_group(user_id), message)
            self.revoked = revoked


_rechecks = _Rechecks()


class _Ticker:
    """One task per process for what every open stream needs now and then: the heartbeat (a
    `: ping` once a stream has been quiet for `SSE_HEARTBEAT_SECONDS`), the end at its
    credential's expiry, its slot's renewal, and the hub's group renewal. A timing wheel: each
    stream sits in the slot of its next deadline, so a tick looks only at the streams due then,
    not at every open stream. Per-stream timers and a waiting task per idle stream cost memory on
    every open connection; this costs one list entry."""

    def __init__(self) -> None:
        self.slots: dict[int, list[Any]] = {}  # tick number -> streams due then
        self.count = 0
        self.task: asyncio.Task | None = None

    def add(self, stream: Any, at: float) -> None:
        self.count += 1
        self.schedule(stream, at)
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._run(), name="cortex-stream-ticker")

    def schedule(self, stream: Any, at: float) -> None:
        self.slots.setdefault(math.ceil(at / TICK_SECONDS), []).append(stream)

    def discard(self) -> None:
        """A stream has ended (it is dropped from its slot when the slot comes due)."""
        self.count -= 1
        if self.count <= 0 and self.task is not None:
            self.count = 0
            self.slots.clear()
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while self.count > 0:
            await asyncio.sleep(TICK_SECONDS)
            now, wall = time.monotonic(), time.time()
            try:
                await hub().renew(now)
            except Exception:
                logger.exception("Renewing the streams' groups failed")
            current = math.floor(now / TICK_SECONDS)
            for key in sorted(key for key in self.slots if key <= current):
                for stream in self.slots.pop(key, ()):
                    try:
                        await stream.tick(now, wall)
                    except Exception:  # a stream whose client is gone: its own teardown follows
                        logger.debug("tick of a stream failed", exc_info=True)


_ticker = _Ticker()
TICK_SECONDS = 0.5


class _EventStream:
    """The protocol shared by the SSE and WebSocket consumers (see the module docstring)."""

    # Provided by the Channels consumer this is mixed into.
    scope: dict[str, Any]
    channel_layer: Any
    channel_layer_alias: str
    channel_name: str
    base_send: Any

    user: User | None = None
    conversation_id: str | None = None
    last_event_id: int | None = None
    group: str | None = None
    # Live copies waiting for the pump (only while it runs). A list, not an `asyncio.Queue`: a queue
    # is three deques (about 2.3 KB) on every stream; an empty list is 56 bytes.
    queue: list[LiveMessage] | None = None
    next_ping: float = 0.0  # monotonic: when the ticker pings this stream next
    next_renew: float = 0.0  # monotonic: when the ticker renews its slot next
    heartbeat: float = 15.0  # SSE_HEARTBEAT_SECONDS when the stream opened
    pump: asyncio.Task | None = None  # the stream's own writing, only while it is behind
    task: asyncio.Task | None = None  # the connection's task (the server's), waiting for the client
    end_reason: str | None = None  # why the stream is being ended from outside its task
    cancelled_by_us: bool = False
    closing: bool = False  # the connection's task is tearing the stream down
    ticking: bool = False
    last_seen: int = 0  # highest seq this stream has covered (sent, or filtered out)
    streaming: bool = False  # the response has begun: it must be ended properly
    live: bool = False  # the replay has been started: live copies go to the socket or the pump
    finished: bool = False
    expires_at: float = 0.0  # epoch seconds: the credential's expiry
    issued_at: float = 0.0  # epoch seconds: when the credential was issued (a later logout ends the stream)
    slot: str | None = None
    queued_bytes: int = 0
    observation: Observation | None = None  # when the stream observes itself (`_run`)
    daphne: bool = False

    async def _drain(self) -> None:
        """Wait while the connection holds too much unsent output (daphne only, see daphne_compat)."""
        if not self.daphne:
            return
        waited = 0.0
        while (unsent := daphne_compat.unsent_bytes(self.base_send)) is not None and unsent > DRAIN_HIGH_WATER_BYTES:
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

    async def dispatch(self, message: dict) -> None:
        # Channels runs close_old_connections in the sync thread before every handler: a hop to
        # that one thread for each message. These handlers reach the database only through
        # db_call, which does it there itself; a frame a client sends on its
        # WebSocket is ignored.
        if message["type"] == "websocket.receive":
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def _end(self, reason: str) -> None:
        """End the stream from outside the connection's task: that task, waiting for the client,
        is cancelled and ends the stream (`_run`); before the stream is live, when it goes live."""
        if self.end_reason is not None or self.finished or self.closing:
            return
        self.end_reason = reason
        if self.streaming:
            self._cancel_task()

    def _cancel_task(self) -> None:
        if self.task is not None and not self.task.done() and not self.cancelled_by_us:
            self.cancelled_by_us = True
            self.task.cancel()

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
                conversation = await db_call(conversation_get_for_user)(
                    user=self.user, conversation_id=conversation_ids[0]
                )
            except Http404:
                raise CortexError(ErrorCode.NOT_FOUND, "Conversation not found.") from None
            self.conversation_id = str(conversation.id)

        # Last: every refusal above leaves no slot behind.
        self.slot = await slots.slot_acquire(user_id=self.user.id, holder=self.channel_name)
        if self.slot is None:
            limit = settings.CORTEX["STREAMS_PER_USER"]
            raise CortexError(
                ErrorCode.TOO_MANY_STREAMS, f"At most {limit} open streams per user; close one and retry."
            )

    def _open(self) -> asyncio.Task[selectors.LogPosition]:
        """Authorize, take a slot and subscribe (`_stream_prepare`, `_stream_subscribe`) in a task of
        its own, in a copy of the connection's context, awaited by the connection's task. The reads
        go through asgiref (`db_call`), which copies what its thread set in context variables
        (its deadlock flag, Django's `Local`s) back into the caller's context: in the connection's
        own, that is a few hundred bytes kept for the stream's whole life. The task starts eagerly
        (no extra turn of the loop) and is gone once the stream is open."""
        return asyncio.Task(
            self._prepare_and_subscribe(),
            loop=asyncio.get_running_loop(),
            context=contextvars.copy_context(),
            eager_start=True,
        )

    async def _prepare_and_subscribe(self) -> selectors.LogPosition:
        await self._stream_prepare()
        return await self._stream_subscribe()

    # Streaming.
    async def _stream_subscribe(self) -> selectors.LogPosition:
        """Before the client sees a response: once it does, every later event reaches it. Then, in
        one read: the token check may use a cached user row (accounts.authentication), and a stream
        is long, so it starts only for a user who is active now and has not logged out or changed
        the password since its credential was issued; and the log's head, read after joining."""
        assert self.user is not None
        self.queue = []
        _rechecks.add(self.user.id)  # before the group: `_stream_cleanup` removes the user once a group is set
        self.group = _rechecks.group(self.user.id)
        await hub(self.channel_layer).join(self.group, self.channel_name, self._deliver)
        position = await db_call(selectors.position_if_may_stream)(
            user_id=self.user.id, issued_at=datetime.fromtimestamp(self.issued_at, tz=UTC)
        )
        if position is None:  # the group and the slot are released by `_stream_cleanup`
            raise CortexError(ErrorCode.INVALID_TOKEN, "The token is invalid or expired.")
        return position

    def _stream_start(self, position: selectors.LogPosition) -> None:
        self.streaming = True
        now = time.monotonic()
        self.heartbeat = settings.CORTEX["SSE_HEARTBEAT_SECONDS"]
        self.next_ping = now + self.heartbeat
        self.next_renew = now + settings.CORTEX["STREAM_RECHECK_SECONDS"]
        self.daphne = daphne_compat.unsent_bytes(self.base_send) is not None
        self.live = True
        self.pump = asyncio.create_task(self._pump(self._replay_then_deliver(position)))
        self.ticking = True
        _ticker.add(self, self._next_deadline(now, time.time()))
        shutdown.register(self)
        if self.end_reason is not None:  # asked to end while it was being set up
            self._cancel_task()

    def _next_deadline(self, now: float, wall: float) -> float:
        return min(self.next_ping, self.next_renew, now + max(0.0, self.expires_at - wall))

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
        """Write the waiting live copies in order, then return: an idle stream runs no task."""
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
                    self.next_ping = time.monotonic() + self.heartbeat
            else:
                await self._catch_up(seq)

    async def _write_live(self, seq: int, event_json: str) -> None:
        await self._write_event(seq, event_json)
        self.next_ping = time.monotonic() + self.heartbeat
        await self._deliver_queued()  # what came while this write waited, if it had to

    def _write_soon(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (writes to the socket) in the caller's task as far as it goes without waiting
        (`eager_start`: a write to a socket with room finishes there and then); if it must wait, it
        goes on as the stream's pump, and live copies queue behind it."""
        task = asyncio.Task(self._pump(work), loop=asyncio.get_running_loop(), eager_start=True)
        if not task.done():
            self.pump = task

    async def _pump(self, work: Coroutine[Any, Any, None]) -> None:
        """Run the stream's writing (`work`, a coroutine); a failure ends the stream."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except _Stalled:
            logger.info("Stream of user %s stalled; disconnecting it", self.user.id if self.user else None)
            self._end("overflow")
        except Exception:
            if not self.finished:
                logger.exception("Stream of user %s failed", self.user.id if self.user else None)
            self._end("error")
        finally:
            if self.pump is asyncio.current_task():
                self.pump = None  # a finished task kept on every idle stream is half a kilobyte

    def _deliver(self, message: dict) -> None:
        """The stream's writer (`streaming.hub`): called in the publisher's task with each message
        to the user's group; never waits."""
        kind = message.get("type")
        if kind == STREAM_EVENT:
            self._offer(message)  # type: ignore[arg-type]
        elif kind == STREAM_REVOKE:
            self._revoke(message)
        elif kind == "stream.stop":
            self._end(message.get("reason", "error"))

    def _offer(self, message: LiveMessage) -> None:
        if self.queue is None or self.finished or self.end_reason is not None:
            return
        if not self.live or (self.pump is not None and not self.pump.done()) or self.queue:
            self._enqueue(message)  # the pump (the replay, a slow write, a gap) takes it
            if self.live and self.queue and (self.pump is None or self.pump.done()):
                self._write_soon(self._deliver_queued())
            return
        seq = message["seq"]
        if seq <= self.last_seen:
            return  # a duplicate (the seam between replay and live)
        if seq == self.last_seen + 1:
            self.last_seen = seq
            if self._wanted(message):
                self._write_soon(self._write_live(seq, message["json"]))
            return
        # An earlier copy is late or was dropped: the gap is fetched from the log first.
        self._enqueue(message)
        self._write_soon(self._deliver_queued())

    def _enqueue(self, message: LiveMessage) -> None:
        assert self.queue is not None
        size = _approx_bytes(message)
        if self.queue and (
            len(self.queue) >= settings.CORTEX["STREAM_BUFFER_EVENTS"]
            or self.queued_bytes + size > settings.CORTEX["STREAM_BUFFER_BYTES"]
        ):
            logger.info("Stream of user %s fell behind; disconnecting it", self.user.id if self.user else None)
            self.queue.clear()
            self.queued_bytes = 0
            self._end("overflow")
            return
        self.queue.append(message)
        self.queued_bytes += size

    def _revoke(self, message: dict) -> None:
        """The user was deactivated or deleted, or logged out or changed the password `before` a
        moment (`streaming.services.streams_revoke`): end now, unless opened after that moment."""
        before = message.get("before")
        if before is not None and self.issued_at >= before:
            return
        self._end("revoked")

    async def tick(self, now: float, wall: float) -> None:
        """Called by the process's `_ticker` when this stream's next deadline has come."""
        if self.finished or not self.streaming or self.end_reason is not None or self.closing:
            return  # not scheduled again
        if self.expires_at - wall <= 0:
            self._end("token_expired")
            return
        if now >= self.next_renew:
            self.next_renew = now + settings.CORTEX["STREAM_RECHECK_SECONDS"]
            if self.slot is not None:
                await slots.slot_renew(key=self.slot, holder=self.channel_name)
        if now >= self.next_ping:
            self.next_ping = now + self.heartbeat
            if self.pump is None or self.pump.done():
                self._write_soon(self._write_ping())
        if not (self.finished or self.closing):
            _ticker.schedule(self, self._next_deadline(now, wall))

    def _wanted(self, message: LiveMessage) -> bool:
        return self.conversation_id is None or message["conversation_id"] == self.conversation_id

    async def _catch_up(self, through: int) -> None:
        """Send the logged events in `(last_seen, through]`: all committed, per the seq invariant."""
        after = self.last_seen
        while True:
            page = await db_call(selectors.event_page)(
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

    # Teardown.
    async def _stop_pump(self) -> None:
        if self.pump is not None and not self.pump.done() and self.pump is not asyncio.current_task():
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump

    async def _stream_cleanup(self) -> None:
        self.closing = True
        if self.ticking:
            self.ticking = False
            _ticker.discard()
        await self._stop_pump()
        if self.group is not None:
            group, self.group = self.group, None
            with contextlib.suppress(Exception):
                await hub(self.channel_layer).leave(group, self.channel_name)
            _rechecks.remove(self.user.id)  # type: ignore[union-attr]  # a group means a user
        if self.slot is not None:
            slot, self.slot = self.slot, None
            with contextlib.suppress(Exception):
                await slots.slot_release(key=slot, holder=self.channel_name)

    # The connection.
    async def _run(self, scope: dict, receive: Any, send: Any, observed: ObservedApp | None = None) -> None:
        """The connection's task: Channels' `AsyncConsumer.__call__` without its second task. It
        waits for the client's messages only (live copies come through `_deliver`); ended from
        outside (`_end`), it ends the stream itself. One frame: an idle stream is suspended here
        and in the server's `receive`, nothing else. `observed`: the stream observes itself
        (`common.web.asgi.Observation`) instead of running under `ObservedApp`."""
        if observed is not None:
            self.observation = Observation(observed, scope)
        try:
            self.scope = scope
            self.channel_layer = get_channel_layer(self.channel_layer_alias)
            self.channel_name = await self.channel_layer.new_channel()
            self.base_send = send
            self.task = asyncio.current_task()
            try:
                while True:
                    try:
                        await self.dispatch(await receive())
                    except asyncio.CancelledError:
                        if not self.cancelled_by_us or self.task is None or self.task.uncancel() > 0:
                            raise
                        self.cancelled_by_us = False
                        await self._stop_pump()
                        await self._finish(self.end_reason or "error")
                        return
            except StopConsumer:
                pass
        except asyncio.CancelledError:
            # The server is shutting down (daphne cancels every application): say goodbye so
            # clients reconnect elsewhere at once.
            with contextlib.suppress(Exception):
                await self._stop_pump()
                await self._finish("shutdown")
            raise
        finally:
            try:
                await self._stream_cleanup()
            finally:
                if self.observation is not None:
                    self.observation.finish()


class EventStream(_EventStream):
    """`GET /output/stream`: Server-Sent Events, as a plain ASGI application (`EventStream.asgi`):
    one object per connection, no Channels consumer under it. The connection's task waits for the
    client (`_run`), the response goes straight to the server's `send`; everything else is the
    shared protocol (`_EventStream`): the same authentication, slot, hub writer, replay, ticker
    wheel, re-checks, buffers and error envelope as the WebSocket's."""

    channel_layer_alias = DEFAULT_CHANNEL_LAYER

    @classmethod
    def asgi(cls) -> Any:
        """The stream as an ASGI application under `ObservedApp` (Channels' URL router serves it)."""

        @inspect.markcoroutinefunction
        def stream_app(scope: dict, receive: Any, send: Any) -> Any:
            return cls()._run(scope, receive, send)  # no frame of its own

        return stream_app

    @classmethod
    def direct(cls, scope: dict, receive: Any, send: Any, observed: ObservedApp) -> Coroutine[Any, Any, None]:
        """The stream as the outermost application, observing itself (`streaming.routing.StreamsFirst`)."""
        return cls()._run(scope, receive, send, observed)

    async def dispatch(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.request":
            await self.http_request(message)
        elif kind == "http.disconnect":
            self.finished = True  # nothing may be sent any more
            raise StopConsumer()

    async def send_headers(self, *, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        message = {"type": "http.response.start", "status": status, "headers": headers}
        await self.base_send(message if self.observation is None else self.observation.sent(message))

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        message = {"type": "http.response.body", "body": body, "more_body": more_body}
        await self.base_send(message if self.observation is None else self.observation.sent(message))

    async def http_request(self, message: dict) -> None:
        if message.get("more_body") or self.streaming:
            return
        try:
            if self.scope["method"] not in ("GET",):
                raise CortexError(ErrorCode.METHOD_NOT_ALLOWED, f'Method "{self.scope["method"]}" not allowed.')
            position = await self._open()
        except CortexError as err:
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
            if err.status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="api"'))
            if err.status == 405:
                headers.append((b"allow", b"GET"))
            if err.status == 429:
                headers.append((b"retry-after", str(STREAMS_FULL_RETRY_AFTER).encode()))
            await self.send_headers(status=err.status, headers=headers)
            await self.send_body(json.dumps(err.body()).encode())
            self.finished = True
            raise StopConsumer() from None
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


class EventSocketConsumer(_EventStream, AsyncWebsocketConsumer):
    """`GET /output/ws`: the same event JSON objects as text frames; clients only listen."""

    accepted: bool = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self._run(scope, receive, send)

    async def connect(self) -> None:
        try:
            position = await self._open()
        except CortexError as err:
            # Accept first: a close before the handshake is an HTTP 403 and the code is lost.
            await self.accept()
            await self.send(text_data=json.dumps(err.body()))
            self.finished = True
            await self.close(code=WS_CLOSE_TRY_LATER if err.status == 429 else WS_CLOSE_POLICY)
            return
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
