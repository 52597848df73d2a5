"""`manage.py check` (and every server start) validates OIDC_PROVIDERS."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

_MULTI_TENANT = ("/common/", "/organizations/", "/consumers/")


@register(Tags.security)
def oidc_providers_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from accounts.oidc import config_errors  # authlib: imported when the checks run, not with the app

    raw = settings.OIDC_PROVIDERS
    found: list[CheckMessage] = [Error(error, id="accounts.E001") for error in config_errors(raw)]
    if found:
        return found
    for entry in raw:
        issuer = entry["issuer"].rstrip("/") + "/"
        if any(part in issuer for part in _MULTI_TENANT) and entry["provision"] == "auto" and not entry.get("tenants"):
            found.append(
                Warning(
                    f"OIDC provider {entry['name']} is multi-tenant with provision 'auto' and no 'tenants': "
                    "anyone with an account in any tenant can create a Cortex user.",
                    hint="List the allowed tenant ids in 'tenants', or use provision 'existing'.",
                    id="accounts.W001",
                )
            )
    return found
