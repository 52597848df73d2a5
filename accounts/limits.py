"""How often a login may fail: per account and per client address (`common.web.addresses`).

Failed logins are counted per account and per client address in the cache (shared by every
process when `REDIS_URL` is set), never in the database: a failed login costs no write. An attempt
is counted *before* the password is checked and given back when it succeeds, so a burst of
parallel guesses cannot all slip in before the first failure is recorded.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache


class LoginLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins; retry in {retry_after} s.")
        self.retry_after = retry_after


def _key(kind: str, value: str) -> str:
    return f"login-failures:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def _buckets(email: str, address: str | None) -> list[tuple[str, int]]:
    buckets = [(_key("account", email.strip().lower()), settings.LOGIN_FAILURES_PER_ACCOUNT)]
    if address:
        buckets.append((_key("address", address), settings.LOGIN_FAILURES_PER_ADDRESS))
    return buckets


def login_attempt_begin(*, email: str, address: str | None) -> None:
    """Count one attempt against the account and the address; `LoginLimited` if either is spent."""
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = time.time()
    refused: list[int] = []
    counted: list[str] = []
    for key, limit in _buckets(email, address):
        cache.add(f"{key}:start", now, timeout=window)
        cache.add(key, 0, timeout=window)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)
            count = 1
        counted.append(key)
        if count > limit:
            start = cache.get(f"{key}:start") or now
            refused.append(max(1, int(start + window - now + 0.999)))
    if refused:
        # A refused attempt checks no password, so it is not a guess: it does not extend the count.
        for key in counted:
            _give_back(key)
        raise LoginLimited(max(refused))


def _give_back(key: str) -> None:
    try:
        if cache.decr(key) < 0:
            cache.set(key, 0, timeout=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    except ValueError:
        pass


def login_attempt_succeeded(*, email: str, address: str | None) -> None:
    """A correct password: the attempt was no failure."""
    for key, _limit in _buckets(email, address):
        _give_back(key)
