from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models, transaction
from django.utils import timezone

import audit
from common.fields import MetadataField


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.full_clean(exclude=["password"])
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200, blank=True)
    metadata = MetadataField()
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # The last logout or password change: stream tickets, stream cookies and open streams whose
    # credential was issued before it are refused (`streaming`), on every process within
    # STREAM_RECHECK_SECONDS and at once through the channel layer.
    sessions_ended_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["name"]

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.name or self.email

    def get_short_name(self) -> str:
        return self.name or self.email

    def save(self, *args: Any, **kwargs: Any) -> None:
        # `_password` is set by `set_password` until the next save: a password change by any path
        # (admin, `changepassword`, shell; not a hasher upgrade at login, which clears it first)
        # ends what was signed in before it.
        if getattr(self, "_password", None) is not None and not self._state.adding:
            self.sessions_ended_at = timezone.now()
            fields = kwargs.get("update_fields")
            if fields is not None and "password" in fields:
                kwargs["update_fields"] = {*fields, "sessions_ended_at"}
            with transaction.atomic():  # the change and its audit entry commit together
                super().save(*args, **kwargs)
                audit.record(self, "auth.password_changed")
            return
        super().save(*args, **kwargs)


class RefreshTokenFamily(models.Model):
    """Every refresh token descended from one login (rotation passes the family on, claim `fam`).

    Presenting a rotated (blacklisted) token is the sign that a token was stolen: the whole family
    is revoked, so the thief's and the victim's newest tokens both stop working (OAuth 2.0
    Security BCP, refresh token rotation).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "refresh token families"

    def __str__(self) -> str:
        return f"{self.user_id} since {self.created_at:%Y-%m-%d %H:%M}"


class ExternalIdentity(models.Model):
    """A user's account at an identity provider: (issuer, `sub`) names it, one user owns it.

    `issuer` is the token's own `iss` (for Entra multi-tenant providers, the tenant's issuer), so
    the same `sub` at two tenants or two providers is two identities. Deleting the row unlinks it:
    the provider's ID tokens no longer sign this user in, and the refresh tokens its sign-ins
    started are revoked (`IdentitySignIn`, `accounts.services`).
    """

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="identities")
    provider = models.CharField(max_length=64, help_text="The OIDC_PROVIDERS entry that linked it.")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    email = models.EmailField(blank=True, help_text="As the provider said at the last sign-in.")
    created_at = models.DateTimeField(default=timezone.now)
    last_login = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "external identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="identity_issuer_subject_unique")]

    def __str__(self) -> str:
        return f"{self.provider}: {self.subject}"


class IdentitySignIn(models.Model):
    """Which refresh token family an identity started: unlinking the identity revokes them."""

    family = models.OneToOneField("accounts.RefreshTokenFamily", on_delete=models.CASCADE, primary_key=True)
    identity = models.ForeignKey(ExternalIdentity, on_delete=models.CASCADE, related_name="sign_ins")

    def __str__(self) -> str:
        return f"{self.identity_id}: {self.family_id}"


class LoginCode(models.Model):
    """The code flow's single-use hand-over (`return_to?login_code=...`): only its SHA-256 is kept,
    it lives `LOGIN_CODE_SECONDS`, is deleted when redeemed, and belongs to one browser."""

    code_hash = models.CharField(max_length=64, primary_key=True)
    identity = models.ForeignKey(ExternalIdentity, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField(db_index=True)
    # SHA-256 of the sign-in browser cookie of the browser that started the flow: only that browser
    # redeems the code (a code sent to someone else signs nobody in). Empty: redeemable by none.
    browser_hash = models.CharField(max_length=64, default="")

    def __str__(self) -> str:
        return f"login code until {self.expires_at:%H:%M:%S}"
