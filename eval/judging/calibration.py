"""Judge calibration: how well does each metric, with a given judge model, tell a good answer from a bad one?

Labelled pairs come from questions with a reference answer and the passage that supports it (the store's probes,
with the best-matching chunk of their gold documents; or a ../shared/data corpus + question file). For each
question: the positive item is the reference itself, with its passage. Negative items (one per pair and metric,
rotating over the kinds that metric is meant to notice):
- other_answer: the reference answer of another question, with this question's passage;
- swapped_span: this reference with its key span (an accepted short answer, else a number or a name) replaced by
  the one of another question: a supported claim turned unsupported;
- other_context: this reference with another question's passage (for metrics about the context).
Each metric's ROC AUC over its positives and negatives (Mann-Whitney; ties count 0.5) is stored in
`judge_calibration` with `trusted = auc >= KAIZEN_TRUST_AUC (0.75) and enough items scored`
(KAIZEN_TRUST_COVERAGE, 0.75: NULL scores are left out of the AUC, so a judge that fails on most items is not
trusted on the rest). Metrics without an LLM are stored under judge_model "none".

`trusted_metrics(store, judge_model)` → {metric: trusted}: the latest calibration per metric of that judge, plus
the non-LLM metrics.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from eval.settings import EvalSettings

from .ragas_metrics import INTERACTION_METRICS, METRICS, REFERENCE_METRICS, Score, score_rows

NO_JUDGE = "none"
RESPONSE_CHARS = 320  # long references are cut at a sentence end: shorter replies, same signal
CONTEXT_CHARS = 1400

NEGATIVE_KINDS = {
    "faithfulness": ("other_answer", "swapped_span", "other_context"),
    "response_groundedness": ("other_answer", "swapped_span", "other_context"),
    "answer_relevancy": ("other_answer",),
    "context_utilization": ("other_answer", "other_context"),
    "context_relevance": ("other_context",),
    "context_recall": ("other_context",),
    "factual_correctness": ("other_answer", "swapped_span"),
    "answer_accuracy": ("other_answer", "swapped_span"),
    "semantic_similarity": ("other_answer", "swapped_span"),
}
STRING_NEGATIVES = ("other_answer", "swapped_span")
CALIBRATED_LLM_METRICS = INTERACTION_METRICS + REFERENCE_METRICS


# -- AUC --------------------------------------------------------------------------------------------------------
def roc_auc(positives: list[float], negatives: list[float]) -> float | None:
    """P(score of a random positive > score of a random negative), ties 0.5 (the Mann-Whitney U statistic
    normalised). None when either side is empty."""
    if not positives or not negatives:
        return None
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


# -- labelled pairs -----------------------------------------------------------------------------------------------
@dataclass
class Source:
    question: str
    reference: str
    context: str
    answers: list[str] = field(default_factory=list)
    origin: str = ""


@dataclass
class Item:
    pair: int
    label: int
    kind: str
    row: dict


@dataclass
class Pair:
    index: int
    positive: dict
    negatives: dict[str, dict]


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("。"))
    return cut[: end + 1] if end > limit // 3 else cut.rsplit(" ", 1)[0]


def _window(passage: str, reference: str, limit: int = CONTEXT_CHARS) -> str:
    """The part of a long passage around where the reference starts."""
    passage = " ".join(passage.split())
    if len(passage) <= limit:
        return passage
    probe = " ".join(reference.split())[:40]
    at = passage.find(probe) if probe else -1
    start = max(0, at - limit // 4) if at >= 0 else 0
    return passage[start:start + limit]


_NUMBER = re.compile(r"\b\d[\d,.]*\b")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*")


def _spans(text: str, pattern: re.Pattern, avoid: str) -> list[str]:
    return [m.group(0) for m in pattern.finditer(text) if m.group(0).lower() not in avoid.lower()]


def swap_key_span(source: Source, other: Source) -> str | None:
    """The source's reference with its key span replaced by the other question's: a claim its passage no
    longer supports. None when no span can be found or the swap would change nothing."""
    reference = source.reference
    mine = [a for a in source.answers if a and a in reference]
    theirs = [a for a in other.answers if a and a not in reference]
    if mine and theirs:
        return reference.replace(mine[0], theirs[0], 1)
    for pattern in (_NUMBER, _NAME):
        spans = _spans(reference, pattern, source.question)
        replacements = [s for s in _spans(other.reference, pattern, "") if s not in reference]
        if spans and replacements:
            return reference.replace(spans[0], replacements[0], 1)
    if mine:  # a short answer but nothing alike in the other reference: use its first words instead
        return reference.replace(mine[0], " ".join(other.reference.split()[:3]), 1)
    return None


def build_pairs(sources: list[Source], n: int, seed: int = 0) -> list[Pair]:
    usable = [s for s in sources if s.reference.strip() and s.context.strip()]
    rng = random.Random(seed)
    rng.shuffle(usable)
    usable = usable[: max(n, 0) + 1]  # one more than needed, so every pair has a partner
    pairs = []
    for i, src in enumerate(usable[:n]):
        partner = usable[(i + 1) % len(usable)] if len(usable) > 1 else None
        if partner is None:
            break
        response = _shorten(src.reference, RESPONSE_CHARS)
        base = {"user_input": src.question, "reference": response, "retrieved_contexts": [src.context]}
        negatives = {
            "other_answer": {**base, "response": _shorten(partner.reference, RESPONSE_CHARS)},
            "other_context": {**base, "response": response, "retrieved_contexts": [partner.context]},
        }
        swapped = swap_key_span(Source(src.question, response, src.context, src.answers), partner)
        if swapped and swapped != response:
            negatives["swapped_span"] = {**base, "response": swapped}
        pairs.append(Pair(i, {**base, "response": response}, negatives))
    return pairs


def items_for(metric: str, pairs: list[Pair]) -> list[Item]:
    kinds = NEGATIVE_KINDS.get(metric, STRING_NEGATIVES)
    items = []
    for pair in pairs:
        items.append(Item(pair.index, 1, "positive", pair.positive))
        available = [k for k in kinds if k in pair.negatives]
        if available:
            kind = available[pair.index % len(available)]
            items.append(Item(pair.index, 0, kind, pair.negatives[kind]))
    return items


def sources_from_store(store, limit: int | None = None) -> list[Source]:
    """Probes with a reference, each with the chunk of its gold documents (active KB version) that shares the
    most words with the reference."""
    from eval.metrics import normalise_tokens

    with store.session() as s:
        probes = s.execute(sa.text(
            "SELECT id, question, reference, answers, gold_document_ids FROM probes WHERE status = 'active' "
            "AND answerable AND reference IS NOT NULL AND reference <> '' AND cardinality(gold_document_ids) > 0 "
            "ORDER BY id" + (" LIMIT :limit" if limit else "")), {"limit": limit}).all()
        docs = sorted({d for p in probes for d in p[4]})
        chunks = s.execute(sa.text(
            "SELECT c.document_id, c.text FROM active_chunks a JOIN chunks c USING (id) "
            "WHERE c.document_id = ANY(:docs) ORDER BY c.document_id, c.ordinal"), {"docs": docs}).all()
    by_doc: dict[int, list[str]] = {}
    for doc, text in chunks:
        by_doc.setdefault(doc, []).append(text)
    out = []
    for _, question, reference, answers, gold in probes:
        words = set(normalise_tokens(reference))
        candidates = [t for d in gold for t in by_doc.get(d, [])]
        if not candidates:
            continue
        best = max(candidates, key=lambda t: len(words & set(normalise_tokens(t))))
        out.append(Source(question, reference, _window(best, reference), list(answers or []), "probes"))
    return out


def sources_from_files(corpus: str | Path, questions: str | Path, limit: int | None = None) -> list[Source]:
    """Questions in the ../shared/data format with their gold passage from the corpus file."""
    passages = {}
    for line in Path(corpus).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            passages[str(row["id"])] = row.get("text") or ""
    out = []
    for line in Path(questions).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        gold = [passages[g] for g in row.get("gold_passage_ids") or [] if g in passages]
        if not row.get("answerable", True) or not row.get("reference") or not gold:
            continue
        out.append(Source(row["question"], row["reference"], _window(gold[0], row["reference"]),
                          [a for a in row.get("answers") or [] if isinstance(a, str)], str(questions)))
        if limit and len(out) >= limit:
            break
    return out


# -- scoring ----------------------------------------------------------------------------------------------------
@dataclass
class MetricCalibration:
    metric: str
    judge_model: str
    auc: float | None
    pairs: int
    items: int
    scored: int
    threshold: float
    trusted: bool
    seconds_per_item: float
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"metric": self.metric, "judge_model": self.judge_model, "auc": self.auc, "pairs": self.pairs,
                "items": self.items, "scored": self.scored, "threshold": self.threshold, "trusted": self.trusted,
                "seconds_per_item": self.seconds_per_item, "detail": self.detail}


def summarise(metric: str, judge_model: str, items: list[Item], scores: list[Score], seconds: float,
              threshold: float, coverage: float) -> MetricCalibration:
    scored = [(i, s.value) for i, s in zip(items, scores) if s.value is not None]
    pos = [v for i, v in scored if i.label == 1]
    neg = [v for i, v in scored if i.label == 0]
    auc = roc_auc(pos, neg)
    by_kind = {}
    for kind in sorted({i.kind for i in items if i.label == 0}):
        by_kind[kind] = roc_auc(pos, [v for i, v in scored if i.kind == kind])
    reasons: dict[str, int] = {}
    for s in scores:
        if s.value is None:
            key = (s.reason or "")[:120]
            reasons[key] = reasons.get(key, 0) + 1
    share = len(scored) / len(items) if items else 0.0
    trusted = auc is not None and auc >= threshold and share >= coverage
    detail = {"auc_by_negative_kind": {k: (None if v is None else round(v, 4)) for k, v in by_kind.items()},
              "items": len(items), "scored": len(scored), "coverage": round(share, 3),
              "mean_positive": round(sum(pos) / len(pos), 4) if pos else None,
              "mean_negative": round(sum(neg) / len(neg), 4) if neg else None,
              "null_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5])}
    return MetricCalibration(metric, judge_model, None if auc is None else round(auc, 4),
                             len({i.pair for i in items}), len(items), len(scored), threshold, trusted,
                             round(seconds / len(items), 3) if items else 0.0, detail)


def calibrate_pairs(pairs: list[Pair], *, judge=None, embeddings=None, metrics=CALIBRATED_LLM_METRICS,
                    non_llm: bool = True, progress=None,
                    settings: EvalSettings | None = None) -> list[MetricCalibration]:
    """Score every metric on the labelled items of `pairs` (one metric over all items at a time); a metric is
    trusted at KAIZEN_TRUST_AUC and KAIZEN_TRUST_COVERAGE of `settings` (default: EvalSettings())."""
    from eval.metrics import STRING_METRICS

    settings = settings or EvalSettings()
    threshold, coverage = settings.trust_auc, settings.trust_coverage
    results = []
    for metric in metrics:
        items = items_for(metric, pairs)
        started = time.perf_counter()
        scores = score_rows(metric, [i.row for i in items], judge, embeddings)
        seconds = time.perf_counter() - started
        name = judge.name if (METRICS[metric].uses_llm and judge is not None) else NO_JUDGE
        results.append(summarise(metric, name, items, scores, seconds, threshold, coverage))
        if progress:
            progress(results[-1])
    if non_llm:
        extra = [("semantic_similarity", None)] + [(n, fn) for n, fn in STRING_METRICS.items()]
        for metric, fn in extra:
            if metric in metrics:
                continue
            items = items_for(metric, pairs)
            started = time.perf_counter()
            if fn is None:
                scores = score_rows(metric, [i.row for i in items], None, embeddings)
            else:
                scores = [Score(metric, fn(i.row["response"], i.row["reference"])) for i in items]
            seconds = time.perf_counter() - started
            results.append(summarise(metric, NO_JUDGE, items, scores, seconds, threshold, coverage))
    return results


def store_calibration(store, results: list[MetricCalibration], source: str) -> list[int]:
    ids = []
    with store.session() as s:
        for r in results:
            ids.append(s.execute(sa.text(
                "INSERT INTO judge_calibration (judge_model, metric, auc, pairs, threshold, trusted, "
                "seconds_per_item, detail) VALUES (:j, :m, :auc, :pairs, :thr, :trusted, :spi, CAST(:detail AS jsonb)) "
                "RETURNING id"), {"j": r.judge_model, "m": r.metric, "auc": r.auc, "pairs": r.pairs,
                                  "thr": r.threshold, "trusted": r.trusted, "spi": r.seconds_per_item,
                                  "detail": json.dumps({**r.detail, "source": source})}).scalar_one())
    return ids


def calibrate(store, *, judge=None, embedder=None, pairs: int = 12, metrics=None, sources: list[Source] | None = None,
              source_label: str = "probes", seed: int = 0, progress=None, settings: EvalSettings | None = None) -> dict:
    """Build pairs (from `sources`, else the store's probes), score, store, and return the results."""
    from .ragas_embeddings import E5RagasEmbeddings

    settings = settings or EvalSettings()
    metrics = tuple(metrics or CALIBRATED_LLM_METRICS)
    if sources is None:
        sources = sources_from_store(store)
    built = build_pairs(sources, pairs, seed)
    if not built:
        raise ValueError("no labelled pairs: import questions with reference answers as probes "
                         "(`kaizen eval import FILE.jsonl`) or pass --corpus and --questions")
    if judge is None and any(METRICS[m].uses_llm for m in metrics):
        from .judge import load_judge

        judge = load_judge(settings=settings)
    if embedder is None:
        from store.embeddings import load_embedder

        embedder = load_embedder(store.settings.embedder)
    embeddings = E5RagasEmbeddings(embedder)
    started = time.perf_counter()
    results = calibrate_pairs(built, judge=judge, embeddings=embeddings, metrics=metrics, progress=progress,
                              settings=settings)
    seconds = time.perf_counter() - started
    store_calibration(store, results, source_label)
    summary = {"judge_model": judge.name if judge is not None else NO_JUDGE, "pairs": len(built),
               "source": source_label, "seconds": round(seconds, 1),
               "judge_calls": judge.stats.as_dict() if judge is not None else None,
               "metrics": [r.as_dict() for r in results]}
    with store.session() as s:
        s.execute(sa.text(
            "INSERT INTO eval_runs (kind, kb_version, judge_model, status, items, summary, finished_at) "
            "VALUES ('calibration', (SELECT id FROM kb_versions WHERE status = 'active' LIMIT 1), :j, 'done', :n, "
            "CAST(:summary AS jsonb), now())"),
            {"j": summary["judge_model"], "n": sum(r.items for r in results),
             "summary": json.dumps(summary, default=str)})
    return summary


def trusted_metrics(store, judge_model: str) -> dict[str, bool]:
    """{metric: trusted} from the latest calibration of each metric with `judge_model`, and of the metrics that
    need no judge (stored under "none"); the judge's own rows win."""
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT judge_model, metric, trusted FROM trusted_metrics WHERE judge_model IN (:j, :none)"),
            {"j": judge_model, "none": NO_JUDGE}).all()
    out = {m: bool(t) for j, m, t in rows if j == NO_JUDGE}
    out.update({m: bool(t) for j, m, t in rows if j == judge_model})
    return out


__all__ = ["roc_auc", "build_pairs", "items_for", "swap_key_span", "sources_from_store", "sources_from_files",
           "calibrate", "calibrate_pairs", "store_calibration", "trusted_metrics", "MetricCalibration", "Source",
           "Pair", "NO_JUDGE"]


def trusted_metric_rows(store, judge_name: str) -> list[dict]:
    """`kaizen eval trusted --json`: the trusted_metrics rows of this judge (and of the metrics needing none)."""
    import sqlalchemy as sa

    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT judge_model, metric, auc, pairs, threshold, trusted, created_at FROM trusted_metrics "
            "WHERE judge_model IN (:j, :none) ORDER BY judge_model, metric"), {"j": judge_name, "none": NO_JUDGE}).all()
    return [{"judge_model": r[0], "metric": r[1], "auc": r[2], "pairs": r[3], "threshold": r[4], "trusted": r[5],
             "calibrated_at": r[6].isoformat()} for r in rows]
