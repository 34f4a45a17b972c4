"""RAGAS metrics (ragas 0.4.3, `ragas.metrics.collections`) wired to the local judge and embedder, run one metric
over all rows at a time, every value validated.

A row is a dict with the ragas input names: `user_input`, `response`, `retrieved_contexts`, `reference`.
`score_rows(metric, rows, judge, embeddings)` returns one `Score` per row, in order: a value inside the metric's
range, or `value=None` with the reason (missing input, a judge reply that failed its schema, NaN, out of range, an
error inside ragas). It never raises for a row and never returns NaN.

Metrics (the names stored in `eval_scores.metric`):
- reference-free, for real interactions: faithfulness, answer_relevancy, context_utilization (ragas's context
  precision without reference: in 0.4.3 `ContextUtilization` *is* `ContextPrecisionWithoutReference`),
  response_groundedness, context_relevance;
- with a reference, for probes: context_recall, factual_correctness (F1), answer_accuracy;
- no LLM: semantic_similarity (e5 cosine of answer and reference), string_presence (the reference span appears).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from .judge import DEFAULT_CONTEXT_TOKENS, JudgeReplyError, call_errors


@dataclass
class Score:
    metric: str
    value: float | None
    reason: str | None = None
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class MetricSpec:
    name: str
    inputs: tuple[str, ...]
    build: Callable  # (judge, embeddings) -> ragas BaseMetric
    uses_llm: bool = True
    uses_embeddings: bool = False
    value_range: tuple[float, float] = (0.0, 1.0)
    description: str = ""


def _ragas():
    from ragas.metrics import collections as c

    return c


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in [
    MetricSpec("faithfulness", ("user_input", "response", "retrieved_contexts"),
               lambda j, e: _ragas().Faithfulness(llm=j),
               description="share of the answer's statements the context supports"),
    MetricSpec("answer_relevancy", ("user_input", "response"),
               # greedy decoding makes ragas's 3 samples identical: one question is the same signal for 1/3 the cost
               lambda j, e: _ragas().AnswerRelevancy(llm=j, embeddings=e, strictness=1), uses_embeddings=True,
               description="e5 cosine of the question and a question written back from the answer; 0 if evasive"),
    MetricSpec("context_utilization", ("user_input", "response", "retrieved_contexts"),
               lambda j, e: _ragas().ContextUtilization(llm=j),
               description="context precision without reference: were the passages useful for this answer"),
    MetricSpec("response_groundedness", ("response", "retrieved_contexts"),
               lambda j, e: _ragas().ResponseGroundedness(llm=j, max_retries=1),
               description="two 0/1/2 ratings of how well the context supports the answer"),
    MetricSpec("context_relevance", ("user_input", "retrieved_contexts"),
               lambda j, e: _ragas().ContextRelevance(llm=j, max_retries=1),
               description="two 0/1/2 ratings of how relevant the context is to the question"),
    MetricSpec("context_recall", ("user_input", "retrieved_contexts", "reference"),
               lambda j, e: _ragas().ContextRecall(llm=j),
               description="share of the reference's statements the context supports"),
    MetricSpec("factual_correctness", ("response", "reference"),
               lambda j, e: _ragas().FactualCorrectness(llm=j, mode="f1"),
               description="F1 of claims between answer and reference"),
    MetricSpec("answer_accuracy", ("user_input", "response", "reference"),
               lambda j, e: _ragas().AnswerAccuracy(llm=j, max_retries=1),
               description="two 0/2/4 ratings of the answer against the reference"),
    MetricSpec("semantic_similarity", ("reference", "response"),
               lambda j, e: _ragas().SemanticSimilarity(embeddings=e), uses_llm=False, uses_embeddings=True,
               description="e5 cosine of answer and reference"),
    MetricSpec("string_presence", ("reference", "response"),
               lambda j, e: _ragas().StringPresence(), uses_llm=False,
               description="1 if the reference (a short span) appears in the answer"),
]}

INTERACTION_METRICS = ("faithfulness", "answer_relevancy", "context_utilization", "response_groundedness",
                       "context_relevance")
REFERENCE_METRICS = ("context_recall", "factual_correctness", "answer_accuracy")
LLM_METRICS = tuple(name for name, spec in METRICS.items() if spec.uses_llm)

_MISSING = {
    "retrieved_contexts": "no retrieved context to judge against",
    "response": "empty answer",
    "user_input": "empty question",
    "reference": "no reference answer",
}


def missing_input(spec: MetricSpec, row: dict) -> str | None:
    for key in spec.inputs:
        value = row.get(key)
        if key == "retrieved_contexts":
            if not value or not any(isinstance(c, str) and c.strip() for c in value):
                return _MISSING[key]
        elif not isinstance(value, str) or not value.strip():
            return _MISSING[key]
    return None


def validate_value(spec: MetricSpec, value, errors: list[str] | None = None) -> tuple[float | None, str | None]:
    """A metric's raw value → (value in range, None) or (None, why not)."""
    why = f"; judge: {errors[-1]}" if errors else ""
    if value is None:
        return None, "no value" + why
    if isinstance(value, bool):
        value = float(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, f"not a number: {value!r}"
    if math.isnan(value):
        return None, ("NaN: the judge gave nothing to score" + why) if not errors else f"NaN{why}"
    low, high = spec.value_range
    if not low - 1e-6 <= value <= high + 1e-6:
        return None, f"out of range [{low}, {high}]: {value!r}"
    return min(high, max(low, value)), None


def _trimmed(row: dict, judge) -> dict:
    contexts = row.get("retrieved_contexts")
    if not contexts or judge is None or not hasattr(judge, "llm"):
        return row
    limit = getattr(judge, "context_tokens", DEFAULT_CONTEXT_TOKENS)  # KAIZEN_JUDGE_CONTEXT_TOKENS, via load_judge
    return {**row, "retrieved_contexts": [judge.llm.truncate(c, limit) for c in contexts if isinstance(c, str)]}


async def _score_one(spec: MetricSpec, metric, row: dict) -> Score:
    reason = missing_input(spec, row)
    if reason:
        return Score(spec.name, None, reason)
    errors: list[str] = []
    call_errors.set(errors)  # this task's own list (each gathered coroutine runs in its own context copy)
    try:
        result = await metric.ascore(**{key: row[key] for key in spec.inputs})
    except JudgeReplyError as exc:
        return Score(spec.name, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - a metric failing on one row is a NULL score for that row
        return Score(spec.name, None, f"{type(exc).__name__}: {exc}"[:500])
    value, reason = validate_value(spec, getattr(result, "value", None), errors)
    detail = {"judge_errors": errors} if errors else {}
    return Score(spec.name, value, reason, detail)


async def _score_all(spec: MetricSpec, metric, rows: list[dict]) -> list[Score]:
    return list(await asyncio.gather(*(_score_one(spec, metric, row) for row in rows)))


def run_coroutine(coro):
    """asyncio.run, also from a thread that already runs an event loop (e.g. an async worker)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def score_rows(name: str, rows: list[dict], judge=None, embeddings=None) -> list[Score]:
    """Score every row with one metric (all rows' first judge step, then all rows' second step...)."""
    spec = METRICS[name]
    if not rows:
        return []
    if spec.uses_llm and judge is None:
        return [Score(name, None, "no judge model configured") for _ in rows]
    try:
        metric = spec.build(judge, embeddings)
    except Exception as exc:  # noqa: BLE001 - e.g. an embedder ragas refuses: every row says why
        return [Score(name, None, f"cannot build the ragas metric: {exc}"[:500]) for _ in rows]
    started = time.perf_counter()
    scores = run_coroutine(_score_all(spec, metric, [_trimmed(r, judge) for r in rows]))
    per_row = (time.perf_counter() - started) / len(rows)
    for score in scores:
        score.detail.setdefault("seconds_per_row", round(per_row, 3))
    return scores


def selected_metrics(names, default: tuple[str, ...]) -> tuple[str, ...]:
    """Metric names from a list or comma-separated string (None → default); unknown names are an error."""
    if names is None:
        return default
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return tuple(names)


__all__ = ["Score", "MetricSpec", "METRICS", "INTERACTION_METRICS", "REFERENCE_METRICS", "LLM_METRICS",
           "score_rows", "validate_value", "missing_input", "selected_metrics", "run_coroutine"]
