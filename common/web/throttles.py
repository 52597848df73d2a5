"""Rate limits that cost O(1) per request.

DRF's `SimpleRateThrottle` keeps, per client, the list of every request's timestamp within the
window and reads, trims and writes (pickles) that whole list on each request: at 600/min that is
up to 600 floats per request, and it grows with the rate. This is the generic cell rate algorithm
(GCRA) instead: one float per client (the "theoretical arrival time"), read and written once.
It allows the same `num_requests` per `duration` on average, with the same burst of
`num_requests`, and tells a refused client exactly when the next request will be allowed.

Anonymous clients are keyed by `common.web.addresses.client_address`: DRF's own `get_ident` believes
`X-Forwarded-For` when `NUM_PROXIES` is unset, so a client could pick a fresh identity per request.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

from common.web.addresses import client_address


class _ProcessRates:
    """The throttle state when the configured cache is this process's own memory anyway: a plain
    dict, without LocMemCache's pickling, key checks and lock. Bounded: expired keys are swept."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._values: dict[str, tuple[float, float]] = {}
        self._max = max_entries

    def get(self, key: str, default: float) -> float:
        entry = self._values.get(key)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else default

    def set(self, key: str, value: float, timeout: float) -> None:
        now = time.monotonic()
        if len(self._values) >= self._max:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        self._values[key] = (value, now + timeout)

    def clear(self) -> None:
        self._values.clear()


process_rates = _ProcessRates()


_shared: Any = None


def shared_rates() -> Any:
    """Where every throttle of this process keeps its state: one object for the process.

    `django.core.cache.cache` is per async context, so under ASGI each request would build its own
    cache client (for Redis: a new connection pool and a new TCP connection per request). The
    throttles share one instance instead: process memory when the cache is process-local anyway,
    else one client of the configured (shared) cache.
    """
    global _shared
    if _shared is None:
        instance = caches.create_connection(DEFAULT_CACHE_ALIAS)
        _shared = process_rates if isinstance(instance, LocMemCache) else instance
    return _shared


class GcraScopedRateThrottle(ScopedRateThrottle):
    """DRF's `ScopedRateThrottle` (same scopes, rates and cache keys) with GCRA bookkeeping."""

    _wait: float | None = None

    def __init__(self) -> None:
        super().__init__()
        self.cache = shared_rates()

    def allow_request(self, request: Any, view: Any) -> bool:
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        assert self.duration is not None and self.num_requests is not None  # a rate was parsed
        interval = self.duration / self.num_requests
        now = self.timer()
        # Not atomic across processes, like DRF's own throttles: a race can let a few extra through.
        arrival = max(self.cache.get(self.key, now), now) + interval
        if arrival - now > self.duration:
            self._wait = arrival - now - self.duration
            return False
        self.cache.set(self.key, arrival, self.duration + 1)
        return True

    def wait(self) -> float | None:
        return self._wait


class AddressRateThrottle(GcraScopedRateThrottle):
    """Per client address (login: everyone behind one address shares this generous bucket)."""

    def get_ident(self, request: Request) -> str:
        return client_address(request._request)


class WriteRateThrottle(GcraScopedRateThrottle):
    """Its scope's rate for the writes of a view only: reads (GET, HEAD, OPTIONS) are not counted."""

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return super().allow_request(request, view)
