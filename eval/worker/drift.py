"""Drop detection: trusted metrics over a rolling window against the active KB version's baseline.

- Gold-id probe metrics (recall@5, MRR@10) are deterministic and always trusted. The baseline is the probe run on
  the active version flagged `baseline` (latest such), else that version's first finished probe run. The window is
  the latest `KAIZEN_DRIFT_WINDOW` probe scores of later runs, each compared with the same probe's baseline score
  (paired, so a changed probe set does not look like a drop).
- LLM-judged metrics on interactions count only where the judge's calibration says they are trusted
  (`eval.judging.calibration.trusted_metrics`; no calibration = untrusted). Their baseline is the version's earliest
  scores, the window its latest ones.
- A drop is baseline - observed > `KAIZEN_DRIFT_TOLERANCE` with at least `KAIZEN_DRIFT_MIN_SAMPLES` in the window.
  A check that finds drops writes one `quality_alerts` row (named after the first dropped metric, all drops in
  its detail); a metric already alerted on this KB version (alert not `repaired`) is not alerted again, so repeated
  checks of a lasting drop write nothing more. The caller queues the repair planner for the new alert.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from eval.settings import EvalSettings
from store import locks

log = logging.getLogger(__name__)

PROBE_METRICS = ("recall@5", "mrr@10")


@dataclass
class DriftCheck:
    metric: str
    subject: str  # probe | interaction
    kb_version: int
    baseline: float | None
    observed: float | None
    samples: int
    judge_model: str | None = None
    baseline_run: int | None = None
    status: str = "ok"  # ok | drop | too_few | no_baseline

    def as_dict(self) -> dict:
        return asdict(self)


def baseline_run(session, version: int) -> int | None:
    """The probe run a version is judged against: its own explicit baseline (`kaizen eval run --baseline`); else
    the baseline of the version it was built from, so that a re-index or a repair that makes things worse is caught
    against what it replaced; else (a first version) its own first probe run."""
    chain = session.execute(sa.text(
        """
        WITH RECURSIVE chain AS (
            SELECT id, parent_id, 0 AS depth FROM kb_versions WHERE id = :v
            UNION ALL
            SELECT k.id, k.parent_id, c.depth + 1 FROM kb_versions k JOIN chain c ON k.id = c.parent_id
            WHERE c.depth < 50
        )
        SELECT id FROM chain ORDER BY depth"""), {"v": version}).scalars().all() or [version]
    for candidate in chain:  # baseline(v) = flagged(v) or baseline(parent) or first(v)
        flagged = session.execute(sa.text(
            "SELECT id FROM eval_runs WHERE kind = 'probe' AND status = 'done' AND kb_version = :v AND items > 0 "
            "AND (summary->>'baseline')::boolean ORDER BY id DESC LIMIT 1"), {"v": candidate}).scalar()
        if flagged is not None:
            return flagged
    for candidate in reversed(chain):
        first = _first_run(session, candidate)
        if first is not None:
            return first
    return None


def _first_run(session, version: int) -> int | None:
    return session.execute(sa.text(
        "SELECT id FROM eval_runs WHERE kind = 'probe' AND status = 'done' AND kb_version = :v AND items > 0 "
        "ORDER BY id LIMIT 1"), {"v": version}).scalar()


def _probe_checks(session, version: int, settings: EvalSettings) -> list[DriftCheck]:
    base = baseline_run(session, version)
    if base is None:
        return [DriftCheck(m, "probe", version, None, None, 0, status="no_baseline") for m in PROBE_METRICS]
    checks = []
    for metric in PROBE_METRICS:
        n, observed, baseline = session.execute(sa.text(
            """
            WITH base AS (
                SELECT probe_id, value FROM eval_scores WHERE run_id = :base AND metric = :m AND value IS NOT NULL
            ), win AS (
                SELECT s.probe_id, s.value FROM eval_scores s JOIN eval_runs r ON r.id = s.run_id
                WHERE r.kind = 'probe' AND r.status = 'done' AND r.kb_version = :v AND r.id > :base
                  AND s.metric = :m AND s.value IS NOT NULL AND s.probe_id IN (SELECT probe_id FROM base)
                ORDER BY s.id DESC LIMIT :window
            )
            SELECT count(*), avg(win.value), avg(base.value) FROM win JOIN base USING (probe_id)
            """), {"base": base, "m": metric, "v": version, "window": settings.drift_window}).one()
        checks.append(_judge(DriftCheck(metric, "probe", version, baseline, observed, n, baseline_run=base),
                             settings))
    return checks


def _trusted(store, judge_model: str | None) -> dict[str, bool]:
    try:
        from eval.judging.calibration import trusted_metrics
    except ImportError:
        return {}
    try:
        return trusted_metrics(store, judge_model) or {}
    except Exception as exc:  # no calibration yet reads as "nothing trusted", never as a crash
        log.warning("judge calibration unavailable (%s): LLM metrics are untrusted", exc)
        return {}


def _interaction_checks(store, session, version: int, settings: EvalSettings) -> list[DriftCheck]:
    pairs = session.execute(sa.text(
        "SELECT DISTINCT metric, judge_model FROM eval_scores WHERE interaction_id IS NOT NULL AND kb_version = :v "
        "AND value IS NOT NULL ORDER BY 1, 2"), {"v": version}).all()
    trusted_by_judge: dict = {}
    checks = []
    for metric, judge in pairs:
        if judge not in trusted_by_judge:
            trusted_by_judge[judge] = _trusted(store, judge)
        if not trusted_by_judge[judge].get(metric):
            continue
        values = session.execute(sa.text(
            "SELECT value FROM eval_scores WHERE interaction_id IS NOT NULL AND kb_version = :v AND metric = :m "
            "AND judge_model IS NOT DISTINCT FROM :j AND value IS NOT NULL ORDER BY id"),
            {"v": version, "m": metric, "j": judge}).scalars().all()
        half = min(settings.drift_window, len(values) // 2)
        early, late = values[:half], values[max(half, len(values) - settings.drift_window):]
        check = DriftCheck(metric, "interaction", version, sum(early) / len(early) if early else None,
                           sum(late) / len(late) if late else None, len(late), judge_model=judge)
        checks.append(_judge(check, settings) if early else _mark(check, "too_few"))
    return checks


def _mark(check: DriftCheck, status: str) -> DriftCheck:
    check.status = status
    return check


def _judge(check: DriftCheck, settings: EvalSettings) -> DriftCheck:
    if check.samples < settings.drift_min_samples or check.baseline is None or check.observed is None:
        return _mark(check, "too_few")
    return _mark(check, "drop" if check.baseline - check.observed > settings.drift_tolerance else "ok")


def evaluate_drift(store, settings: EvalSettings | None = None) -> list[DriftCheck]:
    """Every trusted metric of the active KB version against its baseline (reads only)."""
    from store.kb_versions import active_version

    settings = settings or EvalSettings()
    with store.session() as s:
        version = active_version(s)
        if version is None:
            return []
        return _probe_checks(s, version.id, settings) + _interaction_checks(store, s, version.id, settings)


def check_drift(store, settings: EvalSettings | None = None) -> list[int]:
    """Evaluate drift and write at most one alert for the drops found (the first dropped metric names it, all of
    them are in its detail); metrics already alerted on this KB version are not alerted again. Returns the new
    alert ids (the caller queues the repair planner)."""
    settings = settings or EvalSettings()
    drops = [c for c in evaluate_drift(store, settings) if c.status == "drop"]
    if not drops:
        return []
    with store.session() as s:
        locks.hold(s, locks.DRIFT_ALERTS)  # two workers, one alert
        alerted = set(s.execute(sa.text(
            "SELECT metric FROM quality_alerts WHERE kb_version = :v AND status <> 'repaired' "
            "UNION SELECT jsonb_array_elements(detail->'drops')->>'metric' FROM quality_alerts "
            "WHERE kb_version = :v AND status <> 'repaired'"), {"v": drops[0].kb_version}).scalars())
        new = [c for c in drops if c.metric not in alerted]
        if not new:
            return []
        first = new[0]
        alert_id = s.execute(sa.text(
            "INSERT INTO quality_alerts (kb_version, metric, baseline, observed, window_size, tolerance, detail) "
            "VALUES (:v, :m, :b, :o, :n, :t, CAST(:d AS jsonb)) RETURNING id"),
            {"v": first.kb_version, "m": first.metric, "b": first.baseline, "o": first.observed,
             "n": first.samples, "t": settings.drift_tolerance,
             "d": json.dumps({"subject": first.subject, "judge_model": first.judge_model,
                              "baseline_run": first.baseline_run, "min_samples": settings.drift_min_samples,
                              "window": settings.drift_window, "drops": [c.as_dict() for c in new]})}).scalar_one()
    log.warning("quality drop on KB version %s: %s (alert %s)", first.kb_version,
                ", ".join(f"{c.metric} {c.baseline:.3f} -> {c.observed:.3f}" for c in new), alert_id)
    return [alert_id]
