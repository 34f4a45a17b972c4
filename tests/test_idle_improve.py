"""The worker's improvement passes (eval/worker/idle.py) against the real database: they wait while someone uses
Kaizen, wait for enough new evidence (and say so in kb_changes), and run the planner once it has arrived."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.repair import tiny_kb  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def _resources(store, embedder, **values):
    from eval.settings import EvalSettings
    from eval.worker.jobs import Resources

    return Resources(store, embedder=embedder, settings=EvalSettings.defaults(guard_answers=0, **values))


def _passes(store) -> list[dict]:
    with store.session() as s:
        return [r.after for r in s.execute(sa.text("SELECT after FROM kb_changes WHERE kind = 'improve_pass' "
                                                   "ORDER BY id")).all()]


def test_an_improvement_pass_waits_for_a_quiet_worker_and_for_new_evidence(tiny_kb, embedder):  # noqa: F811
    from eval.worker.idle import improve_pass_job
    from eval.worker.jobs import close_deferrers, defer

    with tiny_kb.session() as s:
        s.execute(sa.text("INSERT INTO interactions (thread_id, question, answer, model) VALUES "
                          "('t', 'Is tea a drink?', 'yes', 'test')"))
    result = improve_pass_job(_resources(tiny_kb, embedder, improve_min_evidence=1))
    assert not result["ran"] and "asked in the last 10 minute" in result["reason"], result
    with tiny_kb.session() as s:
        s.execute(sa.text("UPDATE interactions SET created_at = now() - interval '1 hour'"))
        iid = s.execute(sa.text("SELECT max(id) FROM interactions")).scalar_one()
    job = defer(tiny_kb, "evaluate_interaction", interaction_id=iid)
    try:
        result = improve_pass_job(_resources(tiny_kb, embedder, improve_min_evidence=1))
        assert not result["ran"] and "waiting to be graded" in result["reason"], result
    finally:
        with tiny_kb.session() as s:
            s.execute(sa.text("DELETE FROM procrastinate_jobs WHERE id = :j"), {"j": job})
        close_deferrers()
    assert _passes(tiny_kb) == []  # a pass skipped for a person leaves no trace to count evidence from

    with tiny_kb.session() as s:  # two train and two held-out probes (the hash split of four ids is uneven)
        s.execute(sa.text("UPDATE probes SET split = CASE WHEN id IN (SELECT id FROM probes ORDER BY id LIMIT 2) "
                          "THEN 'train' ELSE 'heldout' END"))
    train = 2
    result = improve_pass_job(_resources(tiny_kb, embedder, improve_min_evidence=train + 1))
    assert not result["ran"] and f"waiting for {train + 1}" in result["reason"], result
    # the evidence is still counted from the start (a pass that did not run is not a pass that used it)
    result = improve_pass_job(_resources(tiny_kb, embedder, improve_min_evidence=train))
    assert result["ran"] and result["status"] in ("done", "nothing_to_do"), result
    # ... and the next pass counts from that one: nothing new, so it waits
    result = improve_pass_job(_resources(tiny_kb, embedder, improve_min_evidence=1))
    assert not result["ran"] and result["evidence"] == {"probes": 0, "feedback": 0, "graded": 0}, result
    assert [p["ran"] for p in _passes(tiny_kb)] == [False, True, False]
