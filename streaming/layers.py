"""The channel layer of a single process (the embedded default, when REDIS_URL is unset).

Channels' `InMemoryChannelLayer` sweeps every channel queue and every group membership for
expired entries on each `receive` and each `group_send`: with N open streams, every live event
costs O(N) for the publisher, and every stream's wait for its next message costs O(N) again, so
fan-out cost grows with the square of the number of streams. This layer is the same layer with
that sweep run at most once per `SWEEP_SECONDS`: expiry (of messages nobody received, and of old
group memberships) is a safety net measured in minutes, so a second of lateness changes nothing.
"""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer

SWEEP_SECONDS = 1.0


class ProcessChannelLayer(InMemoryChannelLayer):
    _next_sweep = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        super()._clean_expired()
