"""`kaizen bench judge`: how far can the local judges be trusted, and what does a grade cost?

In a fresh embedded database (a temporary KAIZEN_HOME) it ingests the gold passages of the questions used plus
some distractors, imports the questions as probes, and builds labelled pairs (eval.judging.calibration). Then, per judge
model (the default chat model, and the opt-in Qwen2.5-Coder-1.5B-Instruct when it is installed, or --judge-model
paths): ROC AUC of every LLM metric on the same pairs, seconds per judged item, and the time to evaluate a real
interaction the agent recorded (all reference-free metrics). Also: the AUC of the metrics that need no LLM, and
the gold-id retrieval metrics of the probes computed twice (they must agree exactly) against the benchmark's own
ranking code. The load average is recorded: the machine is shared and timings depend on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from eval.bench.corpus import load_average

DEFAULT_PAIRS = 12
DEFAULT_INTERACTIONS = 2
DISTRACTORS = 40
BENCH_METRICS = ("faithfulness", "answer_relevancy", "context_utilization", "response_groundedness",
                 "context_relevance", "answer_accuracy")




def default_judge_models() -> list[Path]:
    from agent.model_files import MODELS, chat_model_path, models_dir
    from agent.settings import AgentSettings

    models = [chat_model_path(AgentSettings().chat_model)]
    for spec in MODELS.values():
        path = models_dir() / spec["file"]
        if path.exists() and path.resolve() != models[0].resolve():
            models.append(path)
    return models


def subset_corpus(corpus: str, questions: list[dict], folder: Path, distractors: int = DISTRACTORS) -> Path:
    """A corpus file with the gold passages of `questions` and the first `distractors` other passages."""
    gold = {g for q in questions for g in q.get("gold_passage_ids") or []}
    kept, others = [], 0
    for line in Path(corpus).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if str(row["id"]) in gold:
            kept.append(line)
        elif others < distractors:
            kept.append(line)
            others += 1
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return path


def pick_questions(path: str, n: int) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("answerable", True) and r.get("reference") and r.get("gold_passage_ids")]
    return rows[:n]


def gold_id_check(store, embedder) -> dict:
    """Gold-id metrics of every probe, twice, and once more through the benchmark's own ranking code."""
    from eval.metrics import score_ranking
    from eval.probes.retrieval import score_probes
    from eval.probes.sets import load_probes

    probes = load_probes(store)
    first, summary = score_probes(store, embedder, probes)
    second, _ = score_probes(store, embedder, probes)
    gold = {p.id: {str(d) for d in p.gold_document_ids} for p in probes}
    again = [score_ranking([str(d) for d in r.ranked_document_ids], gold[r.probe_id]) for r in first]
    exact = all(a.scores == b.scores for a, b in zip(first, second)) and all(
        {k: v for k, v in r.scores.items()} == s for r, s in zip(first, again))
    return {"probes": len(first), "exact": exact,
            "summary": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}}


def time_interactions(store, interaction_ids: list[int], judge, embedder, metrics) -> dict:
    from eval.judging.interactions import evaluate_interactions

    calls_before = judge.stats.calls
    started = time.perf_counter()
    load = load_average()
    out = evaluate_interactions(store, interaction_ids, judge=judge, embedder=embedder, metrics=metrics)
    seconds = time.perf_counter() - started
    rows = [r for rs in out.values() for r in rs]
    return {"interactions": len(interaction_ids), "metrics": list(metrics),
            "seconds_per_interaction": round(seconds / max(1, len(interaction_ids)), 1),
            "judge_calls": judge.stats.calls - calls_before, "load_average_before": load,
            "load_average_after": load_average(),
            "scores": {m: [r["value"] if r["value"] is None else round(r["value"], 3)
                           for r in rows if r["metric"] == m] for m in metrics},
            "null_reasons": sorted({r["reason"][:100] for r in rows if r["reason"]})}


def record_reference_interaction(store, source) -> int:
    """An interaction whose answer is the reference, with the gold chunk in context (when the agent abstains)."""
    import sqlalchemy as sa

    with store.session() as s:
        iid = s.execute(sa.text(
            "INSERT INTO interactions (thread_id, question, answer, abstained, model) "
            "VALUES ('bench-judge', :q, :a, false, 'reference') RETURNING id"),
            {"q": source.question, "a": source.reference}).scalar_one()
        chunk = s.execute(sa.text("SELECT id FROM chunks WHERE strpos(regexp_replace(text, '\\s+', ' ', 'g'), :t) > 0 "
                                  "ORDER BY id DESC LIMIT 1"), {"t": source.context[:120]}).scalar()
        if chunk is not None:
            s.execute(sa.text("INSERT INTO retrievals (interaction_id, query, chunk_id, rank, score, in_context) "
                              "VALUES (:i, :q, :c, 1, 1.0, true)"), {"i": iid, "q": source.question, "c": chunk})
    return iid


def run(corpus: str, questions_path: str, *, pairs: int = DEFAULT_PAIRS, judge_models=None, metrics=None,
        interactions: int = DEFAULT_INTERACTIONS, progress=None, checkpoint=None) -> dict:
    from agent.graph import Agent
    from eval.judging.calibration import build_pairs, calibrate_pairs, sources_from_store
    from eval.judging.judge import load_judge
    from eval.judging.ragas_embeddings import E5RagasEmbeddings
    from eval.judging.ragas_metrics import INTERACTION_METRICS, selected_metrics
    from eval.probes.sets import import_probes

    from .corpus import bench_store, ingest_corpus

    say = progress or (lambda message: None)
    metrics = selected_metrics(metrics, BENCH_METRICS)
    judge_models = [Path(p) for p in judge_models] if judge_models else default_judge_models()
    questions = pick_questions(questions_path, pairs + 1 + 3 * interactions)
    result = {"benchmark": "judge", "corpus": str(corpus), "questions_file": str(questions_path),
              "pairs_requested": pairs, "metrics": list(metrics), "load_average_start": load_average(), "judges": []}
    with bench_store(None, "kaizen-bench-judge-") as (store, embedder, home):
        folder = home / "subset"
        folder.mkdir()
        qfile = folder / "questions.jsonl"
        qfile.write_text("\n".join(json.dumps(q, ensure_ascii=False) for q in questions) + "\n", encoding="utf-8")
        started = time.perf_counter()
        report = ingest_corpus(store, embedder, subset_corpus(corpus, questions, folder))
        import_probes(store, qfile, probe_set="bench-judge")
        result["ingest"] = {"documents": report.added, "chunks": report.chunks,
                            "seconds": round(time.perf_counter() - started, 1)}
        say(f"ingested {report.added} documents in {result['ingest']['seconds']}s")
        result["gold_id_metrics"] = gold_id_check(store, embedder)
        sources = sources_from_store(store)
        built = build_pairs(sources[: pairs + 1], pairs)
        result["pairs"] = len(built)
        result["negative_kinds"] = sorted({k for p in built for k in p.negatives})
        embeddings = E5RagasEmbeddings(embedder)
        # The interactions to time: real answers by the agent on the default chat model (abstentions are not
        # graded, so up to 3 questions per wanted answer; if the small model abstains on all of them, the
        # reference answers are recorded as interactions instead, and the JSON says so).
        agent = Agent(store, embedder=embedder, persist=False)
        interaction_ids, abstained = [], 0
        for q in questions[pairs + 1:]:
            if len(interaction_ids) >= interactions:
                break
            turn = agent.ask(q["question"])
            if turn.abstained:
                abstained += 1
            else:
                interaction_ids.append(turn.interaction_id)
        synthetic = 0
        for src in sources[: interactions - len(interaction_ids)]:
            interaction_ids.append(record_reference_interaction(store, src))
            synthetic += 1
        result["interactions"] = {"graded": len(interaction_ids), "agent_abstained": abstained,
                                  "reference_answers_used": synthetic, "chat_model": agent.llm.name}
        result["llm_threads"] = agent.llm.settings.threads
        say(f"interactions to grade: {result['interactions']}")
        non_llm_done = False
        for path in judge_models:
            judge = load_judge(path)
            say(f"judge {judge.name}: {len(built)} pairs × {len(metrics)} metrics")
            entry = {"judge_model": judge.name, "path": str(path), "load_average_before": load_average(), "metrics": []}
            result["judges"].append(entry)

            def done(c, entry=entry):  # keep partial results: a slow judge can be stopped after any metric
                say(f"  {c.metric}: AUC {c.auc} ({c.scored}/{c.items} scored, {c.seconds_per_item}s/item, "
                    f"load {load_average()})")
                if c.judge_model != "none":
                    entry["metrics"].append(c.as_dict())
                    if checkpoint:
                        checkpoint(result)

            started = time.perf_counter()
            calibrations = calibrate_pairs(built, judge=judge, embeddings=embeddings, metrics=metrics,
                                           non_llm=not non_llm_done, progress=done)
            entry["calibration_seconds"] = round(time.perf_counter() - started, 1)
            llm_rows = entry["metrics"]
            if not non_llm_done:
                result["non_llm_metrics"] = [c.as_dict() for c in calibrations if c.judge_model == "none"]
                non_llm_done = True
            entry["best_llm_auc"] = max((c["auc"] for c in llm_rows if c["auc"] is not None), default=None)
            entry["interaction_eval"] = time_interactions(store, interaction_ids, judge, embedder,
                                                          INTERACTION_METRICS)
            entry["judge_calls"] = judge.stats.as_dict()
            entry["load_average_after"] = load_average()
            say(f"  {judge.name}: best AUC {entry['best_llm_auc']}, "
                f"{entry['interaction_eval']['seconds_per_interaction']}s per interaction")
            if checkpoint:
                checkpoint(result)
        result["target"] = {
            "goal": "at least one LLM metric with AUC >= 0.8 on the stronger model; gold-id metrics exact",
            "best_auc_by_judge": {j["judge_model"]: j.get("best_llm_auc") for j in result["judges"]},
            "gold_id_exact": result["gold_id_metrics"]["exact"],
        }
        result["load_average_end"] = load_average()
        return result
