"""No server-side request forgery: the only hosts the core calls as experts are the listed ones.

`EXPERT_ALLOWED_HOSTS` lists host names, IP addresses and networks (CIDR). A URL is refused
(`url_refusal`) unless it is http(s), carries no credentials, and its host is a listed name or an
address inside a listed network. Just before each call the host is resolved again
(`check_resolved`): every address it resolves to must be inside a listed network, or a public
(global) address, so a listed name that someone points at 169.254.169.254, 10.x or loopback is
refused. The same check runs again at the socket (`CheckedBackend`), which connects only to the
addresses it has just checked: a name re-pointed between the check and the connection (DNS
rebinding) gets nowhere. The core never follows redirects from an expert (the client is built
with `follow_redirects=False`; the MCP SDK follows only same-origin 307/308 ones, which reach the
socket check again), so an allowed expert cannot bounce a call elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from contextvars import ContextVar
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from httpcore2 import AsyncNetworkBackend, AsyncNetworkStream, ConnectError
from httpcore2._backends.base import SOCKET_OPTION

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
    await resolve_allowed(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


async def resolve_allowed(host: str, port: int) -> list[IPAddress]:
    """The addresses of `host`, each inside a listed network or public; else `CortexError`.

    Also what a connection is made to (`CheckedBackend`): the address checked is the address
    connected, so a name re-pointed between the check and the connect (DNS rebinding) gains nothing.
    """
    host = host.strip("[]").rstrip(".")
    _, networks = _policy()
    literal = _address(host)
    if literal is not None:
        if not _in(literal, networks):
            raise CortexError(ErrorCode.PERMISSION_DENIED, f"The address {literal} is not in EXPERT_ALLOWED_HOSTS.")
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CortexError(
            ErrorCode.SERVICE_UNAVAILABLE, f"The expert's host {host!r} does not resolve: {exc}"
        ) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not (_in(address, networks) or address.is_global):
            raise CortexError(
                ErrorCode.PERMISSION_DENIED,
                f"The host {host!r} resolves to {address}, which is not allowed (list it in EXPERT_ALLOWED_HOSTS).",
            )
        if address not in addresses:
            addresses.append(address)
    return addresses


class CheckedBackend(AsyncNetworkBackend):
    """httpcore's network backend with the host policy at the socket: every connection is made to
    an address `resolve_allowed` has just checked (TLS still names the host, for SNI and the
    certificate). An expert URL never reaches a socket that the policy did not allow."""

    def __init__(self, inner: AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        try:
            addresses = await resolve_allowed(host, port)
        except CortexError as exc:
            raise ConnectError(exc.message) from None
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except ConnectError as exc:
                error = exc
        raise error or ConnectError(f"{host} has no address")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> AsyncNetworkStream:
        raise ConnectError("Experts are reached over TCP only.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class ResponseTooLarge(httpx2.ReadError):
    """An expert's response is announced larger than `response_limit()` bytes: it is not read."""


def response_limit() -> int:
    """The most bytes of one expert response the core reads: room for a result of
    EXPERT_RESULT_MAX_BYTES as text and as structured content, JSON-escaped, in its JSON-RPC frame."""
    return 4 * settings.EXPERT_RESULT_MAX_BYTES + 64 * 1024


# Set by a caller to a list: a refusal for size is noted there too. The MCP SDK's transport task
# does not always pass its error on to the call it was serving; the note survives that.
oversize: ContextVar[list[str] | None] = ContextVar("expert_oversize", default=None)


class _BoundedTransport(httpx2.AsyncHTTPTransport):
    """A response whose `Content-Length` is past `response_limit()` is refused before its body is
    read: a hostile expert cannot make the core buffer a huge answer (the MCP SDK reads a whole
    response before we see the result). A body without a length (chunked, or an event stream) is
    bounded by the call's timeout, and its result by EXPERT_RESULT_MAX_BYTES once read."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        length = response.headers.get("content-length", "")
        limit = response_limit()
        if length.isdigit() and int(length) > limit:
            await response.aclose()
            reason = f"its response is {int(length):,} bytes, more than {limit:,}"
            noted = oversize.get()
            if noted is not None:
                noted.append(reason)
            raise ResponseTooLarge(reason)
        return response


def checked_transport() -> httpx2.AsyncHTTPTransport:
    """An httpx transport whose connections go only to addresses the host policy allows, and which
    refuses a response announced as larger than `response_limit()`."""
    transport = _BoundedTransport(trust_env=False)
    # httpx2 takes no network backend argument: its pool's is wrapped (versions pinned; the
    # call-time SSRF tests go through this).
    pool = transport._pool
    pool._network_backend = CheckedBackend(pool._network_backend)
    return transport
