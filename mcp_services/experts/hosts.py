"""No server-side request forgery: the only hosts the core calls as experts are the listed ones.

`EXPERT_ALLOWED_HOSTS` lists host names, IP addresses and networks (CIDR). A URL is refused
(`url_refusal`) unless it is http(s), carries no credentials, and its host is a listed name or an
address inside a listed network. Just before each call the host is resolved again
(`check_resolved`): every address it resolves to must be inside a listed network, or a public
(global) address, so a listed name that someone points at 169.254.169.254, 10.x or loopback is
refused. The core never follows redirects from an expert (the client is built with
`follow_redirects=False`), so an allowed expert cannot bounce a call elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from common.errors import CortexError, ErrorCode

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _policy() -> tuple[set[str], list[IPNetwork]]:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in settings.EXPERT_ALLOWED_HOSTS:
        value = entry.strip().strip("[]").lower()
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            names.add(value.rstrip("."))
    return names, networks


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _in(address: IPAddress, networks: list[IPNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)


def url_refusal(url: str) -> str | None:
    """Why the core will not call `url`, or None when its host is allowed."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "The URL is malformed."
    if parts.scheme not in ("http", "https"):
        return "Only http and https URLs are allowed."
    if parts.username or parts.password:
        return "The URL may not carry credentials."
    if not host:
        return "The URL has no host."
    names, networks = _policy()
    address = _address(host)
    if (address is not None and _in(address, networks)) or (address is None and host in names):
        return None
    return f"The host {host!r} is not in EXPERT_ALLOWED_HOSTS."


async def check_resolved(url: str) -> None:
    """Refuse the call unless the URL is allowed and every address its host resolves to is too."""
    refusal = url_refusal(url)
    if refusal is not None:
        raise CortexError(ErrorCode.PERMISSION_DENIED, refusal)
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if _address(host) is not None:
        return  # a literal address inside a listed network (url_refusal checked it)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CortexError(
            ErrorCode.SERVICE_UNAVAILABLE, f"The expert's host {host!r} does not resolve: {exc}"
        ) from None
    _, networks = _policy()
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not (_in(address, networks) or address.is_global):
            raise CortexError(
                ErrorCode.PERMISSION_DENIED,
                f"The host {host!r} resolves to {address}, which is not allowed (list it in EXPERT_ALLOWED_HOSTS).",
            )
