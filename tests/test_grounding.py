"""The answer check's lexical grounding (agent.nodes_checks.grounding): how much of each answer sentence is found
in the passages, in English and in Japanese."""

from __future__ import annotations

from agent.nodes_checks import grounding

PASSAGES = [
    {"number": 1, "title": "浜名湖の養殖",
     "text": "浜名湖ではウナギの養殖が盛んで、その歴史は1900年に服部倉治郎が養殖池を作ったことに始まる。"},
    {"number": 2, "title": "Kestrel Point", "text": "The lighthouse at Kestrel Point was painted red in 1911."},
]


def test_a_short_japanese_answer_is_found_in_the_passage_it_comes_from():
    # "1900年": the number and the counter 年, which the passage only has inside a longer run ("1900年に服部…")
    result = grounding("1900年", PASSAGES)
    assert result.supported_share == 1.0 and result.sentences[0].best_passage == 1


def test_what_the_passages_do_not_say_stays_unsupported():
    assert grounding("1800年", PASSAGES).supported_share == 0.0  # the counter alone is not the answer
    assert grounding("ウナギの養殖は明治政府が禁止した。", PASSAGES).supported_share == 0.0
    assert grounding("The lighthouse was painted blue by sailors in 1850.", PASSAGES).supported_share == 0.0
    assert grounding("The lighthouse at Kestrel Point was painted red [2].", PASSAGES).supported_share == 1.0
