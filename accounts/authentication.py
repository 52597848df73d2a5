"""JWT authentication without a database round trip per request.

simplejwt's `JWTAuthentication` loads the user row for every request. On the input path that
query is a large share of the work, so the user is kept in a small per-process cache for
`AUTH_USER_CACHE_SECONDS` (default 5): a deactivated user, a deleted user or a changed password
(the token's revoke claim) is refused within that many seconds, on every process, without any
cross-process invalidation. Every check simplejwt makes still runs on each request, against the
cached row: signature, expiry, issuer, audience, active flag, revoke claim.

A save or delete of a user through the ORM drops the entry in the process that made it at once.

`aauthenticate` is the same check for async views: the token is verified on the event loop and
only a cache miss reaches the database (and the connection goes back at once).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import User

_MISSING = object()


class ExpiringCache:
    """key -> value until a wall-clock deadline. Bounded; entries are replaced, never mutated."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict[Any, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: Any) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= time.time():
            return _MISSING
        return entry[0]

    def put(self, key: Any, value: Any, deadline: float) -> None:
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()  # cheap and rare: a burst of distinct keys refills it
            self._entries[key] = (value, deadline)

    def discard(self, key: Any) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


user_cache = ExpiringCache()  # user id -> user row (or None: no such user)
_tokens = ExpiringCache()  # raw access token -> validated token, until the token expires


def _remember_user(key: str, user: User | None) -> None:
    ttl = settings.CORTEX["AUTH_USER_CACHE_SECONDS"]
    if ttl > 0:
        user_cache.put(key, user, time.time() + ttl)


def forget_user(sender: Any, instance: User, **kwargs: Any) -> None:
    """post_save/post_delete: this process sees a change at once (others within the TTL)."""
    user_cache.discard(str(instance.pk))


def _load_user(key: str) -> User | None:
    """A cache miss of an async request: read the row and give the connection back at once, so a
    request that goes on to wait (for the input writer) holds no pooled connection meanwhile."""
    try:
        return get_user_model().objects.filter(id=key).first()
    finally:
        if not connection.in_atomic_block:  # (a test's own transaction is left alone)
            connection.close()


def _user_id(validated_token: Token) -> str:
    try:
        raw = validated_token[api_settings.USER_ID_CLAIM]
    except KeyError:
        raise InvalidToken("Token contained no recognizable user identification") from None
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise AuthenticationFailed("User not found", code="user_not_found") from None


class CachedJWTAuthentication(JWTAuthentication):
    """simplejwt's authentication with the user row cached per process (see the module docstring).

    A validated access token is also remembered until its own expiry: its signature and claims
    cannot change, so the next request with it skips the HMAC and claim checks (access tokens are
    never blacklisted; what revokes them, the user's state and password, is checked every time).
    """

    def get_validated_token(self, raw_token: bytes) -> Token:
        token = _tokens.get(raw_token)
        if token is not _MISSING:
            return token
        token = super().get_validated_token(raw_token)
        expires = token.payload.get("exp")
        if isinstance(expires, int | float):
            _tokens.put(raw_token, token, float(expires))
        return token

    def get_user(self, validated_token: Token) -> User:  # type: ignore[override]  # our user model
        key = _user_id(validated_token)
        user = user_cache.get(key)
        if user is _MISSING:
            user = get_user_model().objects.filter(id=key).first()
            _remember_user(key, user)
        return self._checked(user, validated_token)

    async def aget_user(self, validated_token: Token) -> User:
        key = _user_id(validated_token)
        user = user_cache.get(key)
        if user is _MISSING:
            user = await sync_to_async(_load_user)(key)
            _remember_user(key, user)
        return self._checked(user, validated_token)

    async def aauthenticate(self, request: Request) -> tuple[User, Token] | None:
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        validated_token = self.get_validated_token(raw_token)  # CPU only: signature and claims
        return await self.aget_user(validated_token), validated_token

    def _checked(self, user: User | None, validated_token: Token) -> User:
        # The same refusals, in the same order, as simplejwt's `JWTAuthentication.get_user`.
        if user is None:
            raise AuthenticationFailed("User not found", code="user_not_found")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed("User is inactive", code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != get_md5_hash_password(user.password):
            raise AuthenticationFailed("The user's password has been changed.", code="password_changed")
        return user


class CachedJWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of our JWT authentication: simplejwt's bearer scheme."""

    target_class = "accounts.authentication.CachedJWTAuthentication"
