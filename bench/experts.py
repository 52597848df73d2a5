"""Calls to an expert against real processes on 127.0.0.1: a core (serving the JWKS) and the notes
expert verifying every token.

`.venv/bin/python -m bench.experts`

1. `expert_call` sequential: calls/s, p50/p99 (each call: host check, a minted token, a fresh MCP
   client over the shared connection pool, the expert's JWKS-verified token and its DB write);
2. the same with 8 calls in flight;
3. `expert_tools` served from the cache (the expert's cache hint), p50.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from tests.servers import core_server, free_port, fresh_database, manage_command, running, server_env

CALLS = int(os.environ.get("BENCH_EXPERT_CALLS", 300))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def report(label: str, latencies: list[float], elapsed: float) -> None:
    print(
        f"{label}: {len(latencies)} calls in {elapsed:.2f} s = {len(latencies) / elapsed:.0f} calls/s;"
        f" p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )


async def bench(notes_url: str) -> None:
    from asgiref.sync import sync_to_async

    from mcp_services.experts.calls import expert_call, expert_tools
    from tests.factories import ConversationFactory, UserFactory, WorkspaceFactory
    from workspaces import services

    def setup():
        user = UserFactory()
        workspace = WorkspaceFactory(owner=user)
        ConversationFactory(workspace=workspace)  # experts serve the members of its conversations
        services.expert_create(
            workspace=workspace, name="notes", url=notes_url, discovery=services.ExpertDiscovery(status="ok", tools=[])
        )
        return user, workspace

    user, workspace = await sync_to_async(setup)()
    await expert_tools(workspace_id=workspace.id, user_id=user.id)  # discovery (the cache was empty)

    async def one(n: int) -> float:
        started = time.perf_counter()
        await expert_call(
            user_id=user.id,
            workspace_id=workspace.id,
            expert="notes",
            tool="add_note",
            arguments={"title": f"note {n}", "body": "benchmark"},
        )
        return time.perf_counter() - started

    await one(-1)
    started = time.perf_counter()
    latencies = [await one(n) for n in range(CALLS)]
    report("expert_call add_note, sequential", latencies, time.perf_counter() - started)

    semaphore = asyncio.Semaphore(8)

    async def bounded(n: int) -> float:
        async with semaphore:
            return await one(n)

    started = time.perf_counter()
    latencies = await asyncio.gather(*(bounded(n) for n in range(CALLS)))
    report("expert_call add_note, 8 in flight", list(latencies), time.perf_counter() - started)

    cached = []
    for _ in range(200):
        started = time.perf_counter()
        await expert_tools(workspace_id=workspace.id, user_id=user.id)
        cached.append(time.perf_counter() - started)
    print(f"expert_tools from the cache: p50 {statistics.median(cached) * 1000:.2f} ms")


def main() -> int:
    print(f"machine: {os.cpu_count()} CPUs; {CALLS} calls per run")
    with fresh_database() as database:
        os.environ.update(database)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
        import django

        django.setup()
        env = server_env(**database, LOG_LEVEL="WARNING")
        with running(core_server(env=env, server="uvicorn")) as core:
            notes_port = free_port()
            notes_env = {
                k: v for k, v in env.items() if k not in ("SECRET_KEY", "JWT_SIGNING_KEY", "EXPERT_SIGNING_KEYS")
            }
            notes = manage_command(
                "run_notes_expert",
                "--port",
                str(notes_port),
                "--jwks-url",
                f"{core.url}/.well-known/jwks.json",
                env={**notes_env, "CORTEX_SERVICE_PROCESS": "1"},
                port=notes_port,
            )
            with running(notes):
                asyncio.run(bench(f"{notes.url}/mcp"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
