"""Hybrid ranking: keyword and vector candidates fused into one score, designed by measurement.

Measured on the evaluation set (`tests/data/memory_eval.json`, `python -m bench.memory --design`):
- the keyword query keeps no stopwords: "when will my ..." otherwise matches half the user's notes;
- each list is cut to its best `CANDIDATES` before fusing, so a long tail of weak matches (a trap
  sharing one common word) cannot collect points from both lists;
- reciprocal rank fusion lets every keyword trap outrank a paraphrase found only by its vector
  (a paraphrase shares no word, so it is in one list only); a score led by the vector similarity,
  with a keyword bonus that decays with the keyword rank, keeps paraphrases and still puts an exact
  identifier (a ticket number, a host name: weak for a word-averaging model) on top;
- recency is a small boost inside the score (a half-life in days), not a third list.

`score = max(similarity, 0) + KEYWORD_WEIGHT / keyword_rank + RECENCY_WEIGHT * 0.5 ** (age / half-life)`
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Candidates taken from each list (keyword, vector) before fusing.
CANDIDATES = 20
# A candidate found by its vector alone needs at least this similarity: below it, it is noise (on
# the evaluation set, 90% of unrelated note/query pairs are under 0.12, and 19 of the 20 paraphrase
# targets above 0.14), and a search would otherwise always answer `limit` items.
MIN_SIMILARITY = 0.1
KEYWORD_WEIGHT = 0.1
RECENCY_WEIGHT = 0.02
RECENCY_HALF_LIFE_DAYS = 30.0

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 32

# English function words: never what a memory search is about. (PostgreSQL's english
# configuration drops its own list; SQLite's FTS5 has none.)
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she should
    so some such than that the their theirs them themselves then there these they this those through to
    too under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves s t d ll m re ve""".split()  # noqa: SIM905 - a word list reads best as text
)


def query_words(query: str) -> list[str]:
    """The query's distinct words, lower-cased, in order (at most MAX_QUERY_TERMS)."""
    return list(dict.fromkeys(_WORD.findall(query.lower())))[:MAX_QUERY_TERMS]


def keyword_terms(query: str) -> list[str]:
    """The words a keyword search looks for: the query's words without stopwords (all of them when
    the query is nothing but stopwords, so "to be or not to be" still finds something)."""
    words = query_words(query)
    return [word for word in words if word not in STOPWORDS] or words


def recency(age_seconds: float) -> float:
    """1 for now, halving every RECENCY_HALF_LIFE_DAYS (future timestamps count as now)."""
    return 0.5 ** (max(age_seconds, 0.0) / (RECENCY_HALF_LIFE_DAYS * 86400))


@dataclass(frozen=True)
class Ranked:
    row_id: int
    score: float
    keyword_rank: int | None  # 1 = the best keyword match; None: not among the keyword candidates
    similarity: float | None  # cosine similarity with the query; None: the item has no vector
    recency: float


def fuse(
    *,
    keyword: list[int],
    similarities: dict[int, float],
    moments: dict[int, float],
    now: float,
    limit: int,
    keyword_weight: float = KEYWORD_WEIGHT,
    recency_weight: float = RECENCY_WEIGHT,
) -> list[Ranked]:
    """Fuse keyword candidates (row ids, best first) with vector candidates (row id -> similarity).

    `similarities` may also hold the similarity of keyword candidates that were not among the
    vector candidates (their vector is known), so both parts of their score are real. `moments`:
    each row's timestamp (epoch seconds).
    """
    ranks = {row_id: position for position, row_id in enumerate(keyword, start=1)}
    ranked = []
    for row_id in ranks.keys() | similarities.keys():
        similarity = similarities.get(row_id)
        rank = ranks.get(row_id)
        if rank is None and (similarity is None or similarity < MIN_SIMILARITY):
            continue
        fresh = recency(now - moments.get(row_id, now))
        score = max(similarity or 0.0, 0.0) + (keyword_weight / rank if rank else 0.0) + recency_weight * fresh
        ranked.append(Ranked(row_id, score, rank, similarity, fresh))
    ranked.sort(key=lambda item: (-item.score, -moments.get(item.row_id, 0.0), -item.row_id))
    return ranked[:limit]


def rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)
