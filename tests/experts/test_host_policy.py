"""The expert host policy without a network: IPv6 forms that carry an IPv4 address are judged by
it, ports are limited (80 and 443 unless an entry names one), the debug default keeps the shipped
notes expert (port 9200) working, a bad entry stops the process, and requests that discover are
limited per user. DNS is the world outside: where a name must resolve, the loop's resolver is
replaced by one that answers what the test says."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from common.errors import CortexError
from conftest import client_for
from mcp_services.experts import hosts
from mcp_services.experts.checks import allowed_hosts_check
from mcp_services.experts.views import DiscoveryRateThrottle
from tests.factories import WorkspaceFactory
from tests.servers import free_port

# IPv6 forms of private IPv4 addresses, and forms whose target cannot be told: never public.
HIDDEN_PRIVATE = [
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
    "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215): the IPv4 address may sit anywhere
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "fec0::1",  # deprecated site-local
    "::a00:1",  # IPv4-compatible 10.0.0.1
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::ffff:a9fe:a9fe",  # IPv4-mapped 169.254.169.254 (was judged right already)
]
# The same forms of a public IPv4 address stay public.
HIDDEN_PUBLIC = ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"]


def _resolving_to(monkeypatch, address: str) -> None:
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("address", HIDDEN_PRIVATE)
async def test_a_listed_name_resolving_to_an_ipv6_form_of_a_private_address_is_refused(address, settings, monkeypatch):
    settings.EXPERT_ALLOWED_HOSTS = ["expert.example"]
    _resolving_to(monkeypatch, address)
    with pytest.raises(CortexError) as refused:
        await hosts.check_resolved("https://expert.example/mcp")
    assert refused.value.code == "permission_denied" and "resolves to" in refused.value.message


@pytest.mark.parametrize("address", HIDDEN_PUBLIC)
async def test_the_same_forms_of_a_public_address_are_allowed(address, settings, monkeypatch):
    settings.EXPERT_ALLOWED_HOSTS = ["expert.example"]
    _resolving_to(monkeypatch, address)
    assert await hosts.resolve_allowed("expert.example", 443) == [hosts.ipaddress.ip_address(address)]


async def test_an_embedded_address_is_listed_where_its_ipv4_address_is_not_by_its_ipv6_prefix(settings):
    settings.EXPERT_ALLOWED_HOSTS = ["10.0.0.0/8", "64:ff9b::/96", "2002::/16"]
    assert await hosts.resolve_allowed("64:ff9b::a00:1", 443)  # 10.0.0.1: listed
    for literal in ("64:ff9b::a9fe:a9fe", "2002:7f00:1::1"):  # 169.254.169.254, 127.0.0.1: not
        assert hosts.url_refusal(f"https://[{literal}]/mcp") is not None
        with pytest.raises(CortexError):
            await hosts.resolve_allowed(literal, 443)


@pytest.mark.parametrize(
    ("allowed", "url", "ok"),
    [
        (["127.0.0.1"], "http://127.0.0.1/mcp", True),
        (["127.0.0.1"], "https://127.0.0.1/mcp", True),
        (["127.0.0.1"], "http://127.0.0.1:9200/mcp", False),  # a bare entry: 80 and 443 only
        (["127.0.0.1"], "http://127.0.0.1:22/", False),
        (["127.0.0.1:9200"], "http://127.0.0.1:9200/mcp", True),
        (["127.0.0.1:9200"], "http://127.0.0.1:9201/mcp", False),
        (["127.0.0.1:9200"], "http://127.0.0.1/mcp", False),  # an entry with a port: that port only
        (["127.0.0.1:*"], "http://127.0.0.1:6379/", True),
        (["notes.internal:9200"], "http://notes.internal:9200/mcp", True),
        (["notes.internal:9200"], "http://notes.internal:8080/mcp", False),
        (["10.0.8.0/24:8080"], "http://10.0.8.5:8080/mcp", True),
        (["10.0.8.0/24:8080"], "http://10.0.8.5:8081/mcp", False),
        (["[::1]:9200"], "http://[::1]:9200/mcp", True),
        (["::1"], "http://[::1]:9200/mcp", False),
        (["[fd00::/64]:8443"], "https://[fd00::5]:8443/mcp", True),
    ],
)
def test_ports_are_limited_to_80_and_443_unless_the_entry_names_one(settings, allowed, url, ok):
    settings.EXPERT_ALLOWED_HOSTS = allowed
    refusal = hosts.url_refusal(url)
    assert (refusal is None) is ok, refusal
    if not ok and "not in EXPERT_ALLOWED_HOSTS" not in (refusal or ""):
        assert "port" in (refusal or "")


async def test_the_socket_refuses_a_port_the_policy_does_not_allow(settings):
    """A same-origin redirect, or any other way to a socket, meets the port rule there too."""
    settings.EXPERT_ALLOWED_HOSTS = ["127.0.0.1:9200"]
    with pytest.raises(CortexError, match="port 9300"):
        await hosts.resolve_allowed("127.0.0.1", 9300)
    assert await hosts.resolve_allowed("127.0.0.1", 9200)


@pytest.mark.parametrize("entry", ["127.0.0.1:http", "127.0.0.1:0", "[::1", "[::1]9200", "a/b"])
def test_a_bad_entry_stops_the_process_with_the_reason(settings, entry):
    settings.EXPERT_ALLOWED_HOSTS = [entry]
    with pytest.raises(ImproperlyConfigured, match="EXPERT_ALLOWED_HOSTS"):
        hosts.url_refusal("http://127.0.0.1/")
    assert [error.id for error in allowed_hosts_check()] == ["cortex.E001"]


@pytest.mark.e2e
@pytest.mark.database_agnostic
def test_the_debug_default_allows_the_shipped_notes_expert_and_nothing_else_on_loopback():
    """As `make run` starts the core: DEBUG=1 and no EXPERT_ALLOWED_HOSTS (a fresh interpreter:
    the setting is read at startup)."""
    env = {key: value for key, value in os.environ.items() if key != "EXPERT_ALLOWED_HOSTS"}
    env.update(DEBUG="1", DJANGO_SETTINGS_MODULE="cortex_site.settings")
    script = (
        "import asyncio, django; django.setup()\n"
        "from mcp_services.experts import hosts\n"
        "for url in ('http://127.0.0.1:9200/mcp', 'http://localhost:9200/mcp', 'http://[::1]:9200/mcp',"
        " 'http://localhost/mcp', 'http://127.0.0.1:9201/mcp', 'http://127.0.0.1:6379/'):\n"
        "    print(url, hosts.url_refusal(url) is None)\n"
        "print('resolved', bool(asyncio.run(hosts.resolve_allowed('localhost', 9200))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "http://127.0.0.1:9200/mcp", "True",
        "http://localhost:9200/mcp", "True",
        "http://[::1]:9200/mcp", "True",
        "http://localhost/mcp", "True",
        "http://127.0.0.1:9201/mcp", "False",
        "http://127.0.0.1:6379/", "False",
        "resolved", "True",
    ]  # fmt: skip


@pytest.mark.django_db
def test_requests_that_discover_are_limited_per_user_and_reads_are_not(alice, bob, monkeypatch):
    monkeypatch.setitem(DiscoveryRateThrottle.THROTTLE_RATES, "expert_discovery", "3/min")
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nobody listens: each discovery fails at once
    client = client_for(alice)
    base = f"/config/workspace/{WorkspaceFactory(owner=alice).id}/experts"
    created = client.post(base, {"name": "gone", "url": url, "auth": "none"}, format="json")
    assert created.status_code == 201, created.content
    refresh = f"{base}/{created.json()['expert']['id']}/refresh"
    assert [client.post(refresh).status_code for _ in range(2)] == [200, 200]
    refused = client.post(refresh)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    assert int(refused["Retry-After"]) >= 1
    assert client.get(base).status_code == 200, "reads are not limited"
    others = client_for(bob).post(
        f"/config/workspace/{WorkspaceFactory(owner=bob).id}/experts",
        {"name": "gone", "url": url, "auth": "none"},
        format="json",
    )
    assert others.status_code == 201, "per user"
