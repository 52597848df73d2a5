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
`STREAM_BUFFER_EVENTS` is disconnected and resumes with its last event id. Group membership is
discarded on every exit path (`__call__`'s finally).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http import Http404

from accounts.models import User
from common.errors import CortexError, ErrorCode
from streaming import daphne_compat, selectors
from streaming.auth import stream_user
from streaming.services import STREAM_EVENT, LiveMessage, user_group
from workspaces.selectors import conversation_get_for_user

logger = logging.getLogger(__name__)

REPLAY_PAGE = 500
WS_CLOSE_POLICY = 1008  # auth failures, forbidden or malformed requests
WS_CLOSE_GOING_AWAY = 1001  # server shutdown
WS_CLOSE_TRY_LATER = 1013  # fell behind: resume with the last event id


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
    queue: asyncio.Queue[LiveMessage] | None = None
    pump: asyncio.Task | None = None
    last_seen: int = 0  # highest seq this stream has covered (sent, or filtered out)
    streaming: bool = False
    finished: bool = False

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
        raise NotImplementedError

    # Setup: parse and authorize.
    def _request(self) -> tuple[dict[bytes, bytes], dict[str, list[str]]]:
        headers = {name.lower(): value for name, value in self.scope.get("headers", [])}
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        return headers, query

    async def _stream_prepare(self) -> None:
        headers, query = self._request()
        self.user = await stream_user(headers=headers, query=query)

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

    # Streaming.
    async def _stream_subscribe(self) -> selectors.LogPosition:
        """Before the client sees a response: once it does, every later event reaches it."""
        assert self.user is not None
        self.queue = asyncio.Queue(maxsize=settings.CORTEX["STREAM_BUFFER_EVENTS"])
        self.group = user_group(self.user.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        return await database_sync_to_async(selectors.log_position)(user_id=self.user.id)

    def _stream_start(self, position: selectors.LogPosition) -> None:
        self.streaming = True
        self.pump = asyncio.create_task(self._pump(position))

    async def _pump(self, position: selectors.LogPosition) -> None:
        try:
            start = self.last_event_id
            if start is not None and not (position.floor <= start <= position.head):
                # Events after `start` are gone (retention), or the id is not from this log: the
                # client must refetch history; everything still retained follows.
                await self._write_event(position.floor, json.dumps({"id": str(position.floor), "type": "reset"}))
                start = position.floor
            if start is None:
                self.last_seen = position.head
            else:
                self.last_seen = start
                await self._catch_up(position.head)
            heartbeat = settings.CORTEX["SSE_HEARTBEAT_SECONDS"]
            while True:
                try:
                    message = await asyncio.wait_for(self.queue.get(), timeout=heartbeat)  # type: ignore[union-attr]
                except TimeoutError:
                    await self._write_ping()
                    continue
                seq = message["seq"]
                if seq <= self.last_seen:
                    continue
                if seq == self.last_seen + 1:
                    self.last_seen = seq
                    if self._wanted(message):
                        await self._write_event(seq, message["json"])
                else:
                    await self._catch_up(seq)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Stream of user %s failed", self.user.id if self.user else None)
            # Stop through our own channel so the consumer's dispatch loop ends the connection.
            with contextlib.suppress(Exception):
                await self.channel_layer.send(self.channel_name, {"type": "stream.stop"})

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
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            logger.info("Stream of user %s fell behind; disconnecting it", self.user.id if self.user else None)
            await self._stop_pump()
            await self._finish("overflow")
            raise StopConsumer() from None

    async def stream_stop(self, message: dict) -> None:
        await self._stop_pump()
        await self._finish("error")
        raise StopConsumer()

    # Teardown.
    async def _stop_pump(self) -> None:
        if self.pump is not None and not self.pump.done():
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump

    async def _stream_cleanup(self) -> None:
        await self._stop_pump()
        if self.group is not None:
            group, self.group = self.group, None
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _run(self, run: Any, scope: dict, receive: Any, send: Any) -> None:
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
        await self.send_body(f"id: {seq}\ndata: {event_json}\n\n".encode(), more_body=True)

    async def _write_events(self, events: list[tuple[int, str]]) -> None:
        frames = "".join(f"id: {seq}\ndata: {event_json}\n\n" for seq, event_json in events)
        await self.send_body(frames.encode(), more_body=True)

    async def _write_ping(self) -> None:
        await self.send_body(b": ping\n\n", more_body=True)

    async def _finish(self, reason: str) -> None:
        if self.streaming and not self.finished:
            self.finished = True
            await self.send_body(b"", more_body=False)

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
            await self.close(code=WS_CLOSE_POLICY)
            return
        position = await self._stream_subscribe()
        await self.accept()
        self.accepted = True
        daphne_compat.open_sockets.add(self)
        self._stream_start(position)

    async def going_away(self) -> None:
        """The server is shutting down: close with 1001 so the client reconnects elsewhere."""
        await self._stop_pump()
        await self._finish("shutdown")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen; anything they send is ignored."""

    async def _write_event(self, seq: int, event_json: str) -> None:
        await self.send(text_data=event_json)

    async def _write_ping(self) -> None:
        """Protocol-level pings are the server's (daphne/uvicorn ping idle WebSockets)."""

    async def _finish(self, reason: str) -> None:
        if self.accepted and not self.finished:
            self.finished = True
            code = {"shutdown": WS_CLOSE_GOING_AWAY, "overflow": WS_CLOSE_TRY_LATER}.get(reason, 1011)
            await self.close(code=code)

    async def websocket_disconnect(self, message: dict) -> None:
        self.finished = True
        await super().websocket_disconnect(message)
