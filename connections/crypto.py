"""Tokens and client secrets at rest: encrypted with `cryptography`'s MultiFernet.

`OAUTH_TOKEN_KEYS` (settings, from the environment: Fernet keys, comma-separated) encrypts with the
first and decrypts with any, so keys rotate: add the new key first, run `manage.py
connections_rotate_keys` (re-encrypts every row), then drop the old one. In debug mode without keys
one is derived from SECRET_KEY; outside debug there is no default: connecting fails until it is set.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from common.errors import CortexError, ErrorCode


@cache
def _fernet(keys: tuple[str, ...], debug_secret: str | None) -> MultiFernet:
    if not keys and debug_secret:
        derived = base64.urlsafe_b64encode(hashlib.sha256(f"oauth-tokens:{debug_secret}".encode()).digest())
        keys = (derived.decode(),)
    if not keys:
        raise CortexError(
            ErrorCode.SERVICE_UNAVAILABLE, "No OAUTH_TOKEN_KEYS configured: accounts cannot be connected."
        )
    return MultiFernet([Fernet(key.encode()) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.OAUTH_TOKEN_KEYS), settings.SECRET_KEY if settings.DEBUG else None)


def seal(text: str) -> bytes:
    return b"" if not text else fernet().encrypt(text.encode())


def unseal(blob: bytes | memoryview | None) -> str:
    if not blob:
        return ""
    try:
        return fernet().decrypt(bytes(blob)).decode()
    except InvalidToken:
        raise CortexError(
            ErrorCode.SERVICE_UNAVAILABLE, "A stored token cannot be decrypted with OAUTH_TOKEN_KEYS."
        ) from None


def reseal(blob: bytes | memoryview | None) -> bytes:
    """The same secret encrypted with the current first key (key rotation)."""
    return b"" if not blob else fernet().rotate(bytes(blob))
