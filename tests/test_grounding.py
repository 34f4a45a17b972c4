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


def test_specifics_the_sources_never_mention_are_named_and_what_was_read_or_asked_is_not():
    from agent.nodes_checks import novel_specifics

    asked = ["Who painted the lighthouse at Kestrel Point, and when?"]
    # an invented name and year: a paraphrase of the passage's words would pass the cosine, these cannot
    assert novel_specifics("Kestrel Point's lighthouse was painted by Turner in 1850 [2].", PASSAGES, asked) == [
        "Turner", "1850"]
    assert novel_specifics("It was painted red in 1911 at Kestrel Point [2].", PASSAGES, asked) == []
    # a capital at a sentence's start is no name; names and numbers from the question are not the answer's own;
    # "[2]" is a citation, not a number; "1,911" and "１９１１" are 1911
    assert novel_specifics("Red. Painted in １９１１ [2]. Lighthouse of 1,911 steps.", PASSAGES, asked) == []
    assert novel_specifics("So it was Kestrel Point.", PASSAGES, ["Was it Kestrel Point?"]) == []
    assert novel_specifics("It has 3 lamps.", [{"title": "", "text": "Its three lamps."}], []) == []
    # a word joined by underscores in the source ("KAIZEN_LLM_URL") has its parts
    assert novel_specifics("Set the URL [1].", [{"title": "", "text": "Set KAIZEN_LLM_URL."}], []) == []
    # Japanese: a katakana name the passage spells otherwise
    passage = [{"number": 1, "title": "マーラー", "text": "グスタフ・マーラーは作曲家である。"}]
    assert novel_specifics("グラスタフ・マーラーです [1]。", passage, ["マーラーの名前は？"]) == ["グラスタフ"]
    assert novel_specifics("グスタフ・マーラーです [1]。", passage, ["マーラーの名前は？"]) == []
