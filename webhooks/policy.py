"""Where a webhook may point: the expert host policy with WEBHOOK_ALLOWED_HOSTS, and `https`
outside debug (plain `http` only to loopback, where nothing crosses a network)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from mcp_services.basics import is_loopback
from mcp_services.experts import hosts

SETTING = "WEBHOOK_ALLOWED_HOSTS"


def url_refusal(url: str) -> str | None:
    """Why the core will not deliver to `url`, or None."""
    refusal = hosts.url_refusal(url, setting=SETTING)
    if refusal is not None:
        return refusal
    parts = urlsplit(url)
    if parts.scheme != "https" and not settings.DEBUG and not is_loopback((parts.hostname or "").lower()):
        return "Webhook URLs must use https (plain http only to loopback, or in debug mode)."
    if parts.fragment:
        return "The URL may not carry a fragment."
    return None
