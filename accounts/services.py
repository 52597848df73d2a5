"""Token issuing and revocation: the writes of the accounts app.

A refresh token is refused (401) when it is malformed or expired, when its user may not sign in,
when the user's password changed after it was issued (any path: admin, `changepassword`, shell:
the token carries a digest of the password hash), when its family was revoked, or when it was
already rotated, which also revokes its family. Every check is a read: only a validly signed
token that is really being used (rotated, revoked, or reused) leads to a write transaction.
"""

from __future__ import annotations

import uuid
from typing import Any, TypedDict, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import RefreshTokenFamily, User
from accounts.signals import user_deleting
from accounts.tokens import FAMILY_CLAIM, FamilyRefreshToken


class Claims(TypedDict):
    oid: str
    name: str
    email: str


class TokenPair(TypedDict):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    claims: Claims


class InvalidRefreshToken(Exception):
    """The refresh token is malformed, expired, revoked, or its user may no longer sign in."""


class _Reused(Exception):
    def __init__(self, family_id: str) -> None:
        self.family_id = family_id


def user_claims(user: User) -> Claims:
    return {"oid": str(user.id), "name": user.name, "email": user.email}


@transaction.atomic
def token_pair_issue(*, user: User, family_id: uuid.UUID | str | None = None) -> TokenPair:
    """A new pair: a login starts a refresh token family, a rotation continues `family_id`'s."""
    if family_id is None:
        family_id = RefreshTokenFamily.objects.create(user=user).id
    refresh = FamilyRefreshToken.for_user(user, family_id=family_id)
    claims = user_claims(user)
    refresh["name"] = claims["name"]
    refresh["email"] = claims["email"]
    access = refresh.access_token
    return {
        "access_token": str(access),
        "token_type": "bearer",
        "expires_in": int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()),
        "refresh_token": str(refresh),
        "claims": claims,
    }


def _refresh_token_load(raw: str) -> tuple[FamilyRefreshToken, User]:
    """Reads only. Raises `InvalidRefreshToken`, or `_Reused` for a rotated token of a live family."""
    try:
        token = FamilyRefreshToken(raw)  # type: ignore[arg-type]  # signature, expiry, iss/aud, type: no database
    except TokenError as exc:
        raise InvalidRefreshToken(str(exc)) from exc
    user = get_user_model().objects.filter(id=token.get("oid"), is_active=True).first()
    if user is None:
        raise InvalidRefreshToken("The user may not sign in.")
    if token.get(settings.SIMPLE_JWT.get("REVOKE_TOKEN_CLAIM", "hash_password")) != get_md5_hash_password(
        user.password
    ):
        raise InvalidRefreshToken("The password changed after this token was issued.")
    family_id = token.get(FAMILY_CLAIM)
    if (
        not family_id
        or not RefreshTokenFamily.objects.filter(id=family_id, user=user, revoked_at__isnull=True).exists()
    ):
        raise InvalidRefreshToken("This token's login was revoked.")
    if BlacklistedToken.objects.filter(token__jti=token["jti"]).exists():
        raise _Reused(family_id)
    return token, user


def refresh_family_revoke(*, family_id: uuid.UUID | str) -> None:
    RefreshTokenFamily.objects.filter(id=family_id, revoked_at__isnull=True).update(revoked_at=timezone.now())


def _load_or_revoke(raw: str) -> tuple[FamilyRefreshToken, User]:
    try:
        return _refresh_token_load(raw)
    except _Reused as reused:
        # A rotated token came back: someone holds a copy. End every descendant of that login.
        refresh_family_revoke(family_id=reused.family_id)
        raise InvalidRefreshToken("This refresh token was already used; its login is revoked.") from None


def token_pair_refresh(*, refresh_token: str) -> TokenPair:
    """Rotate: the presented refresh token dies, a new pair of the same family is issued."""
    token, user = _load_or_revoke(refresh_token)
    with transaction.atomic():
        _blacklisted, created = cast(tuple[Any, bool], token.blacklist())  # get_or_create's pair, mistyped
        if not created:  # a concurrent refresh with the same token won the race
            raise InvalidRefreshToken("Token is blacklisted")
        return token_pair_issue(user=user, family_id=token[FAMILY_CLAIM])


@transaction.atomic
def user_delete(*, user: User) -> None:
    """Delete a user and everything theirs, as the API deletes: their workspaces (conversations,
    messages and events with them) and their memory, purged through the outbox; their streams end
    (`streaming` listens to the delete)."""
    user_deleting.send(sender=User, user=user)
    user.delete()


def refresh_token_revoke(*, refresh_token: str) -> None:
    """Logout: this token is dead (the family's other, already rotated tokens are dead anyway)."""
    token, _user = _load_or_revoke(refresh_token)
    with transaction.atomic():
        token.blacklist()
