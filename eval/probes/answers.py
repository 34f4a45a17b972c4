"""An answered-probe run: the agent answers probes on the active KB version, and the answers are graded with the
RAGAS metrics the judge calibration trusts plus the ones that need no LLM, stored as one `eval_runs` row (kind
`answer`) and `eval_scores` rows per probe and metric (see `evaluate_probe_answers`).

Where a probe run (`eval.probes.runs`) measures retrieval by gold ids, this measures what a user gets: the answer.
Every probe has a reference answer, so an abstention is a miss: the string metrics score it 0, and so does
answer_relevancy (ragas gives a noncommittal answer 0); the other answer metrics leave it NULL with the reason.

The run row is written first (status `running`); the summary (mean of each metric over its non-NULL values, with
how many there were, and the share of probes the agent abstained on) when it is done.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from eval.judging.ragas_metrics import LLM_METRICS, METRICS
from eval.metrics import STRING_METRICS
from eval.run_rows import fail_run, finish_run, start_run

KIND = "answer"
# A probe answer has all of a metric's inputs (question, answer, context, reference), so every LLM metric applies.
ANSWER_LLM_METRICS = LLM_METRICS
# Metrics a ragas judge is not needed for: ragas's own (semantic_similarity, string_presence) and the string ones.
NON_LLM_METRICS = (*(name for name, spec in METRICS.items() if not spec.uses_llm), *STRING_METRICS)


def trusted_answer_metrics(store, judge_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(LLM metrics, metrics without an LLM) that the latest calibration of `judge_name` trusts; none of either
    without a calibration."""
    from eval.judging.calibration import trusted_metrics

    trusted = trusted_metrics(store, judge_name)
    return (tuple(m for m in ANSWER_LLM_METRICS if trusted.get(m)),
            tuple(m for m in NON_LLM_METRICS if trusted.get(m)))


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
                      progress: Callable[[int, int], None] | None = None, settings=None) -> dict:
    """Let `agent` answer the active answerable probes of `split` (the first `limit` by id) and grade the answers.
    `llm_metrics`: the LLM metrics to grade with (default: those the calibration of the judge trusts); `settings`
    an EvalSettings (default: EvalSettings()). Returns {"run_id", "kb_version", "items", "llm_metrics", "summary"}."""
    from eval.judging.interactions import ProbeAnswer, _judge_name, evaluate_probe_answers
    from eval.settings import EvalSettings
    from store.kb_versions import require_active

    from .sets import load_probes

    settings = settings or EvalSettings()
    if llm_metrics is None:
        llm_metrics = trusted_answer_metrics(store, _judge_name(judge, settings))[0]
    unknown = [m for m in llm_metrics if m not in METRICS or not METRICS[m].uses_llm]
    if unknown:
        raise ValueError(f"not an LLM metric: {', '.join(unknown)}")
    with store.session() as s:
        version = require_active(s).id
    probes = load_probes(store, split=split, limit=limit)
    started_summary = {"split": split, "limit": limit, "llm_metrics": list(llm_metrics)}
    run_id = start_run(store, KIND, version, started_summary, _judge_name(judge, settings) if llm_metrics else None)
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
                                         kb_version=version, llm_metrics=tuple(llm_metrics),
                                         settings=settings) if items else {}
    except Exception as exc:
        fail_run(store, run_id, exc)
        raise
    rows = [row for probe_rows in written.values() for row in probe_rows]
    summary = {**started_summary, **summarise(rows, answered), "seconds": round(time.perf_counter() - started, 2)}
    if not probes:
        summary["note"] = "no answerable probes with gold documents: `kaizen eval import` or `kaizen eval probes`"
    with store.session() as s:
        finish_run(s, run_id, len(items), summary)
    return {"run_id": run_id, "kb_version": version, "items": len(items), "llm_metrics": list(llm_metrics),
            "summary": summary}


__all__ = ["run_answer_probes", "trusted_answer_metrics", "summarise", "KIND",
           "ANSWER_LLM_METRICS", "NON_LLM_METRICS"]
