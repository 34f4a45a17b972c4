"""A probe run: the gold-id retrieval metrics of the active probes on one KB version, stored as one `eval_runs` row
(kind `probe`, its summary per metric) and one `eval_scores` row per probe and metric.

The run row is written first (status `running`, so a long run is visible); the scores and the final summary are
written in the one transaction that marks it `done`, so a run killed midway leaves no half set of scores. A queued
run retried after its worker died marks the dead attempt's row `failed` first (same job id), so it is never
counted twice.
"""

from __future__ import annotations

import json
import math
import time

import sqlalchemy as sa

from eval.run_rows import fail_run, finish_run, start_run

from .retrieval import METRICS, score_probes
from .sets import load_probes

KIND = "probe"


def _clean(value):
    """JSON for jsonb: NaN/inf (no probes) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _resolve_version(store, version_id: int | None) -> int:
    from store.kb_versions import require_active

    if version_id is not None:
        return version_id
    with store.session() as s:
        return require_active(s).id


def _abandon_earlier_attempts(store, job_id: int) -> None:
    with store.session() as s:
        s.execute(sa.text(
            "UPDATE eval_runs SET status = 'failed', finished_at = now(), "
            "error = 'the worker stopped during this run; the job was retried' "
            "WHERE status = 'running' AND (summary->>'job_id')::bigint = :job"), {"job": job_id})


def run_probes(store, embedder, *, version_id: int | None = None, probe_set: str | None = None,
               split: str | None = None, baseline: bool = False, job_id: int | None = None,
               kind: str = KIND) -> dict:
    """Score the active probes (optionally one set / split) on `version_id` (default: the active version).
    Returns {"run_id", "kb_version", "items", "summary"}."""
    version = _resolve_version(store, version_id)
    if job_id is not None:
        _abandon_earlier_attempts(store, job_id)
    started_summary = {"job_id": job_id, "probe_set": probe_set, "split": split, "baseline": baseline}
    run_id = start_run(store, kind, version, started_summary)
    started = time.perf_counter()
    try:
        probes = load_probes(store, split=split, probe_set=probe_set)
        per_probe, means = score_probes(store, embedder, probes, version_id=version)
    except Exception as exc:
        fail_run(store, run_id, exc)
        raise
    seconds = time.perf_counter() - started
    summary = {**started_summary, **{k: _clean(v) for k, v in means.items()}, "seconds": round(seconds, 3)}
    if not per_probe:
        summary["note"] = "no answerable probes with gold documents: `kaizen eval import` or `kaizen eval probes`"
    rows = [{"run": run_id, "probe": p.probe_id, "v": version, "metric": metric, "value": p.scores[metric],
             "detail": json.dumps({"ranked_document_ids": p.ranked_document_ids[:10]})}
            for p in per_probe for metric in METRICS]
    with store.session() as s:
        if rows:
            s.execute(sa.text(
                "INSERT INTO eval_scores (run_id, probe_id, kb_version, metric, value, detail) "
                "VALUES (:run, :probe, :v, :metric, :value, CAST(:detail AS jsonb))"), rows)
        finish_run(s, run_id, len(per_probe), summary)
    return {"run_id": run_id, "kb_version": version, "items": len(per_probe), "summary": summary}
