"""`kaizen bench improve`: does the improvement loop make a knowledge base better than where an ingest leaves it,
on questions it never saw?

The corpus is ingested (with the defaults, or with a misconfigured `start` a user might have chosen: a poor chunk
size or fusion weight) into a database of the benchmark's own. The questions are split by a stable hash of their
ids into three parts: traffic (imported as train probes with their gold documents: what the loop learns and tunes
from), the guard's held-out probes (what decides every promotion), and an evaluation part that nothing in the loop
ever reads. `--eval-questions FILE` adds questions that are only scored, before and after. The planner then runs
unattended (`kaizen improve`, improvement passes until one promotes nothing or the time budget is spent), and the
evaluation part is scored again: recall@1/5/10 and MRR, and with `answers` the default model's answers (token F1
and string presence against the references) on the first evaluation questions.

With a `start`, the same questions are also scored on a clean default ingest in a second temporary database, and
`gap_closed` is the share of the start's deficit to it the loop recovered.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from eval.judging.trust import GOLD_METRICS

PARTS = (("eval", 0.25), ("guard", 0.25), ("traffic", 0.5))


def part_of(question_id: str, salt: str = "kaizen-bench-improve") -> str:
    """Which part a question falls in: a stable hash of its id, so every run splits a file the same way."""
    u = int.from_bytes(hashlib.sha256(f"{salt}\x00{question_id}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in PARTS:
        edge += share
        if u < edge:
            return name
    return PARTS[-1][0]


def split_questions(rows: list[dict]) -> dict[str, list[dict]]:
    parts: dict[str, list[dict]] = {name: [] for name, _ in PARTS}
    for number, row in enumerate(rows):
        parts[part_of(str(row.get("id") or f"line-{number}"))].append(row)
    return parts


def start_settings(start: dict) -> dict:
    """`start` (chunk_tokens, chunk_overlap, or a tunable retrieval parameter such as fusion_alpha) as settings
    fields, validated with the settings' bounds."""
    from store import search_params as P
    from store.settings import StoreSettings

    fields = {}
    for name, value in start.items():
        key = name.strip().lower().removeprefix("kaizen_")
        fields[key if key in ("chunk_tokens", "chunk_overlap") else P.field_of(key)] = value
    if "chunk_tokens" in fields and "chunk_overlap" not in fields:
        from eval.repair.tuning import overlap_for

        fields["chunk_overlap"] = overlap_for(int(fields["chunk_tokens"]))
    parsed = StoreSettings.defaults(**fields)
    return {f: getattr(parsed, f) for f in fields}


def _write(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _retrieval(store, embedder, questions: list[dict]) -> dict | None:
    from eval.bench.retrieval import evaluate_modes

    if not questions:
        return None
    scores = evaluate_modes(store, embedder, questions, modes=("hybrid",))["hybrid"]
    return {m: scores[m] for m in GOLD_METRICS} | {"questions": len(questions)}


def _answers(agent, questions: list[dict]) -> dict | None:
    import statistics

    from eval.metrics import answer_figures

    if not questions:
        return None
    rows = []
    for q in questions:
        result = agent.ask(q["question"])
        rows.append({**answer_figures(result.answer, result.abstained, q), "abstained": result.abstained})
    scored = [r for r in rows if r["f1"] is not None]
    present = [r for r in rows if r["string_presence"] is not None]
    return {"questions": len(rows), "abstained": sum(r["abstained"] for r in rows),
            "token_f1": round(statistics.mean(r["f1"] for r in scored), 4) if scored else None,
            "string_presence": round(statistics.mean(r["string_presence"] for r in present), 4) if present else None}


def _default_figures(corpora: list[str], questions: dict[str, list[dict]]) -> dict:
    from eval.bench.corpus import bench_store, ingest_corpus

    with bench_store(None, "kaizen-bench-default-") as (store, embedder, _):
        for corpus in corpora:
            ingest_corpus(store, embedder, corpus)
        return {name: _retrieval(store, embedder, rows) for name, rows in questions.items() if rows}


def _plan_rows(plan) -> list[dict]:
    return [{"kind": r.action["kind"], "decision": r.decision, "reason": r.reason, "seconds": r.seconds,
             "params": r.action.get("params") or ({"chunk_tokens": r.action["chunk_tokens"]}
                                                  if "chunk_tokens" in r.action else None),
             "heldout_before": r.metrics_before, "heldout_after": r.metrics_after} for r in plan.results]


def run_on_store(store, embedder, corpora: list[str], question_files: list[str], *, workdir: Path,
                 eval_questions: str | None = None, limit: int | None = None, budget_seconds: float = 1200,
                 answers: int = 0, start: dict | None = None, passes: int = 3) -> dict:
    from eval.bench.corpus import ingest_corpus
    from eval.bench.recovery import recovered_share
    from eval.bench.retrieval import load_questions
    from eval.probes.sets import import_probes
    from eval.repair.planner import run_planner
    from store import search_params as P
    from store.kb_versions import require_active

    started = time.perf_counter()
    timings = {}
    rows = [r for path in question_files for r in load_questions(path, limit)]
    parts = split_questions(rows)
    extra = load_questions(eval_questions) if eval_questions else []
    t = time.perf_counter()
    for corpus in corpora:
        ingest_corpus(store, embedder, corpus)
    timings["ingest"] = round(time.perf_counter() - t, 1)
    imported = {
        "traffic": import_probes(store, _write(parts["traffic"], workdir / "traffic.jsonl"),
                                 probe_set="bench-traffic", heldout_share=0.0),
        "guard": import_probes(store, _write(parts["guard"], workdir / "guard.jsonl"),
                               probe_set="bench-guard", heldout_share=1.0),
    }
    scored = {"eval": parts["eval"], **({"eval_questions": extra} if extra else {})}
    before = {name: _retrieval(store, embedder, qs) for name, qs in scored.items()}
    agent = None
    answers_before = answers_after = None
    if answers:
        from agent.graph import Agent

        agent = Agent(store, embedder=embedder, persist=False)
        t = time.perf_counter()
        answers_before = _answers(agent, parts["eval"][:answers])
        timings["answers_before"] = round(time.perf_counter() - t, 1)
    with store.session() as s:
        first = require_active(s).id

    plans = []
    t = time.perf_counter()
    deadline = time.perf_counter() + budget_seconds
    for _ in range(passes):  # improvement passes, as the idle worker would run them, until one keeps nothing
        left = deadline - time.perf_counter()
        if left <= 0:
            break
        plan = run_planner(store, embedder=embedder, actor="kaizen bench improve", budget_seconds=left)
        plans.append(plan)
        if not plan.kept:
            break
    timings["loop"] = round(time.perf_counter() - t, 1)
    after = {name: _retrieval(store, embedder, qs) for name, qs in scored.items()}
    if agent is not None:
        t = time.perf_counter()
        answers_after = _answers(agent, parts["eval"][:answers])
        timings["answers_after"] = round(time.perf_counter() - t, 1)
    with store.session() as s:
        final = require_active(s)
    results = [row for plan in plans for row in _plan_rows(plan)]
    report = {
        "benchmark": "improve",
        "corpora": [str(c) for c in corpora],
        "questions": [str(q) for q in question_files],
        "eval_questions_file": str(eval_questions) if eval_questions else None,
        "split": {name: len(qs) for name, qs in parts.items()} | ({"eval_questions": len(extra)} if extra else {}),
        "probes": imported,
        "start": start or "the defaults",
        "budget_seconds": budget_seconds,
        "before": before,
        "after": after,
        "answers": {"before": answers_before, "after": answers_after} if answers else
        "not measured (--answers 0)",
        "kb_version": {"first": first, "final": final.id},
        "final_parameters": {row["name"]: row["value"] for row in P.describe(store.settings, final)}
        | {"chunk_overlap": final.chunk_overlap},
        "passes": [{"status": p.status, "message": p.message, "rounds": p.rounds,
                    "findings": [f["summary"] for f in p.findings]} for p in plans],
        "tried": len(results),
        "kept": sum(r["decision"] == "promoted" for r in results),
        "rolled_back": sum(r["decision"] == "rolled_back" for r in results),
        "actions": results,
        "changed": final.id != first,
    }
    if start:
        t = time.perf_counter()
        default = _default_figures(corpora, scored)
        timings["default_ingest_and_score"] = round(time.perf_counter() - t, 1)
        report["default"] = default
        report["gap_closed"] = {
            # the recovery benchmark's share: (after - start) / (default - start), None when nothing was lost
            name: {m: recovered_share(default[name][m], before[name][m], after[name][m]) for m in GOLD_METRICS}
            for name in scored if default.get(name) and before.get(name) and after.get(name)}
    timings["total"] = round(time.perf_counter() - started, 1)
    report["seconds"] = timings
    return report


def run(corpora: list[str], question_files: list[str], home: str | None = None, start: dict | None = None,
        **kwargs) -> dict:
    from eval.bench.corpus import bench_store

    overrides = start_settings(start) if start else {}
    with bench_store(home, "kaizen-bench-improve-", overrides) as (store, embedder, home_dir):
        return run_on_store(store, embedder, corpora, question_files, workdir=home_dir, start=start, **kwargs)
