"""The streams' fan-out between processes with channels_redis (`streaming.hub._Shared`): batches go
over Redis pub/sub (channels_redis's `RedisPubSubChannelLayer`) unless `STREAM_REDIS_PUBSUB` is off.

Each `RedisChannelLayer` object below stands for one core process (a process has one layer and
one hub); they share a real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from streaming.hub import _Shared, hub
from tests.servers import redis_server

# Run in the SQLite pass only: the Redis channel layer.
pytestmark = pytest.mark.database_agnostic


def _layer(url: str) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": 30}])


async def _until(condition, limit: float = 15.0) -> None:
    """Wait for `condition()` (liveness bound only: a loaded machine may be slow)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.e2e
async def test_batches_reach_the_writers_of_every_process_in_order_over_pubsub(settings):
    settings.CORTEX = {**settings.CORTEX, "STREAM_REDIS_PUBSUB": True}
    with redis_server() as url:
        first, second = hub(_layer(url)), hub(_layer(url))
        assert isinstance(first, _Shared) and isinstance(first.layer, RedisPubSubChannelLayer)
        got_first: list[int] = []
        got_second: list[int] = []
        other_user: list[int] = []
        await first.join("user.a", "stream-1", lambda message: got_first.append(message["seq"]))
        await second.join("user.a", "stream-2", lambda message: got_second.append(message["seq"]))
        await second.join("user.b", "stream-3", lambda message: other_user.append(message["seq"]))
        # A subscription takes effect once Redis has it: publish until the first copy arrives.
        await _until_subscribed(first, second, got_first, got_second)
        start = max(got_first + got_second) + 1
        for seq in range(start, start + 50):  # from the publisher's task, as `events_publish` does
            first.publish([("user.a", {"type": "stream.event", "seq": seq})])
        wanted = list(range(start, start + 50))
        await _until(lambda: got_first[-50:] == wanted and got_second[-50:] == wanted)
        assert other_user == []  # another user's group hears nothing
        assert got_first == sorted(set(got_first)) and got_second == sorted(set(got_second))
        for fanout, group, channel in ((first, "user.a", "stream-1"), (second, "user.a", "stream-2")):
            await fanout.leave(group, channel)
        await second.leave("user.b", "stream-3")
        assert second.reader is None and second.channel is None
        # A process whose last stream closed and a new one opened hears the batches again.
        again: list[int] = []
        await second.join("user.a", "stream-4", lambda message: again.append(message["seq"]))
        await _until_subscribed(first, second, again)
        await second.leave("user.a", "stream-4")


async def _until_subscribed(first: _Shared, second: _Shared, *received: list[int]) -> None:
    seq = 0
    deadline = time.monotonic() + 15
    while not all(received):
        assert time.monotonic() < deadline, "the subscription never took effect"
        seq += 1
        await first.publish_now([("user.a", {"type": "stream.event", "seq": seq})])
        await asyncio.sleep(0.05)


@pytest.mark.e2e
async def test_without_pubsub_the_batches_go_through_the_channel_layer(settings):
    settings.CORTEX = {**settings.CORTEX, "STREAM_REDIS_PUBSUB": False}
    with redis_server() as url:
        layer = _layer(url)
        fanout = hub(layer)
        assert isinstance(fanout, _Shared) and fanout.layer is layer and fanout.expires
        got: list[int] = []
        await fanout.join("user.a", "stream-1", lambda message: got.append(message["seq"]))
        fanout.publish([("user.a", {"type": "stream.event", "seq": 1})])
        await _until(lambda: got == [1])
        await fanout.leave("user.a", "stream-1")
