"""Memory and cognition services against real processes on 127.0.0.1 (bounded loads).

`.venv/bin/python -m bench.mcp` (SQLite), or `scripts/with_postgres.sh .venv/bin/python -m bench.mcp`.

1. store_input calls/s over one long-lived MCP client (sequential, then 8 in flight);
2. get_context p50/p99, with a query, over 100,000 items bulk-inserted through the ORM;
3. POST /input end to end with memory up (core + memory + outbox worker), and how long the
   outbox takes to hand every input to memory;
4. POST /input with memory down: the input must not wait for the memory service (max < 1 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from tests.servers import (
    ServerProcess,
    core_server,
    create_user,
    free_port,
    fresh_database,
    manage_command,
    running,
    server_env,
)

STORE_CALLS = int(os.environ.get("BENCH_STORE_CALLS", 1000))
CONTEXT_ITEMS = int(os.environ.get("BENCH_CONTEXT_ITEMS", 100_000))
CONTEXT_QUERIES = int(os.environ.get("BENCH_CONTEXT_QUERIES", 300))
INPUTS = int(os.environ.get("BENCH_INPUTS", 1000))
PASSWORD = "bench-password-0123456789"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def vocabulary(size: int = 3000) -> list[str]:
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(size)})


def bulk_insert(user_id: uuid.UUID, count: int, words: list[str]) -> None:
    from mcp_services.models import MemoryItem

    rng = random.Random(11)
    start = datetime.now(UTC) - timedelta(days=365)
    batch: list[MemoryItem] = []
    for n in range(count):
        content = " ".join(rng.choice(words) for _ in range(12))
        moment = start + timedelta(minutes=5 * n)
        item_id = str(uuid.UUID(int=rng.getrandbits(128)))
        data: dict[str, object] = {
            "id": item_id,
            "content": content,
            "conversation_id": None,
            "metadata": {},
            "timestamp": moment.isoformat(),
        }
        batch.append(MemoryItem(user_id=user_id, item_id=item_id, content=content, data=data, timestamp=moment))
        if len(batch) == 5000:
            MemoryItem.objects.bulk_create(batch)
            batch = []
    MemoryItem.objects.bulk_create(batch)
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # what autovacuum would do soon after a bulk load
            cursor.execute(f"ANALYZE {MemoryItem._meta.db_table}")


async def bench_store(memory_url: str) -> None:
    from mcp_services.client import ServiceClient

    client = ServiceClient(name="memory", target=memory_url, token=os.environ["CORTEX_SERVICE_TOKEN"], timeout=10)
    user = str(uuid.uuid4())
    await client.call_tool("store_input", {"user_id": user, "input_data": {"content": "warm-up"}})
    started = time.perf_counter()
    for n in range(STORE_CALLS):
        await client.call_tool("store_input", {"user_id": user, "input_data": {"id": f"s{n}", "content": f"item {n}"}})
    sequential = STORE_CALLS / (time.perf_counter() - started)

    gate = asyncio.Semaphore(8)

    async def one(n: int) -> None:
        async with gate:
            await client.call_tool("store_input", {"user_id": user, "input_data": {"id": f"c{n}", "content": f"c {n}"}})

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(STORE_CALLS)))
    concurrent = STORE_CALLS / (time.perf_counter() - started)
    await client.aclose()
    print(
        f"store_input over one long-lived client, {STORE_CALLS} calls: "
        f"{sequential:,.0f} calls/s sequential, {concurrent:,.0f} calls/s with 8 in flight"
    )


async def bench_context(cognition_url: str, user_id: uuid.UUID, words: list[str]) -> None:
    from mcp_services.client import ServiceClient, cognition_token

    client = ServiceClient(name="cognition", target=cognition_url, token=cognition_token(), timeout=30)
    rng = random.Random(3)
    for label, make in (
        ("with a query", lambda: {"user_id": str(user_id), "query": " ".join(rng.sample(words, 2)), "limit": 10}),
        ("without a query", lambda: {"user_id": str(user_id), "limit": 10}),
    ):
        await client.call_tool("get_context", make())
        latencies = []
        for _ in range(CONTEXT_QUERIES):
            arguments = make()
            started = time.perf_counter()
            answer = await client.call_tool("get_context", arguments)
            latencies.append((time.perf_counter() - started) * 1000)
            assert "error" not in answer and answer["count"] > 0, answer
        print(
            f"get_context {label} over {CONTEXT_ITEMS:,} items, {CONTEXT_QUERIES} calls: "
            f"p50 {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms"
        )
    await client.aclose()


def bench_inputs(core_url: str, email: str) -> str:
    import httpx2

    login = httpx2.post(f"{core_url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10).json()
    headers = {"Authorization": f"Bearer {login['access_token']}"}

    def post_many(count: int, prefix: str) -> list[float]:
        latencies = []
        with httpx2.Client(base_url=core_url, headers=headers, timeout=30) as client:
            for n in range(count):
                started = time.perf_counter()
                response = client.post("/input", json={"content": f"{prefix} {n}"})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        return latencies

    half = INPUTS // 2
    started = time.perf_counter()
    latencies = post_many(half, "seq")
    elapsed = time.perf_counter() - started
    print(
        f"POST /input with memory up, {half} sequential: {half / elapsed:,.0f} inputs/s, "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda worker: post_many(half // 8, f"par{worker}"), range(8)))
    elapsed = time.perf_counter() - started
    done = sum(len(latencies) for latencies in results)
    print(f"POST /input with memory up, {done} from 8 clients: {done / elapsed:,.0f} inputs/s")
    return login["claims"]["oid"]


def wait_delivered(memory_url: str, user_id: str, expected: int, started: float) -> None:
    from mcp_services.client import ServiceClient

    async def count() -> int:
        client = ServiceClient(name="memory", target=memory_url, token=os.environ["CORTEX_SERVICE_TOKEN"], timeout=30)
        try:
            while True:
                items = await client.read_json(f"history/{user_id}")
                if len(items) >= expected or time.perf_counter() - started > 120:
                    return len(items)
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    delivered = asyncio.run(count())
    print(
        f"memory outbox: {delivered}/{expected} inputs in memory "
        f"{time.perf_counter() - started:.1f} s after the first POST"
    )


def bench_inputs_memory_down(env: dict[str, str]) -> bool:
    """The outbox decouples POST /input from memory: with memory unreachable it answers as fast."""
    import httpx2

    env = {**env, "MEMORY_URL": f"http://127.0.0.1:{free_port()}/mcp"}
    create_user("down@example.com", PASSWORD, env=env)
    with running(core_server(env=env)) as core:
        login = httpx2.post(
            f"{core.url}/auth/login", json={"email": "down@example.com", "password": PASSWORD}, timeout=10
        ).json()
        latencies = []
        with httpx2.Client(
            base_url=core.url, headers={"Authorization": f"Bearer {login['access_token']}"}, timeout=30
        ) as client:
            for n in range(200):
                started = time.perf_counter()
                response = client.post("/input", json={"content": f"down {n}"})
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
    ok = max(latencies) < 1.0
    print(
        f"POST /input with memory down, 200 sequential: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.0f} ms ({'ok' if ok else 'FAILED: over 1 s, the input waited for memory'})"
    )
    return ok


def service_pair(database: dict[str, str], **extra: str) -> tuple[dict[str, str], ServerProcess, ServerProcess]:
    """The environment (MEMORY_URL, COGNITION_URL set) and not yet started memory and cognition
    processes on free ports, against `database`."""
    memory_port, cognition_port = free_port(), free_port()
    env = server_env(
        **database,
        MEMORY_URL=f"http://127.0.0.1:{memory_port}/mcp",
        COGNITION_URL=f"http://127.0.0.1:{cognition_port}/mcp",
        LOG_LEVEL="WARNING",
        **extra,
    )
    memory = manage_command("run_memory_service", "--port", str(memory_port), env=env, port=memory_port)
    cognition = manage_command("run_cognition_service", "--port", str(cognition_port), env=env, port=cognition_port)
    return env, memory, cognition


def main() -> int:
    database_kind = "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    print(f"database: {database_kind}; machine: {os.cpu_count()} CPUs")
    with fresh_database() as database:
        os.environ.update(database)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
        import django

        django.setup()
        env, memory, cognition = service_pair(database, INPUT_RATE="1000000/min")
        memory_url = env["MEMORY_URL"]
        with running(memory), running(cognition):
            asyncio.run(bench_store(memory_url))

            words = vocabulary()
            user_id = uuid.uuid4()
            started = time.perf_counter()
            bulk_insert(user_id, CONTEXT_ITEMS, words)
            from django.db import connections

            connections.close_all()
            print(f"bulk-inserted {CONTEXT_ITEMS:,} items through the ORM in {time.perf_counter() - started:.1f} s")
            asyncio.run(bench_context(cognition.url + "/mcp", user_id, words))

            create_user("bench@example.com", PASSWORD, env=env)
            worker = manage_command("memory_outbox_worker", env=env, port=0, ready_line="memory outbox worker: running")
            with running(core_server(env=env)) as core, running(worker):
                started = time.perf_counter()
                user = bench_inputs(core.url, "bench@example.com")
                wait_delivered(memory_url, user, INPUTS // 2 + (INPUTS // 2 // 8) * 8, started)
        if not bench_inputs_memory_down(env):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
