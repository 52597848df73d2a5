"""The process's fan-out: which open streams hear which user's group, and publication.

A stream registers a *writer* (a plain function called with each message for it) under its
channel name and its user's group (`join`); an event is then handed to every writer of its
recipient's group in the publisher's task, one call each, and the writer puts it on its socket
at once, or in its bounded buffer when the socket is busy (`streaming.consumers`). No queue, task
or timer per stream, no copy of the event per stream.

- The embedded default (`streaming.layers.ProcessChannelLayer`, no REDIS_URL): the layer itself
  calls the writers (`_Local`), so its groups stay Channels' groups.
- Any other layer (channels_redis, shared by several processes): one channel per process
  (`_Shared`), in one group of all the processes; a reader task takes what arrives on it and
  hands each copy to the writers of its user's streams here. Publications are sent in batches:
  one layer message per batch, one batch at a time per process (so in order), whatever has queued
  while the previous one was being sent. Group memberships expire in the layer (`group_expiry`):
  the process joins again every half expiry (`renew`, from the streams' ticker), not each stream.
- channels_redis's `RedisChannelLayer` (REDIS_URL set): the batches go over Redis pub/sub instead,
  through channels_redis's own `RedisPubSubChannelLayer` on the same servers (`STREAM_REDIS_PUBSUB`,
  on by default). A batch is then one `PUBLISH` (one round trip) and arrives on each process's
  subscription with no round trip of its own, where `RedisChannelLayer` spends four round trips
  and two tasks on each `receive` (one message each) and four on each `group_send`: a process whose
  loop was busy fell behind the batches of every process and never caught up (bench/README.md).
  Pub/sub keeps nothing for a process that is not subscribed, which is what live copies are
  (at most once; a stream fetches a gap from the log); memberships never expire there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from streaming.layers import ProcessChannelLayer

logger = logging.getLogger(__name__)

Writer = Callable[[dict], None]
Messages = list[tuple[str, Any]]  # (group, message)
BATCH = "stream.batch"  # a batch of (group, message) in one layer message (`_Shared`)
EVERYONE = "streams.everyone"  # the group of every process's streams channel (`_Shared`)


class _Local:
    """The embedded layer: it hands each message to the writers itself."""

    def __init__(self, layer: ProcessChannelLayer) -> None:
        self.layer = layer

    async def join(self, group: str, channel: str, writer: Writer) -> None:
        self.layer.writer_add(channel, writer)
        await self.layer.group_add(group, channel)

    async def leave(self, group: str, channel: str) -> None:
        self.layer.writer_discard(channel)
        await self.layer.group_discard(group, channel)

    def deliver(self, group: str, message: dict) -> None:
        self.layer.group_send_nowait(group, message)

    def publish(self, messages: Messages) -> None:
        for group, message in messages:
            self.layer.group_send_nowait(group, message)

    async def publish_now(self, messages: Messages) -> None:
        self.publish(messages)

    async def renew(self, now: float) -> None:
        """The embedded layer never expires a writer's memberships."""


class _Shared:
    """A layer shared between processes: every process's one channel is in one group (`EVERYONE`),
    and each batch of commits goes out as one message to it; each process hands the copies to its
    own streams of their users. A process's reader then takes one message per batch, whatever the
    number of users in it (channels_redis takes one message per round trip to Redis): made for
    the few core processes of a deployment, each of which receives every batch."""

    def __init__(self, layer: Any, *, expires: bool = True) -> None:
        self.layer = layer
        self.expires = expires  # whether the layer's group memberships expire (`renew`)
        self.channel: str | None = None
        self.members: dict[str, dict[str, Writer]] = {}  # group -> channel -> writer (this process)
        self.joined: float | None = None  # when this process last joined EVERYONE (monotonic)
        self.lock = asyncio.Lock()
        self.reader: asyncio.Task | None = None
        self.pending: Messages = []
        self.sender: asyncio.Task | None = None

    async def join(self, group: str, channel: str, writer: Writer) -> None:
        self.members.setdefault(group, {})[channel] = writer
        if self.joined is None:
            async with self.lock:
                if self.joined is None:
                    if self.channel is None:
                        self.channel = await self.layer.new_channel("streams.")
                    await self.layer.group_add(EVERYONE, self.channel)
                    self.joined = time.monotonic()
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(self._read(), name="cortex-streams-reader")

    async def leave(self, group: str, channel: str) -> None:
        members = self.members.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self.members[group]
        if not self.members and self.joined is not None:
            async with self.lock:
                if not self.members and self.joined is not None:
                    self.joined = None
                    with contextlib.suppress(Exception):
                        await self.layer.group_discard(EVERYONE, self.channel)
                    if self.reader is not None:
                        self.reader.cancel()
                        self.reader = None
                    # The next join takes a new channel: a pub/sub layer forgets a channel whose
                    # `receive` was cancelled, and an old queue's leftovers are stale anyway.
                    self.channel = None

    async def renew(self, now: float) -> None:
        """Join again once half of `group_expiry` has passed since the last join."""
        if not self.expires:
            return
        half = max(0.5, getattr(self.layer, "group_expiry", 86400) / 2)
        if self.joined is None or now - self.joined < half:
            return
        async with self.lock:
            if self.joined is not None:
                try:
                    await self.layer.group_add(EVERYONE, self.channel)
                    self.joined = time.monotonic()
                except Exception:
                    logger.exception("Joining the streams' group again failed; trying again soon")

    async def _read(self) -> None:
        while self.members:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Receiving the streams' messages failed; trying again")
                await asyncio.sleep(1)
                continue
            for item in message.get("messages") or ():
                if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str):
                    self.deliver(item[0], item[1])

    def deliver(self, group: str, message: dict) -> None:
        members = self.members.get(group)
        if not members:
            return
        for writer in list(members.values()):
            try:
                writer(message)
            except Exception:
                logger.exception("A stream's writer failed on %s", message.get("type"))

    def publish(self, messages: Messages) -> None:
        """Queue for the process's sender task: one batch at a time, in order."""
        self.pending.extend(messages)
        if self.sender is None or self.sender.done():
            self.sender = asyncio.get_running_loop().create_task(self._send_pending(), name="cortex-streams-sender")

    async def _send_pending(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            await self.publish_now(batch)

    async def publish_now(self, messages: Messages) -> None:
        try:
            await self.layer.group_send(EVERYONE, {"type": BATCH, "messages": [list(item) for item in messages]})
        except Exception:
            # The log is durable: a stream that misses this live copy catches up from the
            # database at its next event or reconnect.
            logger.exception("Publishing %d live copies failed", len(messages))


def _shared(layer: Any) -> _Shared:
    """`_Shared` over `layer`, or over Redis pub/sub on its servers when it is channels_redis's
    `RedisChannelLayer` (see the module docstring)."""
    from channels_redis.core import RedisChannelLayer

    if isinstance(layer, RedisChannelLayer) and settings.CORTEX["STREAM_REDIS_PUBSUB"]:
        from channels_redis.pubsub import RedisPubSubChannelLayer

        return _Shared(RedisPubSubChannelLayer(hosts=layer.hosts, prefix=f"{layer.prefix}:streams:"), expires=False)
    return _Shared(layer)


def hub(layer: Any = None) -> _Local | _Shared:
    """The fan-out of `layer` (the default channel layer) in this process."""
    layer = layer if layer is not None else get_channel_layer()
    found = getattr(layer, "_cortex_hub", None)
    if found is None:
        found = _Local(layer) if isinstance(layer, ProcessChannelLayer) else _shared(layer)
        layer._cortex_hub = found
    return found
