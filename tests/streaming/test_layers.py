"""The embedded channel layer: Channels' in-memory layer with a lighter queue and a rate-limited
expiry sweep; what the streams rely on must hold."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull

from streaming import layers
from streaming.layers import ProcessChannelLayer
from tests.streaming.conftest import fresh_channel_layer  # noqa: F401 (autouse)


async def test_group_messages_reach_every_member_in_order_and_a_full_channel_refuses():
    layer = ProcessChannelLayer(capacity=3)
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("user.a", first)
    await layer.group_add("user.a", second)
    for n in range(3):
        await layer.group_send("user.a", {"type": "stream.event", "seq": n})
    assert [(await layer.receive(first))["seq"] for _ in range(3)] == [0, 1, 2]
    waiting = asyncio.create_task(layer.receive(first))
    await asyncio.sleep(0)
    await layer.send(first, {"type": "stream.event", "seq": 3})
    assert (await asyncio.wait_for(waiting, 10))["seq"] == 3
    with pytest.raises(ChannelFull):
        await layer.send(second, {"type": "x"})  # already holds 3
    await layer.group_discard("user.a", first)
    await layer.group_send("user.a", {"type": "stream.event", "seq": 9})  # full: dropped, as in Channels
    assert first not in layer.channels  # drained channels hold nothing


async def test_expired_messages_are_swept_at_most_once_a_sweep_period(monkeypatch):
    layer = ProcessChannelLayer(expiry=0)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "old"})
    monkeypatch.setattr(layers, "SWEEP_SECONDS", 3600)
    layer._clean_expired()  # the first sweep runs
    assert channel not in layer.channels
    await layer.send(channel, {"type": "old"})
    layer._clean_expired()  # within the period: skipped
    assert layer.channels[channel].qsize() == 1


async def _a_stream_outlives_the_group_expiry(user, settings, layer: dict) -> None:
    from tests.streaming.conftest import SSEClient, bearer, post_input

    settings.CHANNEL_LAYERS = {"default": layer}
    sse = await SSEClient(headers=await bearer(user)).open()
    assert await sse.frame() == "retry: 3000"
    await asyncio.sleep(8.5)  # two group lifetimes, and sweeps in between
    await post_input(user, "still here")
    _id, event = await sse.event()
    assert event["type"] == "input" and event["data"]["content"] == "still here"
    await sse.close()


@pytest.mark.django_db(transaction=True)
async def test_a_stream_open_longer_than_the_group_expiry_still_receives_live_events(alice, settings):
    """Channels drops a group membership `group_expiry` after the join (a day by default); a stream
    joins again before that, so one open for days keeps getting live events."""
    # 4 s: the stream joins again every 2 s, so a loaded machine may stall it for up to 2 s.
    layer = {"BACKEND": "streaming.layers.ProcessChannelLayer", "CONFIG": {"group_expiry": 4}}
    await _a_stream_outlives_the_group_expiry(alice, settings, layer)


@pytest.mark.e2e
@pytest.mark.database_agnostic
@pytest.mark.django_db(transaction=True)
async def test_a_stream_open_longer_than_the_redis_group_expiry_still_receives_live_events(alice, settings):
    from tests.servers import redis_server

    with redis_server() as url:
        config = {"hosts": [{"address": url, "socket_timeout": 30}], "group_expiry": 4}
        layer = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": config}
        await _a_stream_outlives_the_group_expiry(alice, settings, layer)
