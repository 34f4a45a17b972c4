"""`kaizen bench recovery`: ingest a corpus into a temporary database, import its questions as probes, measure
held-out quality, let the planner run on the clean KB (it must change nothing), degrade the KB on purpose
(tiny fragments, titles stripped, 20% of chunks replaced with noise), raise the quality alert the worker's drift
detection would raise, let the planner run unattended, and measure again.

The recovered share is (recovered - degraded) / (baseline - degraded) of held-out recall@5.

The RAGAS side: the judge (the default model, or KAIZEN_JUDGE_MODEL) is first calibrated on the probes for the
metrics in `judge_metrics` (default answer_relevancy, the one cheap enough to grade every answer of every phase);
then at each phase the agent answers the first `answer_probes` held-out probes and the answers are graded with
the metrics the calibration trusts (LLM-judged ones, and ragas's non-LLM semantic_similarity / string_presence
with the string metrics). Untrusted metrics are reported as such and never summarised as a recovery."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from eval.judging.trust import GOLD_METRICS


def _write_probe_file(questions_path: str, limit: int | None, directory: Path) -> Path:
    from eval.bench.retrieval import load_questions

    rows = load_questions(questions_path, limit)
    path = directory / "probes.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _metrics(store, embedder, split: str) -> dict:
    from eval.probes.retrieval import score_probes
    from eval.probes.sets import load_probes

    _, summary = score_probes(store, embedder, load_probes(store, split=split))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}


def probe_run_alert(store, embedder) -> int | None:
    """What the worker does on its schedule: a train-probe run on the active version, then the drift check
    against the baseline of the version it replaced. Returns the alert it raised, if any."""
    from eval.probes.runs import run_probes
    from eval.worker.drift import check_drift

    run_probes(store, embedder, split="train")
    alerts = check_drift(store)
    return alerts[0] if alerts else None


def recovered_share(base: float | None, degraded: float | None, recovered: float | None) -> float | None:
    """None when nothing was lost, or when a phase has no value (every score NULL) to compare."""
    if base is None or degraded is None or recovered is None:
        return None
    lost = base - degraded
    return round((recovered - degraded) / lost, 4) if lost > 1e-9 else None


def _answer_phase(store, agent, answer_probes: int, llm_metrics: tuple[str, ...]) -> dict:
    from eval.probes.answers import run_answer_probes

    run = run_answer_probes(store, agent, split="heldout", limit=answer_probes, llm_metrics=llm_metrics)
    summary = run["summary"]
    return {"run_id": run["run_id"], "kb_version": run["kb_version"], "answers": summary["answers"],
            "abstained_share": summary["abstained_share"], "seconds": summary["seconds"],
            "metrics": {m: v["mean"] for m, v in summary["metrics"].items()},
            "scored": {m: v["n"] for m, v in summary["metrics"].items()}}


def _ragas_report(calibration: dict | None, trusted: list[str], phases: dict) -> dict:
    report = {"judge_model": calibration["judge_model"] if calibration else None,
              "calibration": [{k: m[k] for k in ("metric", "judge_model", "auc", "trusted")}
                              for m in (calibration or {}).get("metrics", [])],
              "trusted_metrics": trusted, **phases}
    if all(p in phases for p in ("baseline", "degraded", "recovered")):
        report["recovered_share"] = {m: recovered_share(*(phases[p]["metrics"].get(m)
                                                         for p in ("baseline", "degraded", "recovered")))
                                     for m in trusted}
    return report


def _result_rows(plan) -> list[dict]:
    return [{"kind": r.action["kind"], "decision": r.decision, "reason": r.reason, "seconds": r.seconds,
             "candidate_version": r.candidate_version, "heldout_before": r.metrics_before,
             "heldout_after": r.metrics_after} for r in plan.results]


def run_on_store(store, embedder, corpus: str, questions: str, limit: int | None, *, heldout_share: float | None = None,
                 fragment_tokens: int = 24, noise_share: float = 0.2, llm=None, workdir: Path | None = None,
                 answer_probes: int = 20, judge_metrics: tuple[str, ...] = ("answer_relevancy",),
                 calibration_pairs: int = 8) -> dict:
    from eval.bench.corpus import ingest_corpus
    from eval.judging.trust import trusted_llm_metrics
    from eval.probes.sets import HELDOUT_SHARE, import_probes
    from eval.repair.planner import run_planner
    from eval.settings import EvalSettings

    from .degrade import degrade

    timings = {}
    started = t = time.perf_counter()
    report = ingest_corpus(store, embedder, corpus)
    timings["ingest"] = round(time.perf_counter() - t, 2)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="kaizen-recovery-"))
    probe_file = _write_probe_file(questions, limit, workdir)
    imported = import_probes(store, probe_file, probe_set=Path(questions).parent.name or "bench",
                             heldout_share=heldout_share or HELDOUT_SHARE)
    baseline = {"heldout": _metrics(store, embedder, "heldout"), "train": _metrics(store, embedder, "train")}
    from eval.probes.runs import run_probes

    run_probes(store, embedder, split="train", baseline=True)  # the clean version's baseline for drift detection

    answers: dict = {}
    calibration, answer_trusted, agent = None, [], None
    if answer_probes:
        from agent.graph import Agent
        from eval.judging.calibration import calibrate
        from eval.probes.answers import trusted_answer_metrics

        t = time.perf_counter()
        calibration = calibrate(store, embedder=embedder, pairs=calibration_pairs, metrics=judge_metrics)
        timings["judge_calibration"] = round(time.perf_counter() - t, 2)
        llm_trusted, plain_trusted = trusted_answer_metrics(store, calibration["judge_model"])
        answer_trusted = [*llm_trusted, *plain_trusted]
        agent = Agent(store, embedder=embedder, persist=False)  # the process's shared model, as the judge's
        t = time.perf_counter()
        answers["baseline"] = _answer_phase(store, agent, answer_probes, llm_trusted)
        timings["answers_baseline"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    clean_plan = run_planner(store, embedder=embedder, llm=llm, actor="kaizen bench recovery")
    timings["planner_on_clean_kb"] = round(time.perf_counter() - t, 2)
    after_clean = _metrics(store, embedder, "heldout")

    t = time.perf_counter()
    damage = degrade(store, embedder, fragment_tokens=fragment_tokens, noise_share=noise_share)
    timings["degrade"] = round(time.perf_counter() - t, 2)
    degraded = {"heldout": _metrics(store, embedder, "heldout"), "train": _metrics(store, embedder, "train")}
    if agent is not None:
        answers["degraded"] = _answer_phase(store, agent, answer_probes, llm_trusted)
    alert_id = probe_run_alert(store, embedder)  # the worker's drift detection, not a hand-made alert

    t = time.perf_counter()
    plan = run_planner(store, alert_id=alert_id, embedder=embedder, llm=llm, actor="kaizen bench recovery")
    timings["repair"] = round(time.perf_counter() - t, 2)
    recovered = {"heldout": _metrics(store, embedder, "heldout"), "train": _metrics(store, embedder, "train")}
    if agent is not None:
        answers["recovered"] = _answer_phase(store, agent, answer_probes, llm_trusted)
    timings["total"] = round(time.perf_counter() - started, 2)

    promoted_drops = [max((r.metrics_before[m] - r.metrics_after[m]) for m in GOLD_METRICS)
                      for r in plan.kept if r.metrics_before and r.metrics_after]
    trusted = sorted(trusted_llm_metrics(store))
    with store.session() as s:
        chunks = s.execute(sa.text("SELECT count(*) FROM active_chunks")).scalar_one()
    return {
        "benchmark": "recovery",
        "corpus": str(corpus),
        "questions": str(questions),
        "probes": imported,
        "heldout_probes": baseline["heldout"]["probes"],
        "train_probes": baseline["train"]["probes"],
        "documents": report.added,
        "degradation": damage,
        "heldout": {
            "baseline": {m: baseline["heldout"][m] for m in GOLD_METRICS},
            "degraded": {m: degraded["heldout"][m] for m in GOLD_METRICS},
            "recovered": {m: recovered["heldout"][m] for m in GOLD_METRICS},
        },
        "train": {"baseline": baseline["train"], "degraded": degraded["train"], "recovered": recovered["train"]},
        "recovered_share_recall@5": recovered_share(baseline["heldout"]["recall@5"], degraded["heldout"]["recall@5"],
                                                    recovered["heldout"]["recall@5"]),
        "recovered_share_mrr@10": recovered_share(baseline["heldout"]["mrr@10"], degraded["heldout"]["mrr@10"],
                                                  recovered["heldout"]["mrr@10"]),
        "trusted_llm_metrics": trusted or "none trusted by the judge calibration: not reported, not used",
        "ragas": _ragas_report(calibration, answer_trusted, answers) if answer_probes else
        "not measured (answer_probes=0)",
        "clean_kb": {"status": clean_plan.status, "message": clean_plan.message,
                     "actions_taken": len(clean_plan.results),
                     "actions": [{"kind": r.action["kind"], "decision": r.decision, "why": r.reason}
                                 for r in clean_plan.results],
                     "heldout_before": baseline["heldout"],
                     "heldout_after": after_clean, "findings": [f["summary"] for f in clean_plan.findings]},
        "alert_id": alert_id,
        "repair": {"status": plan.status, "message": plan.message, "rounds": plan.rounds,
                   "actions_taken": len(plan.results), "actions_kept": len(plan.kept),
                   "actions": _result_rows(plan), "findings": [f["summary"] for f in plan.findings]},
        "max_promoted_heldout_drop": round(max(promoted_drops), 4) if promoted_drops else 0.0,
        "tolerance": EvalSettings().repair_tolerance,
        "active_chunks_after": chunks,
        "seconds": timings,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def run(corpus: str, questions: str, limit: int | None = None, home: str | None = None, **kwargs) -> dict:
    from eval.bench.corpus import bench_store

    with bench_store(home, "kaizen-bench-") as (store, embedder, home_dir):
        return run_on_store(store, embedder, corpus, questions, limit, workdir=home_dir, **kwargs)
