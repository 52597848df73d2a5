"""Open-stream slots: at most `STREAMS_PER_USER` streams per user, counted in the cache.

A stream holds one of its user's numbered slot keys (`cache.add` is atomic in the local-memory
and Redis caches, so two streams never take the same one). The key is a lease, renewed at every
re-check and released on close, so a process that dies frees its slots within `LEASE` seconds.
With `REDIS_URL` the cache is shared: the cap holds across every core process.

With the local-memory cache (no REDIS_URL) the slots are this process's own, and nothing outlives
it: they are a set of holders per user here (`_held`), one entry per stream. Numbered cache keys
would cost the n-th stream of a user n `add`s (quadratic in the streams opened: at 10,000 streams
of 10 users the opening spent most of its CPU there), a pickled value and an expiry entry per
stream, and Django's local-memory cache culls a third of its entries past 300 (slots included).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache


def _lease_seconds() -> int:
    return settings.CORTEX["STREAM_RECHECK_SECONDS"] * 3 + 5


def _key(user_id: uuid.UUID, slot: int) -> str:
    return f"stream-slot:{user_id.hex}:{slot}"


_local: dict[tuple[str, str], LocMemCache] = {}  # (BACKEND, LOCATION) -> this process's local-memory cache


async def _cache(method: str, *args: Any, **kwargs: Any) -> Any:
    # The local-memory cache is a dict behind a lock: called directly, it costs no hop to the sync
    # thread (which its `a*` methods would take); other caches go through their async methods.
    # Django gives each task its own cache object (`caches` is context-local): kept for a stream's
    # life, that is a few hundred bytes on every open stream; the local-memory one is shared.
    config = settings.CACHES["default"]
    location = (config["BACKEND"], config.get("LOCATION", ""))
    backend = _local.get(location)
    if backend is None:
        found = caches["default"]
        if not isinstance(found, LocMemCache):
            return await getattr(found, f"a{method}")(*args, **kwargs)
        backend = _local[location] = found
    return getattr(backend, method)(*args, **kwargs)


# Local cache: user id (hex) -> the user's slot key (one string for all their streams, not one each)
# and this process's holders.
_held: dict[str, tuple[str, set[str]]] = {}
LOCAL_PREFIX = "local:"


def _is_local() -> bool:
    return settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


async def slot_acquire(*, user_id: uuid.UUID, holder: str) -> str | None:
    """The slot key taken for `holder` (a channel name), or None when every slot is in use."""
    if _is_local():
        entry = _held.get(user_id.hex)
        if entry is None:
            entry = _held[user_id.hex] = (LOCAL_PREFIX + user_id.hex, set())
        key, held = entry
        if len(held) >= settings.CORTEX["STREAMS_PER_USER"]:
            if not held:
                del _held[user_id.hex]
            return None
        held.add(holder)
        return key
    for slot in range(settings.CORTEX["STREAMS_PER_USER"]):
        key = _key(user_id, slot)
        if await _cache("add", key, holder, timeout=_lease_seconds()):
            return key
    return None


async def slot_renew(*, key: str, holder: str) -> None:
    if key.startswith(LOCAL_PREFIX):
        return  # the process's own: no lease to renew
    if await _cache("get", key) == holder:
        await _cache("touch", key, timeout=_lease_seconds())
    else:  # lost (expired under a long stall): take it back if it is free
        await _cache("add", key, holder, timeout=_lease_seconds())


async def slot_release(*, key: str, holder: str) -> None:
    if key.startswith(LOCAL_PREFIX):
        entry = _held.get(key.removeprefix(LOCAL_PREFIX))
        if entry is not None:
            entry[1].discard(holder)
            if not entry[1]:
                del _held[key.removeprefix(LOCAL_PREFIX)]
        return
    if await _cache("get", key) == holder:
        await _cache("delete", key)
