"""Token issuing and revocation: the writes of the accounts app."""

from __future__ import annotations

from typing import Any, TypedDict, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User


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


def user_claims(user: User) -> Claims:
    return {"oid": str(user.id), "name": user.name, "email": user.email}


def token_pair_issue(*, user: User) -> TokenPair:
    refresh = RefreshToken.for_user(user)
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


def _refresh_token_load(raw: str) -> tuple[RefreshToken, User]:
    try:
        token = RefreshToken(raw)  # type: ignore[arg-type]  # checks signature, expiry, iss/aud and the blacklist
    except TokenError as exc:
        raise InvalidRefreshToken(str(exc)) from exc
    user = get_user_model().objects.filter(id=token.get("oid"), is_active=True).first()
    if user is None:
        raise InvalidRefreshToken("The user may not sign in.")
    return token, user


@transaction.atomic
def token_pair_refresh(*, refresh_token: str) -> TokenPair:
    """Rotate: the presented refresh token dies, a new pair is issued from current user data."""
    token, user = _refresh_token_load(refresh_token)
    _blacklisted, created = cast(tuple[Any, bool], token.blacklist())  # get_or_create's pair, mistyped
    if not created:  # a concurrent refresh with the same token won the race
        raise InvalidRefreshToken("Token is blacklisted")
    return token_pair_issue(user=user)


@transaction.atomic
def refresh_token_revoke(*, refresh_token: str) -> None:
    token, _user = _refresh_token_load(refresh_token)
    token.blacklist()
