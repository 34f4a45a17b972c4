"""Metrics that need no LLM, in one place: what the library grades with and what the benchmarks report.

- f1_score (token F1) / exact_match: SQuAD-style, over `normalise_tokens` (characters for Japanese, as
  JSQuAD's official metric; lower-cased words without punctuation and articles otherwise);
- chrf: chrF (Popović 2015) through sacrebleu, character n-grams 1..6, beta 2, whitespace removed;
- rouge_l: ROUGE-L F1 (longest common subsequence of tokens);
- score_ranking: recall@k and MRR@10 of a ranking against gold ids;
- percentile: nearest-rank percentiles through numpy, None when there is nothing to rank;
- wilson_interval: the Wilson score interval of a share (a rate reported with its uncertainty).
Every string metric returns a value in [0, 1]; two empty strings score 1, one empty string 0.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections import Counter
from typing import Iterable

import numpy as np

from store import scripts

K_VALUES = (1, 5, 10)
_CJK = re.compile(f"[{scripts.JAPANESE}{scripts.HALFWIDTH_KATAKANA}]")
_PUNCT = set(string.punctuation) | set("、。・「」『』（）！？：；，．〜ー…“”‘’")


def normalise_tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    if _CJK.search(text):  # JSQuAD's official metric is character-level
        return [ch for ch in text if not ch.isspace() and ch not in _PUNCT]
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def f1_score(prediction: str, reference: str) -> float:
    pred, ref = normalise_tokens(prediction), normalise_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalise_tokens(prediction) == normalise_tokens(reference))


def score_ranking(ranked_ids: list[str], gold: set[str]) -> dict:
    rank = next((i + 1 for i, doc in enumerate(ranked_ids[:10]) if doc in gold), None)
    out = {f"recall@{k}": float(rank is not None and rank <= k) for k in K_VALUES}
    out["mrr@10"] = 1.0 / rank if rank else 0.0
    return out


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """The value at quantile q (0..1) by nearest rank, ignoring None; None for no values."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return float(np.percentile(present, q * 100, method="nearest"))


@functools.cache
def _chrf_metric():
    from sacrebleu.metrics import CHRF

    return CHRF(char_order=6, word_order=0, beta=2)


def chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF (character n-grams 1..6, beta 2, whitespace removed), scaled to [0, 1]."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    if not hyp or not ref:
        return float(hyp == ref)  # sacrebleu gives 0 for two empty strings; these metrics give 1
    return _chrf_metric().sentence_score(hypothesis, [reference]).score / 100


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    hyp, ref = normalise_tokens(hypothesis), normalise_tokens(reference)
    if not hyp or not ref:
        return float(hyp == ref)
    lcs = _lcs(hyp, ref)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(hyp), lcs / len(ref)
    return 2 * p * r / (p + r)


STRING_METRICS = {"chrf": chrf, "rouge_l": rouge_l, "token_f1": f1_score}


def string_scores(answer: str, references: list[str]) -> dict[str, float]:
    """Each string metric of `answer` against the best-matching of `references` (a probe may accept several)."""
    references = [r for r in references if isinstance(r, str) and r.strip()]
    if not references:
        return {}
    return {name: max(fn(answer, ref) for ref in references) for name, fn in STRING_METRICS.items()}


# -- an answer against a question's references (abstentions are scored as an empty answer) ---------------------

def references_of(row: dict) -> list[str]:
    """A question's accepted answers (JSQuAD's short spans), else its one reference (ClapNQ)."""
    return row.get("answers") or ([row["reference"]] if row.get("reference") else [])


def contains_reference(text: str, references: list[str]) -> bool:
    """An accepted reference appears in `text`, both normalised (metrics.normalise_tokens, joined)."""
    norm = "".join(normalise_tokens(text))
    return any("".join(normalise_tokens(ref)) in norm for ref in references if ref)


def answer_scores(answer: str, row: dict) -> tuple[float | None, float | None]:
    from agent.prompts import strip_citations

    references = references_of(row)
    if not references:
        return None, None
    text = strip_citations(answer)
    f1 = max(f1_score(text, ref) for ref in references)
    em = max(exact_match(text, ref) for ref in references)
    # Short-span sets (JSQuAD): an answer that contains an accepted span also counts as a match.
    if row.get("answers"):
        em = max(em, float(contains_reference(text, references)))
    return f1, em


def scored_text(answer: str, abstained: bool) -> str:
    """The text an answer is scored as: an abstention scores as an empty answer (it said nothing of the
    reference), whatever words it abstained with."""
    return "" if abstained else answer


def answer_figures(answer: str, abstained: bool, row: dict) -> dict:
    """One answer's non-LLM scores against `row`'s references: token F1 `f1`, exact match `em` and
    `string_presence` (each None without references), of its `scored_text`."""
    text = scored_text(answer, abstained)
    f1, em = answer_scores(text, row)
    return {"f1": f1, "em": em, "string_presence": string_presence(text, row)}


def string_presence(answer: str, row: dict) -> float | None:
    """1.0 when an accepted reference (JSQuAD's short answers, or ClapNQ's one reference) appears in the answer
    after normalisation, as answer_scores' exact match counts it for short-span sets; None without references."""
    from agent.prompts import strip_citations

    references = references_of(row)
    if not references:
        return None
    return float(bool(answer) and contains_reference(strip_citations(answer), references))


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a share `successes / n` (95% with the default z); (0, 1) when n is 0.

    Unlike the normal approximation it stays inside [0, 1] and is not of zero width at 0 or n successes, which
    matters for the few dozen questions a benchmark run has."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({successes} of {n})")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / denominator
    # Exactly 0 and 1 at the ends (where the formula gives them up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high
