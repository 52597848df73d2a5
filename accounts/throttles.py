"""Rate limits that cost O(1) per request.

DRF's `SimpleRateThrottle` keeps, per client, the list of every request's timestamp within the
window and reads, trims and writes (pickles) that whole list on each request: at 600/min that is
up to 600 floats per request, and it grows with the rate. This is the generic cell rate algorithm
(GCRA) instead: one float per client (the "theoretical arrival time"), read and written once.
It allows the same `num_requests` per `duration` on average, with the same burst of
`num_requests`, and tells a refused client exactly when the next request will be allowed.
"""

from __future__ import annotations

from typing import Any

from rest_framework.throttling import ScopedRateThrottle


class GcraScopedRateThrottle(ScopedRateThrottle):
    """DRF's `ScopedRateThrottle` (same scopes, rates and cache keys) with GCRA bookkeeping."""

    _wait: float | None = None

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
