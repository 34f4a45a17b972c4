"""The no-LLM metrics: known values, the empty-string conventions, and chrF as Popović defines it."""

from __future__ import annotations

from collections import Counter

import pytest

from eval.metrics import answer_figures, chrf, exact_match, f1_score, percentile, rouge_l, score_ranking


def chrf_by_definition(hyp: str, ref: str, order: int = 6, beta: float = 2.0) -> float:
    """chrF written out (Popović 2015; sacrebleu's defaults): mean n-gram precision and recall, n = 1..6."""
    hyp, ref = "".join(hyp.split()), "".join(ref.split())
    precisions, recalls = [], []
    for n in range(1, order + 1):
        h = Counter(hyp[i:i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i:i + n] for i in range(len(ref) - n + 1))
        if h and r:
            common = sum((h & r).values())
            precisions.append(common / sum(h.values()))
            recalls.append(common / sum(r.values()))
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 0.0 if p + r == 0 else (1 + beta**2) * p * r / (beta**2 * p + r)


@pytest.mark.parametrize("hyp, ref", [
    ("The lighthouse is 42 metres tall.", "It is 42 metres tall"),
    ("Owls hunt at night", "Cats sleep all day"),
    ("東京は日本の首都です", "日本の首都は東京"),
    ("a", "abc"),
])
def test_chrf_is_the_textbook_definition(hyp, ref):
    assert chrf(hyp, ref) == pytest.approx(chrf_by_definition(hyp, ref), abs=1e-9)


def test_empty_strings_and_identity():
    for metric in (chrf, rouge_l, f1_score):
        assert metric("", "") == 1.0
        assert metric("something", "") == 0.0
        assert metric("the same words", "the same words") == pytest.approx(1.0)
    assert exact_match("The Moon.", "moon") == 1.0


def test_token_f1_is_squad_style_and_japanese_by_character():
    assert f1_score("the red panda Miso", "Miso") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert f1_score("ビエンチャン", "ビエンチャンです") == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_percentile_is_nearest_rank_and_none_when_empty():
    assert percentile([3, 1, 2, None], 0.5) == 2
    assert percentile([1, 2, 3, 4], 0.95) == 4
    assert percentile([None], 0.5) is None


def test_score_ranking():
    assert score_ranking(["a", "b", "c"], {"b"}) == {"recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0, "mrr@10": 0.5}
    assert score_ranking([], {"b"})["mrr@10"] == 0.0


def test_wilson_interval_known_values_and_edges():
    from eval.metrics import wilson_interval

    low, high = wilson_interval(7, 10)  # the textbook example: 0.70 of 10 -> [0.397, 0.892]
    assert (round(low, 3), round(high, 3)) == (0.397, 0.892)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    narrow, wide = wilson_interval(50, 100), wilson_interval(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_answer_figures_score_an_abstention_as_an_empty_answer():
    row = {"answers": ["1900年"], "reference": ""}
    right = answer_figures("1900年に建てられた [1]。", False, row)
    assert right["string_presence"] == 1.0 and right["em"] == 1.0 and right["f1"] > 0
    # the abstention sentence is not an answer, whatever words it shares with a reference
    assert answer_figures("1900年", True, row) == {"f1": 0.0, "em": 0.0, "string_presence": 0.0}
    assert answer_figures("anything", False, {"question": "q"}) == {"f1": None, "em": None, "string_presence": None}
