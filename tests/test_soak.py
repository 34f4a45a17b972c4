"""`kaizen bench soak` in reduced form: a slice of ClapNQ, the small model, 1.5 minutes of a real `kaizen chat`
client and two real `kaizen worker` processes through a forced quality drop (the planner repairs it), a worker
killed with SIGKILL, the database stopped and started under everyone, and the client stopped with SIGTERM.
Nothing may be lost, doubled or inconsistent, and every fault must be survived."""

from __future__ import annotations

import json

import pytest

from tests.support.common import SHARED_DATA
from tests.support.repair import clapnq_slice

CLAPNQ = SHARED_DATA / "clapnq"


@pytest.mark.slow
@pytest.mark.skipif(not CLAPNQ.exists(), reason="../shared/data/clapnq is not there")
def test_reduced_soak_loses_doubles_and_breaks_nothing(kaizen_env, tmp_path):
    from eval.bench.soak import SCHEDULE, run

    corpus, questions = clapnq_slice(tmp_path, questions=40, distractors=30)
    # A small corpus is damaged harder (as in tests/test_recovery.py) so the drift check sees the drop; the
    # workers judge with the small model (conftest: KAIZEN_CHAT_MODEL=smollm2) on one thread.
    result = run(str(corpus), str(questions), minutes=1.5, home=str(tmp_path / "home"), pause_seconds=2.0,
                 down_seconds=3.0, drain_seconds=180.0, probe_every_minutes=0, stalled_seconds=6,
                 fragment_tokens=12, noise_share=0.4, heldout_share=0.5, search_checks=10,
                 extra_env={"KAIZEN_LLM_THREADS": "1", "KAIZEN_DRIFT_MIN_SAMPLES": "5"})
    detail = json.dumps({k: result[k] for k in ("summary", "faults", "interactions", "jobs", "kb", "repair")},
                        default=str)
    assert [f["fault"] for f in result["faults"]] == [kind for _, kind in SCHEDULE], detail
    assert result["interactions"]["recorded"] >= 2, detail  # both clients answered (one each at least)
    assert result["interactions"]["graded"] >= 1, detail
    assert result["jobs"]["lost"] == 0, detail
    assert result["jobs"]["run_twice"] == 0, detail
    assert result["interactions"]["duplicate_grades"] == 0, detail
    assert result["interactions"]["missing_grades"] == 0, detail
    assert result["interactions"]["acknowledged_not_recorded"] == 0, detail
    assert result["kb"]["inconsistencies"] == 0, detail
    assert result["kb"]["searches"] == 10, detail
    for fault in result["faults"]:
        assert fault["survived"], (fault, detail)
    assert result["ok"], detail


@pytest.mark.slow
def test_the_checks_count_a_double_grade_a_lost_job_and_a_stray_version(clean_store, embedder, tmp_path):
    """The checks can fail: a doubled grade, a failed job and a candidate version left behind are all counted."""
    import sqlalchemy as sa

    from eval.bench.soak import check_interactions, check_jobs, check_kb
    from store.ingest import ingest
    from tests.support.worker import CORPUS, reset_queue, write_jsonl

    reset_queue(clean_store)
    assert ingest(clean_store, embedder, [str(write_jsonl(tmp_path / "corpus.jsonl", CORPUS))]).ok
    with clean_store.session() as s:
        version = s.execute(sa.text("SELECT id FROM kb_versions WHERE status = 'active'")).scalar_one()
        iid = s.execute(sa.text("INSERT INTO interactions (thread_id, question, answer, kb_version, model) "
                                "VALUES ('t', 'How high is Mount Everest?', 'x', :v, 'test') RETURNING id"),
                        {"v": version}).scalar_one()
        for run in (None, None):  # the unique index (migration 0009) refuses the second one
            s.execute(sa.text("INSERT INTO eval_scores (interaction_id, run_id, kb_version, metric, value) "
                              "VALUES (:i, :r, :v, 'answer_relevancy', 1.0) ON CONFLICT DO NOTHING"),
                      {"i": iid, "r": run, "v": version})
        s.execute(sa.text("INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
                          "VALUES ('eval', 'evaluate_interaction', CAST(:a AS jsonb), 'failed')"),
                  {"a": json.dumps({"interaction_id": iid})})
        s.execute(sa.text("INSERT INTO kb_versions (reason, status, embedding_model, embedding_dim, "
                          "text_search_config, chunk_tokens, chunk_overlap) SELECT 'stray', 'candidate', "
                          "embedding_model, embedding_dim, text_search_config, chunk_tokens, chunk_overlap "
                          "FROM kb_versions WHERE id = :v"), {"v": version})
    asked = [{"question": "How high is Mount Everest?", "done_at": 1.0, "errors": [], "interrupted": False},
             {"question": "Who created Python?", "done_at": 2.0, "errors": [], "interrupted": False}]
    interactions = check_interactions(clean_store, ["answer_relevancy"], asked)
    assert interactions["duplicate_grades"] == 0 and interactions["graded"] == 1  # one grade, not two
    assert interactions["acknowledged_not_recorded"] == 1  # the Python answer was never recorded
    jobs = check_jobs(clean_store)
    assert jobs["lost"] == 1 and jobs["lost_jobs"][0]["status"] == "failed"
    kb = check_kb(clean_store, embedder, ["How high is Mount Everest?"])
    assert kb["unfinished_versions"] == 1 and kb["inconsistencies"] == 1
    assert kb["hits_outside_the_active_version"] == 0
    with clean_store.session() as s:
        s.execute(sa.text("DELETE FROM kb_versions WHERE status = 'candidate'"))
        s.execute(sa.text("UPDATE eval_scores SET metric = 'faithfulness' WHERE interaction_id = :i"), {"i": iid})
    assert check_interactions(clean_store, ["answer_relevancy"], asked)["missing_grades"] == 1  # its job failed
    with clean_store.session() as s:
        s.execute(sa.text("INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
                          "VALUES ('eval', 'evaluate_interaction', CAST(:a AS jsonb), 'todo')"),
                  {"a": json.dumps({"interaction_id": iid})})
    again = check_interactions(clean_store, ["answer_relevancy"], asked)
    assert again["missing_grades"] == 0 and again["pending_grades"] == 1  # a queued job will grade it
    reset_queue(clean_store)


def test_a_killed_worker_s_job_survives_only_if_it_ran_or_its_twin_did(clean_store):
    """The SIGKILL fault is survived when the job the worker held succeeded, is queued again, or was given up for
    its queued twin (superseded); a job that ended aborted with nothing to take it over is not."""
    from eval.bench.soak import _survival

    class Replacement:
        def jobs(self):
            return [7], {7: "Success"}

    fault = {"fault": "worker_kill", "at": 0.0, "exit_code": -9, "job_in_flight": 5, "replacement": "w"}
    for status, survived in (("succeeded", True), ("todo", True), ("superseded", True), ("aborted", False),
                             ("failed", False)):
        ok, evidence = _survival(dict(fault), clean_store, {5: status}, {"w": Replacement()}, {})
        assert ok is survived, (status, evidence)
        assert evidence["job_in_flight_final_status"] == status
    ok, _ = _survival(dict(fault), clean_store, {5: "succeeded"}, {"w": None}, {})
    assert not ok  # no replacement worker ran anything
