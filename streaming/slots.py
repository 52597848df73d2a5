"""Open-stream slots: at most `STREAMS_PER_USER` streams per user, counted in the cache.

A stream holds one of its user's numbered slot keys (`cache.add` is atomic in the local-memory
and Redis caches, so two streams never take the same one). The key is a lease, renewed at every
re-check and released on close, so a process that dies frees its slots within `LEASE` seconds.
With `REDIS_URL` the cache is shared: the cap holds across every core process.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.cache import cache


def _lease_seconds() -> int:
    return settings.CORTEX["STREAM_RECHECK_SECONDS"] * 3 + 5


def _key(user_id: uuid.UUID, slot: int) -> str:
    return f"stream-slot:{user_id.hex}:{slot}"


async def slot_acquire(*, user_id: uuid.UUID, holder: str) -> str | None:
    """The slot key taken for `holder` (a channel name), or None when every slot is in use."""
    for slot in range(settings.CORTEX["STREAMS_PER_USER"]):
        key = _key(user_id, slot)
        if await cache.aadd(key, holder, timeout=_lease_seconds()):
            return key
    return None


async def slot_renew(*, key: str, holder: str) -> None:
    if await cache.aget(key) == holder:
        await cache.atouch(key, timeout=_lease_seconds())
    else:  # lost (expired under a long stall): take it back if it is free
        await cache.aadd(key, holder, timeout=_lease_seconds())


async def slot_release(*, key: str, holder: str) -> None:
    if await cache.aget(key) == holder:
        await cache.adelete(key)
