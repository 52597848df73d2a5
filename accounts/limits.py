"""Who is asking, and how often they may fail: the client address and the failed-login limits.

The client address is the peer's unless the peer is a configured proxy (`TRUSTED_PROXIES`, none by
default): a client cannot pick its own address by sending `X-Forwarded-For`.

Failed logins are counted per account and per client address in the cache (shared by every
process when `REDIS_URL` is set), never in the database: a failed login costs no write. An attempt
is counted *before* the password is checked and given back when it succeeds, so a burst of
parallel guesses cannot all slip in before the first failure is recorded.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest


@lru_cache(maxsize=8)
def _proxy_networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _is_trusted_proxy(address: str) -> bool:
    networks = _proxy_networks(tuple(settings.TRUSTED_PROXIES))
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: HttpRequest) -> str:
    """The real client address: `X-Forwarded-For` counts only when the peer is a trusted proxy."""
    address = request.META.get("REMOTE_ADDR") or "unknown"
    if not _is_trusted_proxy(address):
        return address
    forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(forwarded):  # appended by each proxy: the rightmost untrusted hop is the client
        if not _is_trusted_proxy(hop):
            return hop
        address = hop
    return address


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
