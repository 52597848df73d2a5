"""The hybrid fusion's rules, each as the evaluation set showed it must behave."""

from __future__ import annotations

from mcp_services.memory import ranking

DAY = 86400.0


def ids(ranked: list[ranking.Ranked]) -> list[int]:
    return [entry.row_id for entry in ranked]


def test_keyword_terms_drop_stopwords_but_keep_a_query_of_stopwords_only():
    assert ranking.keyword_terms("When will my travel document stop being valid?") == [
        "travel",
        "document",
        "stop",
        "valid",
    ]
    assert ranking.keyword_terms("to be or not to be") == ["to", "be", "or", "not"]
    assert ranking.keyword_terms("INC-4821 web-07.prod") == ["inc", "4821", "web", "07", "prod"]


def test_a_paraphrase_found_by_its_vector_outranks_keyword_traps_sharing_a_common_word():
    # 1: the paraphrase (no shared word, similar meaning); 2, 3: traps sharing one query word.
    ranked = ranking.fuse(keyword=[2, 3], similarities={1: 0.45, 2: 0.12, 3: 0.05}, moments={}, now=0.0, limit=3)
    assert ids(ranked)[0] == 1
    assert ranked[0].keyword_rank is None and ranked[0].similarity == 0.45


def test_an_exact_identifier_beats_its_near_miss_neighbours():
    # Vectors cannot tell INC-4821 from INC-4812; the keyword rank can.
    ranked = ranking.fuse(
        keyword=[7, 8], similarities={7: 0.41, 8: 0.83, 9: 0.62}, moments={}, now=0.0, limit=3, exact={7}
    )
    assert ids(ranked)[0] == 7 and ranked[0].keyword_rank == 1 and ranked[0].exact
    assert ranking.exact("what went wrong in INC-4821", "INC-4821: checkout API returned 502s")
    assert not ranking.exact("INC-4821", "INC-48210 and INC-4812: near misses")
    assert ranking.exact("web-07.prod.example.net", "web-07.prod.example.net ran out of disk.")
    assert not ranking.exact("web-07.prod.example.net", "web-07.prod.example.network")
    assert ranking.exact("the night train", "Take the night train to Vienna.")


def test_recency_breaks_a_tie_and_no_more():
    moments = {1: -300 * DAY, 2: -1 * DAY}
    tie = ranking.fuse(keyword=[], similarities={1: 0.5, 2: 0.5}, moments=moments, now=0.0, limit=2)
    assert ids(tie) == [2, 1]
    clear = ranking.fuse(keyword=[], similarities={1: 0.55, 2: 0.5}, moments=moments, now=0.0, limit=2)
    assert ids(clear) == [1, 2]
    assert 0.97 < clear[1].recency <= 1.0 and clear[0].recency < 0.01  # a day old; 300 days old


def test_a_vector_only_candidate_below_the_floor_is_left_out():
    ranked = ranking.fuse(keyword=[5], similarities={5: 0.02, 6: 0.05, 7: 0.3}, moments={}, now=0.0, limit=10)
    assert ids(ranked) == [7, 5]  # 5 stays: it matched words


def test_a_shared_common_word_does_not_outweigh_the_meaning():
    # The trap: the distractor shares "pay", one word of three; the target shares none.
    query = "when do I pay for vehicle coverage"
    distractor, target = "Pay the electric bill before the 15th.", "Skoda insurance renewal: premium due in June."
    assert ranking.coverage(query, target) == 0.0
    assert round(ranking.coverage(query, distractor), 2) == 0.33
    ranked = ranking.fuse(
        keyword=[2],
        similarities={1: 0.28, 2: 0.22},
        moments={},
        now=0.0,
        limit=2,
        coverage={2: ranking.coverage(query, distractor)},
    )
    assert ids(ranked) == [1, 2]
    # Issue 10's bonus by keyword rank put the distractor first.
    before = ranking.fuse(
        keyword=[2],
        similarities={1: 0.28, 2: 0.22},
        moments={},
        now=0.0,
        limit=2,
        coverage_weight=0,
        keyword_weight=0.1,
    )
    assert ids(before) == [2, 1]


def test_coverage_matches_word_forms_and_weighs_identifiers():
    assert ranking.coverage("puppy training", "The train leaves at eight") == 0.5
    assert ranking.coverage("order 77-3019", "Order 77-3019 arrives") == 1.0
    assert ranking.coverage("order 77-3019", "Order 77-3091 failed") == 0.6  # order and 77, not 3019
    assert not ranking.exact("order 77-3019", "Order 77-3091 failed")
