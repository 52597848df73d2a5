"""`python -m tests.oauth_expert <port> <authorization server base> <client id> <secret>`: an MCP
server protected by the test authorization server (`tests/oauth_server`), built with the MCP SDK's
resource-server support: its bearer middleware answers 401 with `WWW-Authenticate`, and each token
is checked by introspection at the authorization server (RFC 7662: active, and its scopes).

One server, many expert URLs, `/<style>/<issuer>/mcp`:
- `style` says how the protected-resource metadata is found: `header` (the 401's
  `resource_metadata`), `path` (only the path-scoped well-known URL), `root` (only the root one,
  which names the `root` issuer);
- `issuer` is one of the authorization server's issuers (`root`, `dcr`, `cimd`, `none`, `oidc`, `liar`).
Tools: `whoami` (the account the token is of), `tickets` (`tickets:read`), `write_ticket`
(needs `tickets:write`: without it, 403 `insufficient_scope`, the step-up challenge).
`GET /test/calls` counts the calls per account and the 401s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import time
from collections import Counter
from typing import Any

import httpx2
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

PORT, AS_BASE, CLIENT_ID, CLIENT_SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
BASE = f"http://127.0.0.1:{PORT}"
COUNTS: Counter[str] = Counter()
_accounts: dict[str, tuple[float, dict[str, Any]]] = {}


_pending: dict[str, asyncio.Future[dict[str, Any]]] = {}


async def introspect(token: str) -> dict[str, Any]:
    """RFC 7662 at the authorization server, remembered for a second; concurrent checks of one
    token share one request."""
    known = _accounts.get(token)
    if known is not None and known[0] > time.monotonic():
        return known[1]
    if token in _pending:
        return await asyncio.shield(_pending[token])
    _pending[token] = asyncio.get_running_loop().create_future()
    try:
        data = await _introspect(token)
    except BaseException as exc:
        _pending.pop(token).set_exception(exc)
        raise
    _pending.pop(token).set_result(data)
    return data


async def _introspect(token: str) -> dict[str, Any]:
    pair = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    async with httpx2.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{AS_BASE}/o/introspect/", data={"token": token}, headers={"Authorization": f"Basic {pair}"}
        )
    data = answer.json() if answer.status_code == 200 else {"active": False}
    _accounts[token] = (time.monotonic() + 1.0, data)
    return data


class IntrospectionVerifier:
    async def verify_token(self, token: str) -> AccessToken | None:
        data = await introspect(token)
        if not data.get("active"):
            COUNTS["rejected"] += 1
            return None
        return AccessToken(
            token=token,
            client_id=str(data.get("client_id", "")),
            scopes=str(data.get("scope", "")).split(),
            expires_at=data.get("exp"),
            subject=data.get("username"),
        )


server = MCPServer(
    "tickets",
    token_verifier=IntrospectionVerifier(),
    auth=AuthSettings(
        issuer_url=AS_BASE,  # type: ignore[arg-type]
        resource_server_url=f"{BASE}/mcp",  # type: ignore[arg-type]
        required_scopes=["tickets:read"],
        validate_token_resource=False,
    ),
)


def _account() -> str:
    token = get_access_token()
    return (token.subject or "") if token else ""


@server.tool(description="Who the token is of.")
def whoami() -> str:
    account = _account()
    COUNTS[f"calls:{account}"] += 1
    return account


@server.tool(description="Your tickets.")
def tickets() -> str:
    return json.dumps([{"id": 1, "title": "Printer on fire", "owner": _account()}])


@server.tool(description="Open a ticket.")
def write_ticket(title: str) -> str:
    return f"ticket opened by {_account()}: {title}"


inner = server.streamable_http_app(
    stateless_http=True,
    json_response=True,
    transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
)
EXPERT = re.compile(r"^/(header|path|root)/(\w+)/mcp$")


def _issuer(variant: str) -> str:
    return AS_BASE if variant == "root" else f"{AS_BASE}/{variant}"


def _resource_metadata(style: str, variant: str) -> dict[str, Any]:
    return {
        "resource": f"{BASE}/{style}/{variant}/mcp",
        "authorization_servers": [_issuer(variant)],
        "scopes_supported": ["tickets:read"],
        "bearer_methods_supported": ["header"],
    }


async def _json(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": raw})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await inner(scope, receive, send)
        return
    path = scope["path"]
    if path == "/test/calls":
        await _json(send, 200, dict(COUNTS))
        return
    if path == "/.well-known/oauth-protected-resource":  # root: names the root issuer
        await _json(send, 200, {**_resource_metadata("root", "root"), "resource": f"{BASE}/"})
        return
    scoped = re.match(r"^/\.well-known/oauth-protected-resource/(path|header)/(\w+)/mcp$", path)
    if scoped:
        await _json(send, 200, _resource_metadata(*scoped.groups()))
        return
    named = re.match(r"^/prm/(\w+)$", path)
    if named:
        await _json(send, 200, _resource_metadata("header", named.group(1)))
        return
    match = EXPERT.match(path)
    if match is None:
        await _json(send, 404, {"error": "not found"})
        return
    style, variant = match.groups()
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    token = next(
        (
            value.decode()[7:]
            for name, value in scope["headers"]
            if name == b"authorization" and value[:7] == b"Bearer "
        ),
        "",
    )
    if token and b'"write_ticket"' in body:
        data = await introspect(token)
        if data.get("active") and "tickets:write" not in str(data.get("scope", "")).split():
            challenge = f'Bearer error="insufficient_scope", scope="tickets:read tickets:write", resource_metadata="{BASE}/prm/{variant}"'
            await _json(send, 403, {"error": "insufficient_scope"}, [(b"www-authenticate", challenge.encode())])
            return

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def rewritten(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            COUNTS["unauthorized"] += 1
            headers = []
            for name, value in message.get("headers", []):
                if name.lower() == b"www-authenticate":
                    text = re.sub(r',?\s*resource_metadata="[^"]*"', "", value.decode())
                    if style == "header":
                        text += f', resource_metadata="{BASE}/prm/{variant}"'
                    value = text.encode()
                headers.append((name, value))
            message = {**message, "headers": headers}
        await send(message)

    await inner({**scope, "path": "/mcp", "raw_path": b"/mcp"}, replay, rewritten)


if __name__ == "__main__":
    config = uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning", lifespan="on")
    asyncio.run(uvicorn.Server(config).serve())
