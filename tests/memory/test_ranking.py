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
    ranked = ranking.fuse(keyword=[7], similarities={7: 0.61, 8: 0.63, 9: 0.62}, moments={}, now=0.0, limit=3)
    assert ids(ranked)[0] == 7 and ranked[0].keyword_rank == 1


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
