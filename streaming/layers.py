"""The channel layer of a single process (the embedded default, when REDIS_URL is unset).

Channels' `InMemoryChannelLayer` sweeps every channel queue and every group membership for
expired entries on each `receive` and each `group_send`: with N open streams, every live event
costs O(N) for the publisher, and every stream's wait for its next message costs O(N) again, so
fan-out cost grows with the square of the number of streams. This layer is the same layer with
that sweep run at most once per `SWEEP_SECONDS`: expiry (of messages nobody received, and of old
group memberships) is a safety net measured in minutes, so a second of lateness changes nothing.

Each channel's messages also wait in a `_ChannelQueue` (a list and one waiter) instead of an
`asyncio.Queue` (three deques, about 2.3 KB).

The streams' fan-out (`streaming.hub`): an open stream registers a *writer* for its channel
(`writer_add`). A message for that channel (`send`, or `group_send` to a group it is in) is handed
to the writer at once, in the sender's task: no copy, no queue, no wake-up of a task per stream.
The writer writes the event to its socket there and then, or buffers it (bounded) when its socket
is busy. A writer's group memberships do not expire (it leaves its groups when its stream closes),
so a stream needs no re-join timer. Channels without a writer (`/readyz`'s round trip, tests)
work as in Channels' layer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

SWEEP_SECONDS = 1.0

logger = logging.getLogger(__name__)

Writer = Callable[[dict], None]


class _ChannelQueue:
    """What `InMemoryChannelLayer` needs of a queue, for one receiver (a channel has one)."""

    __slots__ = ("_queue", "_waiter", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self._queue: list[Any] = []  # `_queue[0]` is what the expiry sweep looks at
        self._waiter: asyncio.Future | None = None
        self.maxsize = maxsize

    def qsize(self) -> int:
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    def put_nowait(self, item: Any) -> None:
        if self.maxsize and len(self._queue) >= self.maxsize:
            raise asyncio.QueueFull
        self._queue.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def get_nowait(self) -> Any:
        if not self._queue:
            raise asyncio.QueueEmpty
        return self._queue.pop(0)

    async def get(self) -> Any:
        while not self._queue:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.pop(0)


class ProcessChannelLayer(InMemoryChannelLayer):
    _next_sweep = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writers: dict[str, Writer] = {}  # channel -> the stream's writer, called with each message

    def writer_add(self, channel: str, writer: Writer) -> None:
        self.require_valid_channel_name(channel)
        self.writers[channel] = writer

    def writer_discard(self, channel: str) -> None:
        self.writers.pop(channel, None)

    def _hand(self, channel: str, message: dict) -> bool:
        """Hand `message` to the channel's writer, if it has one (False: it has none)."""
        writer = self.writers.get(channel)
        if writer is None:
            return False
        try:
            writer(message)
        except Exception:  # one stream's failure is never another's
            logger.exception("A stream's writer failed on %s", message.get("type"))
        return True

    def group_send_nowait(self, group: str, message: dict) -> None:
        """`group_send` without awaiting: each member's writer gets the message now (in order, in
        this task); a member without one gets it queued (dropped when full, as in Channels)."""
        self._clean_expired()
        members = self.groups.get(group)
        if not members:
            return
        for channel in list(members):
            if not self._hand(channel, message):
                try:
                    self._queue(channel).put_nowait((time.time() + self.expiry, deepcopy(message)))
                except asyncio.QueueFull:
                    pass

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        # Channels' layer makes a task per member (and awaits them all): here nothing waits.
        self.group_send_nowait(group, message)

    def _queue(self, channel: str) -> _ChannelQueue:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = _ChannelQueue(self.get_capacity(channel))
        return queue

    # `InMemoryChannelLayer.send` and `.receive`, with the lighter queue.
    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        if self._hand(channel, message):
            return
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        # Channels' sweep, except that a writer's memberships never expire.
        wall = time.time()
        for channel, queue in list(self.channels.items()):
            while not queue.empty() and queue._queue[0][0] < wall:
                queue.get_nowait()
                self._remove_from_groups(channel)
                if queue.empty():
                    self.channels.pop(channel, None)
        timeout = int(wall) - self.group_expiry
        for members in self.groups.values():
            for name, joined in list(members.items()):
                if joined and joined < timeout and name not in self.writers:
                    members.pop(name, None)
