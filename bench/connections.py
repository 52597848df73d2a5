"""The added cost per call of an `oauth` expert against a `core_token` one: what each call does
before it connects (the requester's token read, decrypted and checked for expiry under
`db_call`, against an Ed25519 token minted for the call), p50/p99 over N calls, on a throwaway
migrated SQLite database. The network to the expert is the same for both and is not measured; a
refresh happens once per expiry (tests/connections: 20 turns across 4 processes, 1 refresh).

    .venv/bin/python -m bench.connections [N]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid

os.environ.setdefault("DEBUG", "1")
os.environ["SQLITE_PATH"] = os.path.join(tempfile.mkdtemp(prefix="cortex-bench-connections-"), "db.sqlite3")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402


def _percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99) - 1] * 1e6
    return f"p50 {p50:7.0f} us   p99 {p99:7.0f} us"


async def main(n: int) -> None:
    from accounts.models import User
    from common.db import db_call
    from connections import crypto
    from connections.broker import OAuthBroker
    from connections.models import Connection, OAuthClient
    from mcp_services.experts import tokens
    from workspaces.models import Expert, Workspace

    def seed() -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        user = User.objects.create_user(email=f"{uuid.uuid4()}@example.com", password="x" * 12)
        workspace = Workspace.objects.create(owner=user, name="bench")
        client = OAuthClient.objects.create(issuer="https://as.example", client_id="c", registration="dynamic")
        expert = Expert.objects.create(
            workspace=workspace, name="e", url="https://rs.example/mcp", auth="oauth", oauth={"scopes_supported": []}
        )
        Connection.objects.create(
            user=user,
            expert=expert,
            client=client,
            issuer=client.issuer,
            access_token=crypto.seal("t" * 40),
            refresh_token=crypto.seal("r" * 40),
            expires_at=None,
        )
        return user.id, workspace.id, expert.id

    user_id, workspace_id, expert_id = await db_call(seed)()
    broker = OAuthBroker()
    oauth, minted = [], []
    for _ in range(n):
        started = time.perf_counter()
        await broker.bearer(expert_id, user_id)
        oauth.append(time.perf_counter() - started)
        started = time.perf_counter()
        tokens.expert_token_mint(
            audience="https://rs.example/mcp", user_id=user_id, workspace_id=workspace_id, tool="t"
        )
        minted.append(time.perf_counter() - started)
    print(f"before each call, {n} calls:")
    print(f"  oauth      (requester's token, db_call + decrypt): {_percentiles(oauth)}")
    print(f"  core_token (Ed25519 token minted for the call):     {_percentiles(minted)}")
    print(f"  added per call: p50 {(statistics.median(oauth) - statistics.median(minted)) * 1e6:.0f} us")


if __name__ == "__main__":
    call_command("migrate", verbosity=0)
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
