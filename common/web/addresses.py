"""Who is asking: the client address, which a client cannot choose by sending `X-Forwarded-For`.

The address is the peer's unless the peer is a configured proxy (`TRUSTED_PROXIES`, none by default).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest


@lru_cache(maxsize=8)
def _proxy_networks(proxies: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _is_trusted_proxy(address: str) -> bool:
    networks = _proxy_networks(tuple(settings.TRUSTED_PROXIES))
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: HttpRequest) -> str:
    """The real client address: `X-Forwarded-For` counts only when the peer is a trusted proxy."""
    address = request.META.get("REMOTE_ADDR") or "unknown"
    if not _is_trusted_proxy(address):
        return address
    forwarded = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(forwarded):  # appended by each proxy: the rightmost untrusted hop is the client
        if not _is_trusted_proxy(hop):
            return hop
        address = hop
    return address


def peer_is_loopback(request: HttpRequest) -> bool:
    """The connection itself comes from this machine (the peer, never a forwarded address): for
    paths only the deployment's own processes may use."""
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "").is_loopback
    except ValueError:
        return False
