"""Improvement passes in the background: when the worker is idle and enough new evidence has arrived, the planner
runs as `kaizen improve` would (learning from traffic, tuning), under the held-out guard like every repair.

The periodic `improve_pass` job (every `KAIZEN_IMPROVE_EVERY_MINUTES`, 0 = off) runs the planner only if
- the worker is idle: no grading job waiting and no question asked for `KAIZEN_IMPROVE_IDLE_MINUTES` (a person
  waiting comes first, and the planner's builds would compete with the REPL for the two cores);
- at least `KAIZEN_IMPROVE_MIN_EVIDENCE` pieces of new evidence arrived since the last pass: train probes
  imported or generated, feedback, recorded answers graded.
Each pass, run or skipped for want of evidence, is an `improve_pass` row in kb_changes (the last one that ran is
where the next pass counts new evidence from); a pass skipped because someone is using Kaizen leaves no row.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

log = logging.getLogger(__name__)

ACTOR = "kaizen worker (improvement pass)"


def last_pass(session):
    """When the last pass that ran started (passes that waited for evidence do not count)."""
    return session.execute(sa.text("SELECT max(created_at) FROM kb_changes WHERE kind = 'improve_pass' "
                                   "AND (after ->> 'ran')::boolean")).scalar()


def new_evidence(session, since) -> dict:
    """What arrived after `since` (None: ever) that an improvement pass could learn or tune from."""
    row = session.execute(sa.text(
        """
        SELECT (SELECT count(*) FROM probes WHERE split = 'train' AND status = 'active'
                AND (CAST(:since AS timestamptz) IS NULL OR created_at > :since)) AS probes,
               (SELECT count(*) FROM feedback WHERE CAST(:since AS timestamptz) IS NULL OR created_at > :since)
                   AS feedback,
               (SELECT count(DISTINCT interaction_id) FROM eval_scores WHERE interaction_id IS NOT NULL
                AND (CAST(:since AS timestamptz) IS NULL OR created_at > :since)) AS graded
        """), {"since": since}).mappings().one()
    return dict(row)


def busy(session, idle_minutes: int) -> str | None:
    """Why the worker is not idle, or None."""
    waiting = session.execute(sa.text(
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing') "
        "AND task_name = 'evaluate_interaction'")).scalar_one()
    if waiting:
        return f"{waiting} answer(s) waiting to be graded"
    recent = session.execute(sa.text(
        "SELECT count(*) FROM interactions WHERE created_at > now() - make_interval(mins => :m)"),
        {"m": idle_minutes}).scalar_one()
    if recent:
        return f"{recent} question(s) asked in the last {idle_minutes} minute(s)"
    return None


def improve_pass_job(resources) -> dict:
    from eval.repair.planner import run_planner
    from store.kb_versions import record_change

    settings = resources.settings
    store = resources.store
    with store.session() as s:
        why_busy = busy(s, settings.improve_idle_minutes)
        if why_busy:
            return {"ran": False, "reason": f"not idle: {why_busy}"}
        evidence = new_evidence(s, last_pass(s))
    total = sum(evidence.values())
    if total < settings.improve_min_evidence:
        reason = f"{total} piece(s) of new evidence since the last pass, waiting for {settings.improve_min_evidence}"
        with store.session() as s:
            record_change(s, kind="improve_pass", target="kb", after={"ran": False, "reason": reason,
                          "evidence": evidence}, decision="no_change", actor=ACTOR)
        return {"ran": False, "reason": reason, "evidence": evidence}
    with store.session() as s:  # the pass is counted from when it started: evidence arriving meanwhile is next
        record_change(s, kind="improve_pass", target="kb", after={"ran": True, "evidence": evidence},
                      decision="no_change", actor=ACTOR)
    plan = run_planner(store, embedder=resources.embedder, settings=settings, actor=ACTOR,
                       budget_seconds=settings.improve_budget_seconds)
    log.info("improvement pass: %s", plan.message)
    return {"ran": True, "evidence": evidence, "status": plan.status, "message": plan.message,
            "kept": len(plan.kept), "tried": len(plan.results)}
