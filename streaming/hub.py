"""The process's fan-out: which open streams hear which user's group, and publication.

A stream registers a *writer* (a plain function called with each message for it) under its
channel name and its user's group (`join`); an event is then handed to every writer of its
recipient's group in the publisher's task, one call each, and the writer puts it on its socket
at once, or in its bounded buffer when the socket is busy (`streaming.consumers`). No queue, task
or timer per stream, no copy of the event per stream.

- The embedded default (`streaming.layers.ProcessChannelLayer`, no REDIS_URL): the layer itself
  calls the writers (`_Local`), so its groups stay Channels' groups.
- Any other layer (channels_redis, shared by several processes): one channel per process
  (`_Shared`) joins the group of each user who has a stream here, once, however many streams they
  have; a reader task takes what arrives on it and hands it to the writers. Publications carry
  their group and are sent in batches: one layer message per group and batch, one batch at a
  time per process (so in order), whatever has queued while the previous one was being sent.
  Group memberships expire in the layer (`group_expiry`): the process joins its groups again
  every half expiry (`renew`, from the streams' ticker), not each stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from streaming.layers import ProcessChannelLayer

logger = logging.getLogger(__name__)

Writer = Callable[[dict], None]
Messages = list[tuple[str, Any]]  # (group, message)
BATCH = "stream.batch"  # several messages of one group in one layer message (`_Shared`)


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
    """A layer shared between processes: one channel per process in the groups of its users."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[str, dict[str, Writer]] = {}  # group -> channel -> writer (this process)
        self.joined: dict[str, float] = {}  # group -> when this process last joined it (monotonic)
        self.lock = asyncio.Lock()  # group_add / group_discard in order, never crossed
        self.reader: asyncio.Task | None = None
        self.pending: Messages = []
        self.sender: asyncio.Task | None = None
        self.next_renew = 0.0

    async def join(self, group: str, channel: str, writer: Writer) -> None:
        if self.channel is None:
            self.channel = await self.layer.new_channel("streams.")
        self.members.setdefault(group, {})[channel] = writer
        if self.reader is None or self.reader.done():
            self.reader = asyncio.get_running_loop().create_task(self._read(), name="cortex-streams-reader")
        if group not in self.joined:
            async with self.lock:
                if group not in self.joined and group in self.members:
                    await self.layer.group_add(group, self.channel)
                    self.joined[group] = time.monotonic()

    async def leave(self, group: str, channel: str) -> None:
        members = self.members.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self.members[group]
        if group not in self.members and group in self.joined:
            async with self.lock:
                if group not in self.members and self.joined.pop(group, None) is not None:
                    with contextlib.suppress(Exception):
                        await self.layer.group_discard(group, self.channel)
        if not self.members and self.reader is not None:
            self.reader.cancel()
            self.reader = None

    async def renew(self, now: float) -> None:
        """Join every group again once half of `group_expiry` has passed since the last join."""
        if now < self.next_renew:
            return
        half = max(0.5, getattr(self.layer, "group_expiry", 86400) / 2)
        self.next_renew = now + min(half / 4, 60.0)
        due = [group for group, joined in self.joined.items() if now - joined >= half]
        for group in due:
            async with self.lock:
                if group in self.joined:
                    try:
                        await self.layer.group_add(group, self.channel)
                        self.joined[group] = time.monotonic()
                    except Exception:
                        logger.exception("Joining %s again failed; trying again soon", group)

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
            group = message.get("group")
            if isinstance(group, str):
                items = message.get("messages") if message.get("type") == BATCH else [message]
                for item in items or ():
                    self.deliver(group, item)

    def deliver(self, group: str, message: dict) -> None:
        for writer in list(self.members.get(group, {}).values()):
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
        by_group: dict[str, list[Any]] = {}
        for group, message in messages:
            by_group.setdefault(group, []).append(message)
        sends = [
            self.layer.group_send(
                group,
                {**items[0], "group": group} if len(items) == 1 else {"type": BATCH, "group": group, "messages": items},
            )
            for group, items in by_group.items()
        ]
        for group, result in zip(by_group, await asyncio.gather(*sends, return_exceptions=True), strict=True):
            if isinstance(result, BaseException):
                # The log is durable: a stream that misses this live copy catches up from the
                # database at its next event or reconnect.
                logger.error("Publishing to %s failed: %r", group, result)


def hub(layer: Any = None) -> _Local | _Shared:
    """The fan-out of `layer` (the default channel layer) in this process."""
    layer = layer if layer is not None else get_channel_layer()
    found = getattr(layer, "_cortex_hub", None)
    if found is None:
        found = _Local(layer) if isinstance(layer, ProcessChannelLayer) else _Shared(layer)
        layer._cortex_hub = found
    return found
