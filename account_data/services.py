"""Erasing an account: the same deletion as the admin's (`accounts.services.user_delete`), after
the person proved it is them."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from accounts.models import User
from accounts.services import user_delete
from common.errors import CortexError, ErrorCode


def account_erase(*, user: User, password: str | None, confirm: str | None, auth_time: Any) -> None:
    """Delete the account, what it owns and its memory, ending its tokens and streams.

    An account with a password re-enters it. An account that signs in only through an identity
    provider has no password to re-enter: it confirms with its email address, from a sign-in no
    older than `ACCOUNT_ERASE_FRESH_SECONDS` (the access token's `auth_time`, which a refresh copies
    unchanged; never `iat`, which every refresh renews), so a device left signed in, or a stolen
    refresh token, cannot erase the account alone: 401 until the person signs in again.
    """
    if user.has_usable_password():
        if not password or not user.check_password(password):
            raise CortexError(
                ErrorCode.INVALID_CREDENTIALS,
                "Re-enter your password to delete your account.",
                status=400,
                fields={"password": ["Wrong or missing password."]},
            )
    else:
        fresh = settings.CORTEX["ACCOUNT_ERASE_FRESH_SECONDS"]
        if (confirm or "").strip().lower() != user.email.lower():
            raise CortexError(
                ErrorCode.INVALID_INPUT,
                "Confirm with your account's email address to delete your account.",
                fields={"confirm": ["Must be your account's email address."]},
            )
        if not isinstance(auth_time, int | float) or time.time() - auth_time > fresh:
            raise CortexError(
                ErrorCode.INVALID_TOKEN,
                f"Sign in again (a refreshed token does not count; within {fresh} seconds) to delete your account.",
                status=401,
            )
    user_delete(user=user)
