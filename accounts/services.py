"""Token issuing and revocation: the writes of the accounts app.

A refresh token is refused (401) when it is malformed or expired, when its user may not sign in,
when the user's password changed after it was issued (any path: admin, `changepassword`, shell:
the token carries a digest of the password hash), when its family was revoked, or when it was
already rotated, which also revokes its family. Every check is a read: only a validly signed
token that is really being used (rotated, revoked, or reused) leads to a write transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.utils import get_md5_hash_password

import audit
from accounts.models import ExternalIdentity, IdentitySignIn, LoginCode, RefreshTokenFamily, User
from accounts.signals import user_deleting
from accounts.tokens import AUTH_TIME_CLAIM, FAMILY_CLAIM, FamilyRefreshToken

if TYPE_CHECKING:
    from accounts.oidc import Provider  # authlib and requests: imported by the sign-in views only


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
def token_pair_issue(
    *, user: User, family_id: uuid.UUID | str | None = None, auth_time: int | None = None
) -> TokenPair:
    """A new pair: a login starts a refresh token family, a rotation continues `family_id`'s.

    `auth_time` (both tokens; simplejwt copies the refresh token's claims to the access token) is
    when the person last proved who they are: now for a sign-in (the default), the presented
    token's unchanged for a rotation (`token_pair_refresh`)."""
    if family_id is None:
        family_id = RefreshTokenFamily.objects.create(user=user).id
    refresh = FamilyRefreshToken.for_user(user, family_id=family_id)
    claims = user_claims(user)
    refresh["name"] = claims["name"]
    refresh["email"] = claims["email"]
    refresh[AUTH_TIME_CLAIM] = int(time.time()) if auth_time is None else auth_time
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


def _load_or_revoke(raw: str, ip: str | None = None) -> tuple[FamilyRefreshToken, User]:
    try:
        return _refresh_token_load(raw)
    except _Reused as reused:
        # A rotated token came back: someone holds a copy. End every descendant of that login.
        with transaction.atomic():
            refresh_family_revoke(family_id=reused.family_id)
            user_id = RefreshTokenFamily.objects.filter(id=reused.family_id).values_list("user_id", flat=True).first()
            audit.record(user_id, "auth.refresh_reuse", ip=ip, detail={"family_id": str(reused.family_id)})
        raise InvalidRefreshToken("This refresh token was already used; its login is revoked.") from None


def token_pair_refresh(*, refresh_token: str, ip: str | None = None) -> TokenPair:
    """Rotate: the presented refresh token dies, a new pair of the same family is issued."""
    token, user = _load_or_revoke(refresh_token, ip)
    with transaction.atomic():
        _blacklisted, created = cast(tuple[Any, bool], token.blacklist())  # get_or_create's pair, mistyped
        if not created:  # a concurrent refresh with the same token won the race
            raise InvalidRefreshToken("Token is blacklisted")
        # A token from before `auth_time` existed says 0: its sign-in is long past, never fresh.
        auth_time = token.get(AUTH_TIME_CLAIM)
        return token_pair_issue(
            user=user, family_id=token[FAMILY_CLAIM], auth_time=auth_time if isinstance(auth_time, int) else 0
        )


@transaction.atomic
def user_delete(*, user: User) -> None:
    """Delete a user and everything theirs, as the API deletes: their workspaces (conversations,
    messages and events with them) and their memory, purged through the outbox; their streams end
    (`streaming` listens to the delete); their refresh tokens' records go too (simplejwt would keep
    them with the user unset, each token's text still carrying the name and email)."""
    user_deleting.send(sender=User, user=user)
    OutstandingToken.objects.filter(user=user).delete()
    user_id = user.pk
    user.delete()
    # The audit log keeps what happened to the account, with nothing personal but its id.
    audit.record(user_id, "account.erased")
    audit.strip(user_id)


def refresh_token_revoke(*, refresh_token: str, ip: str | None = None) -> None:
    """Logout: this token is dead (the family's other, already rotated tokens are dead anyway), and
    so is every stream credential issued before now (`User.sessions_ended_at`; the save ends the
    user's open streams through `streaming`'s receiver)."""
    token, user = _load_or_revoke(refresh_token, ip)
    with transaction.atomic():
        token.blacklist()
        user.sessions_ended_at = timezone.now()
        user.save(update_fields=["sessions_ended_at"])
        audit.record(user, "auth.logout", ip=ip)


# Sign-in with identity providers (accounts.oidc verifies the tokens; these are the writes).

LOGIN_CODE_SECONDS = 60


class IdentityRefused(Exception):
    """The verified identity may not sign in: not linked and not provisioned, or inactive."""


def _claimed_email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    if not email and isinstance(claims.get("emails"), list) and claims["emails"]:
        email = claims["emails"][0]  # Azure AD B2C's user flows send a list
    return email.strip().lower() if isinstance(email, str) and "@" in email and len(email) <= 254 else ""


def _identity_provision(*, provider: Provider, claims: dict[str, Any], email: str) -> ExternalIdentity:
    if provider.provision == "off":
        raise IdentityRefused(f"{provider.name} does not provision users")
    if not email:
        raise IdentityRefused("the token carries no email address")
    # Only the provider's word that it verified this address may join it to an account, or create
    # one with it ("auto": an unverified address would squat it, and an `existing` provider would
    # later link its owner's verified identity to the squatter's account).
    if claims.get("email_verified") is not True:
        raise IdentityRefused("the email address is not verified")
    user = User.objects.filter(email=email).first()
    if provider.provision == "existing":
        if user is None:
            raise IdentityRefused("no user has this email address")
        if user.is_staff or user.is_superuser:  # an operator links staff by hand (issuer and sub)
            raise IdentityRefused("a staff account is never linked by email")
    elif user is not None:  # "auto": an email alone never links to an existing account
        raise IdentityRefused("another account has this email address")
    try:
        with transaction.atomic():
            if user is None:
                name = claims.get("name")
                user = User.objects.create_user(email=email, name=name[:200] if isinstance(name, str) else "")
            return ExternalIdentity.objects.create(
                user=user, provider=provider.name, issuer=claims["iss"], subject=claims["sub"], email=email
            )
    except (IntegrityError, ValidationError):
        # A concurrent first sign-in linked this identity (or took this email) first; or the
        # provider's address is not one we can store.
        raise IdentityRefused("the identity could not be linked; sign in again") from None


@transaction.atomic
def identity_sign_in(*, provider: Provider, claims: dict[str, Any]) -> ExternalIdentity:
    """The identity (issuer, `sub`) of verified `claims`, linked or provisioned as `provider` allows.

    Raises `IdentityRefused` when it is not linked and may not be, or when its user is inactive.
    """
    email = _claimed_email(claims)
    identity = (
        ExternalIdentity.objects.select_related("user").filter(issuer=claims["iss"], subject=claims["sub"]).first()
    )
    if identity is None:
        identity = _identity_provision(provider=provider, claims=claims, email=email)
    if not identity.user.is_active:
        raise IdentityRefused("the user is deactivated")
    identity.last_login = timezone.now()
    identity.email = email or identity.email
    identity.save(update_fields=["last_login", "email"])
    return identity


@transaction.atomic
def identity_token_pair_issue(*, identity: ExternalIdentity) -> TokenPair:
    """A login through `identity`: its refresh token family dies with the link."""
    family = RefreshTokenFamily.objects.create(user=identity.user)
    IdentitySignIn.objects.create(family=family, identity=identity)
    return token_pair_issue(user=identity.user, family_id=family.id)


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@transaction.atomic
def login_code_create(*, identity: ExternalIdentity, browser_hash: str) -> str:
    """A single-use code for the browser's page to redeem (the code flow ends with it, never with
    a token in a URL), bound to the browser that started the flow (`browser_hash`: the SHA-256 of
    its sign-in cookie). Expired codes are swept here: there are few, and the index finds them."""
    now = timezone.now()
    LoginCode.objects.filter(expires_at__lte=now).delete()
    code = secrets.token_urlsafe(32)
    LoginCode.objects.create(
        code_hash=_code_hash(code),
        identity=identity,
        expires_at=now + timedelta(seconds=LOGIN_CODE_SECONDS),
        browser_hash=browser_hash,
    )
    return code


def browser_hash(browser: str) -> str:
    """What a login code keeps of the sign-in browser cookie's value."""
    return _code_hash(browser)


def login_code_redeem(*, login_code: str, browser: str) -> ExternalIdentity:
    """The identity a live `login_code` was made for, redeemed by the browser that started its
    flow (`browser`: its sign-in cookie's value); the code is gone after the first try, even a
    refused one (so no transaction: the delete must stay when the refusal is raised)."""
    row = LoginCode.objects.select_related("identity__user").filter(code_hash=_code_hash(login_code)).first()
    # The delete decides between two concurrent redeems: only one of them deletes the row.
    if row is None or LoginCode.objects.filter(code_hash=row.code_hash).delete()[0] != 1:
        raise IdentityRefused("unknown or used login code")
    if row.expires_at <= timezone.now():
        raise IdentityRefused("expired login code")
    if not browser or not row.browser_hash or not hmac.compare_digest(row.browser_hash, browser_hash(browser)):
        raise IdentityRefused("a login code redeemed by another browser than the one that started its sign-in")
    if not row.identity.user.is_active:
        raise IdentityRefused("the user is deactivated")
    return row.identity
