"""How often a login may fail: per account and per client address (`common.web.addresses`), and
per device for a browser that has logged in before.

Failed logins are counted per account and per client address in the cache (shared by every
process when `REDIS_URL` is set), never in the database: a failed login costs no write. An attempt
is counted *before* the password is checked and given back when it succeeds, so a burst of
parallel guesses cannot all slip in before the first failure is recorded.

Device cookies (OWASP, "Slow Brute Force Protection Using Device Cookies"): a successful login
gets a signed `cortex_device` cookie naming that account and a random device id. An attempt that
presents a valid one for the account it names is counted against that device alone
(`LOGIN_FAILURES_PER_DEVICE`), not against the account's or the address's allowance: whoever
guesses from elsewhere (no such cookie) spends the account's allowance and is refused once it is
gone, while the owner's browser keeps logging in. A stolen cookie buys its thief only the
device's own few guesses per window.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from django.conf import settings
from django.core import signing
from django.core.cache import cache

DEVICE_COOKIE = "cortex_device"
_DEVICE_SALT = "cortex.accounts.device-cookie"


class LoginLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins; retry in {retry_after} s.")
        self.retry_after = retry_after


def _key(kind: str, value: str) -> str:
    return f"login-failures:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def _account(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def device_cookie_issue(*, email: str) -> str:
    """The value of the device cookie a successful login of `email` sets (signed, names no one)."""
    return signing.TimestampSigner(salt=_DEVICE_SALT).sign(f"{_account(email)}:{secrets.token_urlsafe(16)}")


def trusted_device(*, email: str, cookie: str | None) -> str | None:
    """The device id of a valid, unexpired device cookie issued to this account; None otherwise."""
    if not cookie or len(cookie) > 200:
        return None
    try:
        value = signing.TimestampSigner(salt=_DEVICE_SALT).unsign(
            cookie, max_age=settings.LOGIN_DEVICE_COOKIE_DAYS * 86400
        )
    except signing.BadSignature:  # also SignatureExpired
        return None
    account, _, device = value.partition(":")
    return device if device and account == _account(email) else None


def _buckets(email: str, address: str | None, device: str | None) -> list[tuple[str, int]]:
    if device is not None:  # a browser this account logged in from: its own allowance only
        return [(_key("device", device), settings.LOGIN_FAILURES_PER_DEVICE)]
    buckets = [(_key("account", email.strip().lower()), settings.LOGIN_FAILURES_PER_ACCOUNT)]
    if address:
        buckets.append((_key("address", address), settings.LOGIN_FAILURES_PER_ADDRESS))
    return buckets


def login_attempt_begin(*, email: str, address: str | None, device: str | None = None) -> None:
    """Count one attempt against the account and the address, or against the trusted `device`
    (`trusted_device`); `LoginLimited` if that allowance is spent."""
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = time.time()
    refused: list[int] = []
    counted: list[str] = []
    for key, limit in _buckets(email, address, device):
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


def login_attempt_succeeded(*, email: str, address: str | None, device: str | None = None) -> None:
    """A correct password: the attempt was no failure."""
    for key, _limit in _buckets(email, address, device):
        _give_back(key)
