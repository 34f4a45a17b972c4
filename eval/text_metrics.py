"""Reference metrics that need no LLM: string similarity of an answer to its reference, in milliseconds.

ragas's own chrF / ROUGE / BLEU / Levenshtein metrics need sacrebleu, rouge-score or rapidfuzz, which are not
installed, so the two standard ones are written out here (small, exact definitions):
- chrf: chrF (Popović 2015): character n-gram F-score, n = 1..6, beta = 2, whitespace removed (sacrebleu's
  default chrF, without word n-grams);
- rouge_l: ROUGE-L F1 (longest common subsequence of tokens);
- token_f1: SQuAD-style token F1 (the same normalisation `kaizen bench answer` uses; characters for Japanese).
Every function returns a value in [0, 1]; two empty strings score 1, one empty string 0.
"""

from __future__ import annotations

from collections import Counter

from eval.bench_answer import f1_score, normalise_tokens

CHRF_ORDER = 6
CHRF_BETA = 2.0


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def chrf(hypothesis: str, reference: str, order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    hyp = "".join(hypothesis.split())
    ref = "".join(reference.split())
    if not hyp or not ref:
        return float(hyp == ref)
    precisions, recalls = [], []
    for n in range(1, order + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        if not h or not r:
            continue
        common = sum((h & r).values())
        precisions.append(common / sum(h.values()))
        recalls.append(common / sum(r.values()))
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * p * r / (b2 * p + r)


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


def token_f1(hypothesis: str, reference: str) -> float:
    return f1_score(hypothesis, reference)


STRING_METRICS = {"chrf": chrf, "rouge_l": rouge_l, "token_f1": token_f1}


def string_scores(answer: str, references: list[str]) -> dict[str, float]:
    """Each string metric of `answer` against the best-matching of `references` (a probe may accept several)."""
    references = [r for r in references if isinstance(r, str) and r.strip()]
    if not references:
        return {}
    return {name: max(fn(answer, ref) for ref in references) for name, fn in STRING_METRICS.items()}


__all__ = ["chrf", "rouge_l", "token_f1", "string_scores", "STRING_METRICS"]
