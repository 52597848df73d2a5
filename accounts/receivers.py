"""The accounts app's receivers, connected at start by every Django process (accounts.apps): they
import the models only, not the services or the authentication (DRF, simplejwt), which the
workers and services never load."""

from __future__ import annotations

import sys
from typing import Any

from django.utils import timezone

from accounts.models import ExternalIdentity, RefreshTokenFamily


def forget_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_save/post_delete of a user: this process's cache of authenticated users forgets them
    at once (others within the TTL, accounts.authentication). A process that has not imported that
    module caches no user."""
    authentication = sys.modules.get("accounts.authentication")
    if authentication is not None:
        authentication.forget_user(sender, instance, **kwargs)


def identity_unlinking(sender: Any, instance: ExternalIdentity, **kwargs: Any) -> None:
    """pre_delete of an identity (the admin, a service, a user's deletion): the logins it started
    end, so a deleted link leaves no refresh token of that provider working."""
    RefreshTokenFamily.objects.filter(identitysignin__identity=instance, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
