"""The channel layer of a single process (the embedded default, when REDIS_URL is unset).

Channels' `InMemoryChannelLayer` sweeps every channel queue and every group membership for
expired entries on each `receive` and each `group_send`: with N open streams, every live event
costs O(N) for the publisher, and every stream's wait for its next message costs O(N) again, so
fan-out cost grows with the square of the number of streams. This layer is the same layer with
that sweep run at most once per `SWEEP_SECONDS`: expiry (of messages nobody received, and of old
group memberships) is a safety net measured in minutes, so a second of lateness changes nothing.

Each channel's messages also wait in a `_ChannelQueue` (a list and one waiter) instead of an
`asyncio.Queue` (three deques, about 2.3 KB): every idle stream holds one while it waits.
"""

from __future__ import annotations

import asyncio
import time
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

SWEEP_SECONDS = 1.0


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
        super()._clean_expired()
