"""An answered-probe run: the agent answers probes on the active KB version, and the answers are graded with the
RAGAS metrics the judge calibration trusts plus the ones that need no LLM, stored as one `eval_runs` row (kind
`answer`) and `eval_scores` rows per probe and metric (see `evaluate_probe_answers`).

Where a probe run (`eval.probe_runs`) measures retrieval by gold ids, this measures what a user gets: the answer.
Every probe has a reference answer, so an abstention is a miss: the string metrics score it 0, and so does
answer_relevancy (ragas gives a noncommittal answer 0); the other answer metrics leave it NULL with the reason.

The run row is written first (status `running`); the summary (mean of each metric over its non-NULL values, with
how many there were, and the share of probes the agent abstained on) when it is done.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Sequence

import sqlalchemy as sa

from .ragas_metrics import METRICS

KIND = "answer"
# LLM metrics that can grade an answer to a probe (question, answer, context, reference).
ANSWER_LLM_METRICS = ("answer_relevancy", "faithfulness", "response_groundedness", "context_utilization",
                      "answer_accuracy", "factual_correctness", "context_recall")
# Metrics a ragas judge is not needed for; `semantic_similarity` and `string_presence` are ragas's own.
NON_LLM_METRICS = ("semantic_similarity", "string_presence", "token_f1", "chrf", "rouge_l")


def trusted_llm_metrics(store, judge_name: str) -> tuple[str, ...]:
    """The answer metrics the latest calibration of `judge_name` trusts (none without a calibration)."""
    from .calibration import trusted_metrics

    trusted = trusted_metrics(store, judge_name)
    return tuple(m for m in ANSWER_LLM_METRICS if trusted.get(m))


def trusted_non_llm_metrics(store) -> tuple[str, ...]:
    from .calibration import NO_JUDGE, trusted_metrics

    trusted = trusted_metrics(store, NO_JUDGE)
    return tuple(m for m in NON_LLM_METRICS if trusted.get(m))


def summarise(rows: Sequence[dict], answered: Sequence[dict]) -> dict:
    """{metric: {"mean", "n"}} over non-NULL values, plus the abstention share of the answers."""
    values: dict[str, list[float]] = {}
    nulls: dict[str, int] = {}
    for row in rows:
        if row["value"] is None:
            nulls[row["metric"]] = nulls.get(row["metric"], 0) + 1
        else:
            values.setdefault(row["metric"], []).append(row["value"])
    metrics = {m: {"mean": round(sum(v) / len(v), 4), "n": len(v), "null": nulls.get(m, 0)}
               for m, v in sorted(values.items())}
    metrics.update({m: {"mean": None, "n": 0, "null": n} for m, n in nulls.items() if m not in values})
    abstained = sum(1 for a in answered if a["abstained"])
    return {"metrics": metrics, "answers": len(answered),
            "abstained_share": round(abstained / len(answered), 4) if answered else None}


def run_answer_probes(store, agent, *, split: str | None = "heldout", limit: int | None = None,
                      judge=None, llm_metrics: Sequence[str] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict:
    """Let `agent` answer the active answerable probes of `split` (the first `limit` by id) and grade the answers.
    `llm_metrics`: the LLM metrics to grade with (default: those the calibration of the judge trusts).
    Returns {"run_id", "kb_version", "items", "llm_metrics", "summary"}."""
    from store.kb_versions import require_active

    from .interaction_eval import ProbeAnswer, _judge_name, evaluate_probe_answers
    from .probe_sets import load_probes

    if llm_metrics is None:
        llm_metrics = trusted_llm_metrics(store, _judge_name(judge))
    unknown = [m for m in llm_metrics if m not in METRICS or not METRICS[m].uses_llm]
    if unknown:
        raise ValueError(f"not an LLM metric: {', '.join(unknown)}")
    with store.session() as s:
        version = require_active(s).id
    probes = load_probes(store, split=split, limit=limit)
    started_summary = {"split": split, "limit": limit, "llm_metrics": list(llm_metrics)}
    with store.session() as s:
        run_id = s.execute(sa.text(
            "INSERT INTO eval_runs (kind, kb_version, judge_model, status, summary) "
            "VALUES (:kind, :v, :judge, 'running', CAST(:summary AS jsonb)) RETURNING id"),
            {"kind": KIND, "v": version, "judge": _judge_name(judge) if llm_metrics else None,
             "summary": json.dumps(started_summary)}).scalar_one()
    started = time.perf_counter()
    try:
        items, answered = [], []
        for n, probe in enumerate(probes, 1):
            turn = agent.ask(probe.question)
            items.append(ProbeAnswer(probe.id, turn.answer, [p["text"] for p in turn.passages],
                                     abstained=turn.abstained))
            answered.append({"probe_id": probe.id, "interaction_id": turn.interaction_id,
                             "abstained": turn.abstained})
            if progress:
                progress(n, len(probes))
        written = evaluate_probe_answers(store, items, judge=judge, embedder=agent.embedder, run_id=run_id,
                                         kb_version=version, llm_metrics=tuple(llm_metrics)) if items else {}
    except Exception as exc:
        with store.session() as s:
            s.execute(sa.text("UPDATE eval_runs SET status = 'failed', error = :e, finished_at = now() WHERE id = :id"),
                      {"e": f"{type(exc).__name__}: {exc}"[:2000], "id": run_id})
        raise
    rows = [row for probe_rows in written.values() for row in probe_rows]
    summary = {**started_summary, **summarise(rows, answered), "seconds": round(time.perf_counter() - started, 2)}
    if not probes:
        summary["note"] = "no answerable probes with gold documents: `kaizen eval import` or `kaizen eval probes`"
    with store.session() as s:
        s.execute(sa.text(
            "UPDATE eval_runs SET status = 'done', items = :n, summary = CAST(:summary AS jsonb), finished_at = now() "
            "WHERE id = :id"), {"n": len(items), "summary": json.dumps(summary), "id": run_id})
    return {"run_id": run_id, "kb_version": version, "items": len(items), "llm_metrics": list(llm_metrics),
            "summary": summary}


__all__ = ["run_answer_probes", "trusted_llm_metrics", "trusted_non_llm_metrics", "summarise", "KIND",
           "ANSWER_LLM_METRICS", "NON_LLM_METRICS"]
