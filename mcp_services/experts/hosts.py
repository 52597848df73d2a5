"""No server-side request forgery: the only hosts and ports the core calls as experts are the listed ones.

`EXPERT_ALLOWED_HOSTS` lists host names, IP addresses and networks (CIDR), each with an optional
port (`notes.internal:9200`, `10.0.8.0/24:8080`, `[fd00::/64]:8443`, `127.0.0.1:*` for any port);
an entry without one allows ports 80 and 443 only. A URL is refused (`url_refusal`) unless it is
http(s), carries no credentials, and its host is a listed name or an address inside a listed
network, with its port. Just before each call the host is resolved again (`check_resolved`):
every address it resolves to must be inside a listed network that allows the port, or a public
(global) address, so a listed name that someone points at 169.254.169.254, 10.x or loopback is
refused. An IPv6 address that carries an IPv4 address (IPv4-mapped and IPv4-compatible, NAT64
`64:ff9b::/96`, 6to4 `2002::/16`) is judged by the IPv4 address inside; the local-use NAT64 prefix
(`64:ff9b:1::/48`, where the IPv4 address may sit anywhere) and the deprecated site-local
`fec0::/10` are never public. The same check runs again at the socket (`CheckedBackend`), which
connects only to the addresses it has just checked: a name re-pointed between the check and the
connection (DNS rebinding) gets nowhere. The core never follows redirects from an expert (the
client is built with `follow_redirects=False`; the MCP SDK follows only same-origin 307/308 ones,
which reach the socket check again), so an allowed expert cannot bounce a call elsewhere.

Webhooks (`webhooks.delivery`) obey the same policy with their own list, `WEBHOOK_ALLOWED_HOSTS`
(the `setting` argument): same entries, same resolution and socket checks.

What an expert answers is bounded while it streams (`BoundedTransport`): one operation (a call,
or a discovery with all its pages) reads at most `response_limit()` bytes, however they come
(`Content-Length`, chunked, an event stream), and no compressed body is accepted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from httpcore2 import AsyncNetworkBackend, AsyncNetworkStream, ConnectError
from httpcore2._backends.base import SOCKET_OPTION

from common.errors import CortexError, ErrorCode

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = frozenset({80, 443})
EXPERTS = "EXPERT_ALLOWED_HOSTS"  # the allow-list experts obey (webhooks name theirs: WEBHOOK_ALLOWED_HOSTS)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Python 3.12.1 calls these global. The local-use NAT64 prefix may embed its IPv4 address at any of
# RFC 6052's offsets, so what it reaches cannot be told; site-local is deprecated and never public.
_NEVER_PUBLIC = (ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("fec0::/10"))


@dataclass(frozen=True)
class _Entry:
    """One `EXPERT_ALLOWED_HOSTS` entry: a name or a network, and its ports (None: any)."""

    name: str | None
    network: IPNetwork | None
    ports: frozenset[int] | None

    def allows_port(self, port: int) -> bool:
        return self.ports is None or port in self.ports


def _ports(text: str, entry: str, setting: str = EXPERTS) -> frozenset[int] | None:
    if text == "*":
        return None
    if text.isdigit() and 0 < int(text) < 65536:
        return frozenset({int(text)})
    raise ImproperlyConfigured(f"{setting}: {entry!r} has a bad port (a number or *).")


def _entry(raw: str, setting: str = EXPERTS) -> _Entry:
    value = raw.strip().lower()
    ports: frozenset[int] | None = DEFAULT_PORTS
    if value.startswith("["):  # [IPv6 address or network], with an optional :port
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ImproperlyConfigured(f"{setting}: {raw!r} is malformed.")
        if rest:
            ports = _ports(rest[1:], raw, setting)
    elif value.count(":") == 1:  # name:port or IPv4[/prefix]:port (a bare IPv6 has several colons)
        host, _, port = value.partition(":")
        ports = _ports(port, raw, setting)
    else:
        host = value
    try:
        return _Entry(name=None, network=ipaddress.ip_network(host, strict=False), ports=ports)
    except ValueError:
        pass
    name = host.rstrip(".")
    if not name or "/" in name or ":" in name:
        raise ImproperlyConfigured(f"{setting}: {raw!r} is neither a host name nor an address.")
    return _Entry(name=name, network=None, ports=ports)


def _policy(setting: str = EXPERTS) -> list[_Entry]:
    return [_entry(raw, setting) for raw in getattr(settings, setting) if raw.strip()]


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def judged(address: IPAddress) -> IPAddress:
    """The address that decides: the IPv4 address an IPv6 address carries (mapped, compatible,
    NAT64, 6to4), else the address itself. `::ffff:10.0.0.1` or `64:ff9b::a00:1` is 10.0.0.1."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):  # not :: nor ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _in(address: IPAddress, network: IPNetwork) -> bool:
    """Inside `network`, judged by the IPv4 address it carries if any: `64:ff9b::a00:1` is listed
    where 10.0.0.1 is, and not because someone listed 64:ff9b::/96 or ::/0."""
    address = judged(address)
    return address.version == network.version and address in network


def _listed(address: IPAddress, port: int, entries: list[_Entry]) -> bool:
    return any(
        entry.network is not None and entry.allows_port(port) and _in(address, entry.network) for entry in entries
    )


def _public(address: IPAddress) -> bool:
    if any(address in network for network in _NEVER_PUBLIC):
        return False
    return judged(address).is_global


def _host_refusal(host: str, port: int, entries: list[_Entry], setting: str = EXPERTS) -> str | None:
    """Why `host`:`port` is not listed, or None: a name must be listed, an address inside a listed
    network; either with the port (80 and 443 unless the entry names its ports)."""
    address = _address(host)
    matching = [
        entry
        for entry in entries
        if (address is None and entry.name == host)
        or (address is not None and entry.network is not None and _in(address, entry.network))
    ]
    if not matching:
        return f"The host {host!r} is not in {setting}."
    if not any(entry.allows_port(port) for entry in matching):
        named = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return (
            f"The port {port} of {host!r} is not allowed: an {setting} entry allows 80 and 443"
            f" unless it names its port ({named})."
        )
    return None


def url_refusal(url: str, *, setting: str = EXPERTS) -> str | None:
    """Why the core will not call `url`, or None when its host and port are allowed (by the
    allow-list named `setting`: experts', or `WEBHOOK_ALLOWED_HOSTS` for webhooks)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "The URL is malformed."
    if parts.scheme not in ("http", "https"):
        return "Only http and https URLs are allowed."
    if parts.username or parts.password:
        return "The URL may not carry credentials."
    if not host:
        return "The URL has no host."
    return _host_refusal(host, port, _policy(setting), setting)


async def check_resolved(url: str, *, setting: str = EXPERTS) -> None:
    """Refuse the call unless the URL is allowed and every address its host resolves to is too."""
    refusal = url_refusal(url, setting=setting)
    if refusal is not None:
        raise CortexError(ErrorCode.PERMISSION_DENIED, refusal)
    parts = urlsplit(url)
    await resolve_allowed(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), setting=setting)


async def resolve_allowed(host: str, port: int, *, setting: str = EXPERTS) -> list[IPAddress]:
    """The addresses of `host`, each inside a listed network that allows `port`, or public; else
    `CortexError`. The host itself must be listed with the port.

    Also what a connection is made to (`CheckedBackend`): the address checked is the address
    connected, so a name re-pointed between the check and the connect (DNS rebinding) gains nothing.
    """
    host = host.strip("[]").lower().rstrip(".")
    entries = _policy(setting)
    refusal = _host_refusal(host, port, entries, setting)
    if refusal is not None:
        raise CortexError(ErrorCode.PERMISSION_DENIED, refusal)
    literal = _address(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CortexError(ErrorCode.SERVICE_UNAVAILABLE, f"The host {host!r} does not resolve: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not (_listed(address, port, entries) or _public(address)):
            raise CortexError(
                ErrorCode.PERMISSION_DENIED,
                f"The host {host!r} resolves to {address}, which is not allowed on port {port}"
                f" (list it, with the port, in {setting}).",
            )
        if address not in addresses:
            addresses.append(address)
    return addresses


class CheckedBackend(AsyncNetworkBackend):
    """httpcore's network backend with the host policy at the socket: every connection is made to
    an address `resolve_allowed` has just checked (TLS still names the host, for SNI and the
    certificate). An expert URL never reaches a socket that the policy did not allow."""

    def __init__(self, inner: AsyncNetworkBackend, setting: str = EXPERTS) -> None:
        self._inner = inner
        self._setting = setting

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        try:
            addresses = await resolve_allowed(host, port, setting=self._setting)
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
        raise ConnectError("Only TCP connections are made.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def checked_transport(setting: str = EXPERTS) -> httpx2.AsyncHTTPTransport:
    """An httpx transport whose connections go only to addresses the host policy allows (one per
    event loop: its pool and TLS context are the costly part; `BoundedTransport` goes over it)."""
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    # httpx2 takes no network backend argument: its pool's is wrapped (versions pinned; the
    # call-time SSRF tests go through this).
    pool = transport._pool
    pool._network_backend = CheckedBackend(pool._network_backend, setting)
    return transport


def response_limit() -> int:
    """The most bytes the core reads from an expert for one operation: room for a result of
    EXPERT_RESULT_MAX_BYTES as text and as structured content, JSON-escaped, in its JSON-RPC frame."""
    return 4 * settings.EXPERT_RESULT_MAX_BYTES + 64 * 1024


class ResponseTooLarge(httpx2.ReadError):
    """An expert answered more than its operation's `ResponseBudget`: the rest is not read."""


class ResponseBudget:
    """What one operation (a call, a discovery) may still read from its expert, over every response
    it gets (the handshake, the answer, a resumed event stream, another page of tools).

    `exceeded` keeps the reason: the MCP SDK's transport task does not always pass a read error on
    to the request it was serving (an event stream that failed is reported as "ended without a
    response"), so the operation asks its budget why it failed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.read = 0
        self.exceeded: str | None = None

    def refuse(self, reason: str) -> ResponseTooLarge:
        self.exceeded = self.exceeded or reason
        return ResponseTooLarge(reason)


class _CountedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, budget: ResponseBudget) -> None:
        self._inner = inner
        self._budget = budget

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            budget = self._budget
            budget.read += len(chunk)
            if budget.read > budget.limit:
                await self._inner.aclose()  # the connection is dropped, not drained
                raise budget.refuse(f"it sent more than {budget.limit:,} bytes (cut off after {budget.read:,})")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class BoundedTransport(httpx2.AsyncBaseTransport):
    """One operation's view of the loop's checked transport: its responses together are read up to
    the budget and no further, counted as the bytes arrive (the MCP SDK reads a JSON answer whole
    with `aread()`, and an event stream for as long as it lasts, before we see any result). A
    length announced past the budget is refused unread. A compressed body is refused (we ask for
    `identity`): its bytes on the wire would say nothing of its size once inflated."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, budget: ResponseBudget) -> None:
        self._inner = inner
        self._budget = budget

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        budget = self._budget
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        length = response.headers.get("content-length", "")
        refusal: str | None = None
        if encoding not in ("", "identity"):
            refusal = f"its response is {encoding}-encoded (only identity is accepted)"
        elif length.isdigit() and budget.read + int(length) > budget.limit:
            refusal = f"its answers come to {budget.read + int(length):,} bytes, more than {budget.limit:,}"
        if refusal is not None:
            await response.aclose()
            raise budget.refuse(refusal)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CountedStream(response.stream, budget)
        return response

    async def aclose(self) -> None:
        """Nothing: the inner transport is the loop's, shared by every operation."""
