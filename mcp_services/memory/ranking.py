"""Hybrid ranking: keyword and vector candidates fused into one score, designed by measurement.

Measured on two evaluation sets (`python -m bench.memory --design`): the project's
(`tests/data/memory_eval.json`) and one of lexical traps (`tests/data/memory_traps.json`: for each
query a distractor that shares its words but not its meaning):
- the keyword query keeps no stopwords: "when will my ..." otherwise matches half the user's notes;
- each list is cut to its best `CANDIDATES` before fusing, so a long tail of weak matches (a trap
  sharing one common word) cannot collect points from both lists;
- reciprocal rank fusion lets every keyword trap outrank a paraphrase found only by its vector
  (a paraphrase shares no word, so it is in one list only); the score is led by the vector
  similarity instead;
- the keyword bonus is the share of the query's terms the item holds (`coverage`), cubed: a
  bonus by keyword rank (issue 10's `0.1 / rank`) gave the best full-text match the whole bonus
  even when it shared one common word of four ("when do I pay for vehicle coverage" and "Pay the
  electric bill"), and outweighed the gap in similarity to the right note;
- an item naming the query's identifiers exactly (or holding the query as a phrase) gets
  `EXACT_BONUS`, which puts it first: a word-averaging model cannot tell INC-4821 from INC-4812;
- recency is a small boost inside the score (a half-life in days), not a third list.

`score = max(similarity, 0) + COVERAGE_WEIGHT * coverage ** 3 + EXACT_BONUS * exact
         + RECENCY_WEIGHT * 0.5 ** (age / half-life)`
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
COVERAGE_WEIGHT = 0.3
COVERAGE_POWER = 3.0
EXACT_BONUS = 1.0
IDENTIFIER_TERM_WEIGHT = 2.0
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


_SUFFIXES = ("ing", "ies", "es", "ed", "ly", "s")
_DIGIT = re.compile(r"\d")
_FORMS = "(?:" + "|".join(_SUFFIXES) + ")?"
# An identifier as written: word characters joined by - . # / : with at least one digit
# ("INC-4821", "web-07.prod.example.net", "3.14.2", "88-4117").
_IDENTIFIER = re.compile(r"\w+(?:[-.#/:]\w+)*", re.UNICODE)


def stem(word: str) -> str:
    """A light suffix stripper, close enough to the engines' stemmers (porter on SQLite, PostgreSQL's
    english) to tell whether an item contains a query term: "training" and "train", "matches" and
    "match" are one term. Identifiers (any digit) are left whole."""
    if _DIGIT.search(word):
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def term_weight(term: str) -> float:
    """An identifier-like term (with a digit: a ticket, host or order number) names one thing; a
    word may name many. IDF would say the same from the user's own items, at the price of a count
    per term per search."""
    return IDENTIFIER_TERM_WEIGHT if _DIGIT.search(term) else 1.0


def identifiers(query: str) -> list[str]:
    return [token for token in _IDENTIFIER.findall(query.lower()) if _DIGIT.search(token)]


def _whole(needle: str) -> re.Pattern[str]:
    """`needle` not glued to more of a word or number ("inc-4821" is not in "inc-48210")."""
    return re.compile(rf"(?<![\w.-]){re.escape(needle)}(?![\w]|[.-]\w)")


class Matcher:
    """What a query's words say about one candidate, prepared once per search (a search looks at
    up to 2 x CANDIDATES items)."""

    def __init__(self, query: str) -> None:
        terms = keyword_terms(query)
        # A term is in an item when one of the item's words stems to the term's stem: that word is
        # the stem plus one of the suffixes `stem` strips (one regular expression search per term,
        # not a stem per word of every candidate).
        self._terms = [
            (
                re.compile(rf"(?<!\w){re.escape(stem(term))}{'' if _DIGIT.search(term) else _FORMS}(?!\w)"),
                term_weight(term),
            )
            for term in dict.fromkeys(terms)
        ]
        self._total = sum(weight for _, weight in self._terms)
        wanted = identifiers(query)
        phrase = " ".join(query.lower().strip(" \"'?!.").split())
        if wanted:
            self._exact = [_whole(identifier) for identifier in wanted]
        elif len(phrase.split()) >= 2 and len(keyword_terms(phrase)) >= 2:
            self._exact = [_whole(phrase)]
        else:
            self._exact = []

    def coverage(self, content: str) -> float:
        """The share of the query's keyword terms (weighted by `term_weight`) that `content`
        contains: 1.0 when it has every one, as an exact identifier or phrase does; a distractor
        sharing one common word of four gets 0.25."""
        if not self._total:
            return 0.0
        text = content.lower()
        return sum(weight for pattern, weight in self._terms if pattern.search(text)) / self._total

    def exact(self, content: str) -> bool:
        """The item names the query's identifiers exactly (all of them), or, for a query of words
        only, holds the query itself as a phrase: what a person typing it means, and what a vector
        cannot tell from its near misses."""
        if not self._exact:
            return False
        text = " ".join(content.lower().split())
        return all(pattern.search(text) for pattern in self._exact)


def coverage(query: str, content: str) -> float:
    return Matcher(query).coverage(content)


def exact(query: str, content: str) -> bool:
    return Matcher(query).exact(content)


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
    coverage: float | None = None  # share of the query's terms the item holds (keyword candidates)
    exact: bool = False  # names the query's identifiers exactly, or holds the query as a phrase


def fuse(
    *,
    keyword: list[int],
    similarities: dict[int, float],
    moments: dict[int, float],
    now: float,
    limit: int,
    coverage: dict[int, float] | None = None,
    exact: set[int] | frozenset[int] = frozenset(),
    exact_bonus: float = EXACT_BONUS,
    coverage_weight: float = COVERAGE_WEIGHT,
    coverage_power: float = COVERAGE_POWER,
    keyword_weight: float = 0.0,
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
        bonus = 0.0
        if rank:
            bonus = coverage_weight * (coverage or {}).get(row_id, 0.0) ** coverage_power + keyword_weight / rank
            bonus += exact_bonus if row_id in exact else 0.0
        score = max(similarity or 0.0, 0.0) + bonus + recency_weight * fresh
        covered = (coverage or {}).get(row_id) if rank else None
        ranked.append(Ranked(row_id, score, rank, similarity, fresh, covered, row_id in exact))
    ranked.sort(key=lambda item: (-item.score, -moments.get(item.row_id, 0.0), -item.row_id))
    return ranked[:limit]


def rounded(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)
