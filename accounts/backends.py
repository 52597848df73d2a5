"""Password login for every path (the API, the admin, anything calling `authenticate`), with the
failed-login limits of `accounts.limits` applied before the password is checked (per device for
a request with the account's device cookie, which `POST /auth/login` sets)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from accounts import limits
from common.web.addresses import client_address


class LimitedModelBackend(ModelBackend):
    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ):
        login = username if username is not None else kwargs.get("email")
        if login is None or password is None:
            return None
        address = client_address(request) if request is not None else None
        cookie = request.COOKIES.get(limits.DEVICE_COOKIE) if request is not None else None
        device = limits.trusted_device(email=str(login), cookie=cookie)
        try:
            limits.login_attempt_begin(email=str(login), address=address, device=device)
        except limits.LoginLimited as limited:
            if request is not None:
                request.login_retry_after = limited.retry_after  # type: ignore[attr-defined]
            # Stops `authenticate` here: no other backend may check the password either.
            raise PermissionDenied(str(limited)) from None
        user = super().authenticate(request, username=login, password=password, **kwargs)
        if user is not None:
            limits.login_attempt_succeeded(email=str(login), address=address, device=device)
        return user
