"""The background worker on the real database: jobs end to end, two worker processes, a worker killed mid-job,
connections cut under a running worker, and the REPL's enqueue hook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types

import pytest
import sqlalchemy as sa

from tests.support.common import REPO
from tests.support.worker import add_interactions, build_kb, evaluate, job_states, wait_for

EVALUATOR = "tests.support.worker:evaluate"


@pytest.fixture
def kb(clean_store, embedder, tmp_path):
    build_kb(clean_store, embedder, tmp_path)
    yield clean_store
    from eval.worker.jobs import close_deferrers

    close_deferrers()


def settings(stalled: int = 30, reconnect: int = 0):
    from eval.settings import EvalSettings

    return EvalSettings(worker_llm_threads=1, worker_nice=0, worker_reconnect_seconds=reconnect,
                        probe_every_minutes=0, improve_every_minutes=0, worker_stalled_seconds=stalled,
                        interaction_evaluator=EVALUATOR)


def work_once(store, embedder, evaluator=evaluate, stalled: int = 30) -> None:
    """An in-process worker that stops when the queue is empty."""
    from eval.worker.jobs import Resources
    from eval.worker.runner import run_worker

    conf = settings(stalled)
    run_worker(store, once=True, settings=conf, install_signal_handlers=False,
               resources=Resources(store, embedder=embedder, evaluator=evaluator, settings=conf))


def spawn_worker(tmp_path, name: str, **env) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "-v", "worker"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "KAIZEN_INTERACTION_EVALUATOR": EVALUATOR, "KAIZEN_PROBE_EVERY_MINUTES": "0",
             "KAIZEN_IMPROVE_EVERY_MINUTES": "0", "PYTHONPATH": str(REPO), **env})


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=60)


def count(store, sql: str, **params) -> int:
    with store.session() as s:
        return s.execute(sa.text(sql), params).scalar_one()


def scores_by_interaction(store) -> dict[int, int]:
    with store.session() as s:
        return dict(s.execute(sa.text(
            "SELECT interaction_id, count(*) FROM eval_scores WHERE interaction_id IS NOT NULL GROUP BY 1")).all())


@pytest.mark.slow
def test_a_queued_probe_run_is_scored_into_sql(kb, embedder):
    from eval.worker.jobs import defer

    job = defer(kb, "probe_run")
    work_once(kb, embedder)
    assert (job, "probe_run", "succeeded", 1) in job_states(kb)  # attempts count finished runs
    with kb.session() as s:
        run = s.execute(sa.text("SELECT id, status, items, summary FROM eval_runs")).one()
        metrics = dict(s.execute(sa.text("SELECT metric, count(*) FROM eval_scores WHERE run_id = :r GROUP BY 1"),
                                 {"r": run.id}).all())
    assert run.status == "done" and run.items == 12 and run.summary["job_id"] == job
    assert run.summary["recall@5"] == 1.0 and run.summary["mrr@10"] > 0.9
    assert metrics == {"recall@1": 12, "recall@5": 12, "recall@10": 12, "mrr@10": 12}


def test_enqueued_interactions_are_evaluated_once(kb, embedder):
    from eval.worker.jobs import enqueue_interaction

    first, second = add_interactions(kb, 2)
    jobs = [enqueue_interaction(kb, first), enqueue_interaction(kb, second), enqueue_interaction(kb, first)]
    assert all(jobs) and len(set(jobs)) == 3
    assert enqueue_interaction(kb, None) is None
    work_once(kb, embedder)
    # The third job found the interaction already scored: no second score, and it still succeeded.
    assert scores_by_interaction(kb) == {first: 1, second: 1}
    assert [s for _, t, s, _ in job_states(kb) if t == "evaluate_interaction"] == ["succeeded"] * 3


def test_answers_whose_grading_was_never_queued_are_queued_once(kb, embedder):
    """The soak found it: an answer recorded just before the database went away has no grading job (the REPL's
    enqueue is best-effort). The worker's minutely sweep queues it; answers queued, graded, too recent to be sure
    of, or whose job failed are left alone."""
    from eval.worker.jobs import enqueue_interaction, queue_ungraded

    orphan, queued, graded, recent, failed = add_interactions(kb, 5)
    with kb.session() as s:
        s.execute(sa.text("UPDATE interactions SET created_at = now() - interval '5 minutes' WHERE id <> :r"),
                  {"r": recent})
    assert enqueue_interaction(kb, queued) and enqueue_interaction(kb, graded) and enqueue_interaction(kb, failed)
    with kb.session() as s:
        s.execute(sa.text("UPDATE procrastinate_jobs SET status = 'failed' "
                          "WHERE args->>'interaction_id' = :i"), {"i": str(failed)})
    assert queue_ungraded(kb) == [orphan]
    assert queue_ungraded(kb) == []  # queued now: not twice
    work_once(kb, embedder)  # (its own minutely sweep finds nothing more to queue)
    assert scores_by_interaction(kb) == {orphan: 1, queued: 1, graded: 1}
    assert queue_ungraded(kb) == []
    assert [t for _, t, _, _ in job_states(kb)].count("evaluate_interaction") == 4


@pytest.mark.slow
def test_enqueue_never_blocks_or_raises_when_the_queue_is_unreachable(kb):
    from eval.worker.jobs import enqueue_interaction

    nowhere = types.SimpleNamespace(url="postgresql+psycopg://kaizen@127.0.0.1:9/none")
    started = time.perf_counter()
    assert enqueue_interaction(nowhere, 1) is None
    assert time.perf_counter() - started < 10


def test_a_missing_evaluator_fails_the_job_visibly(kb, embedder):
    from eval.worker.jobs import enqueue_interaction

    def broken(*args, **kwargs):
        raise ImportError("eval.judging.interactions is not installed")

    (interaction,) = add_interactions(kb, 1)
    job = enqueue_interaction(kb, interaction)
    work_once(kb, embedder, evaluator=broken)
    assert (job, "evaluate_interaction", "failed", 1) in job_states(kb)
    assert scores_by_interaction(kb) == {}


@pytest.mark.slow
def test_two_worker_processes_split_the_queue_without_duplicates(kb, tmp_path):
    from eval.worker.jobs import enqueue_interaction

    workers = [spawn_worker(tmp_path, f"w{i}", KAIZEN_TEST_EVAL_SLEEP="0.4") for i in range(2)]
    try:
        wait_for(lambda: count(kb, "SELECT count(*) FROM procrastinate_workers") == 2, 90, "two workers")
        interactions = add_interactions(kb, 10)
        for i in interactions:
            assert enqueue_interaction(kb, i)
        wait_for(lambda: count(kb, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = "
                                   "'evaluate_interaction' AND status = 'succeeded'") == 10, 90, "ten jobs done")
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0]
    assert scores_by_interaction(kb) == {i: 1 for i in interactions}
    with kb.session() as s:
        pids = s.execute(sa.text("SELECT detail->>'pid', count(*) FROM eval_scores GROUP BY 1")).all()
        started = s.execute(sa.text(
            "SELECT count(*) FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id "
            "WHERE j.task_name = 'evaluate_interaction' AND e.type = 'started'")).scalar_one()
    assert {int(p) for p, _ in pids} == {w.pid for w in workers}, "both workers took a share"
    assert started == 10, "no job was started twice"


@pytest.mark.slow
def test_a_killed_worker_s_job_is_retried_not_lost_or_doubled(kb, embedder, tmp_path):
    from eval.worker.jobs import enqueue_interaction

    (interaction,) = add_interactions(kb, 1)
    job = enqueue_interaction(kb, interaction)
    worker = spawn_worker(tmp_path, "doomed", KAIZEN_TEST_EVAL_SLEEP="120", KAIZEN_WORKER_STALLED_SECONDS="3")
    try:
        wait_for(lambda: (job, "evaluate_interaction", "doing", 0) in job_states(kb), 90, "the job to start")
        time.sleep(0.5)
    finally:
        assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
    assert (job, "evaluate_interaction", "doing", 0) in job_states(kb)  # held by a dead worker
    time.sleep(4)  # longer than its heartbeat timeout
    work_once(kb, embedder, stalled=3)  # a new worker queues the stalled job again on start, then runs it
    assert (job, "evaluate_interaction", "succeeded", 2) in job_states(kb)  # the killed attempt and the retry
    assert scores_by_interaction(kb) == {interaction: 1}
    with kb.session() as s:
        events = s.execute(sa.text("SELECT type::text FROM procrastinate_events "
                                   "WHERE job_id = :j AND type <> 'scheduled' "
                                   "ORDER BY id"),
                           {"j": job}).scalars().all()
    assert events == ["deferred", "started", "deferred_for_retry", "started", "succeeded"]


@pytest.mark.slow
def test_a_dead_worker_s_probe_run_gives_way_to_its_queued_twin(kb, embedder):
    """The soak found it: a worker killed during a probe run leaves the job `doing` with the run lock, while the
    periodic schedule queues the next probe run under the same queueing lock. Queuing the stalled one again would
    break that lock, so it ends `aborted`, frees the run lock, and the twin runs; other stalled jobs still go back."""
    from eval.worker.jobs import defer, enqueue_interaction

    stalled_probe = defer(kb, "probe_run")
    (interaction,) = add_interactions(kb, 1)
    stalled_eval = enqueue_interaction(kb, interaction)
    with kb.session() as s:  # both taken by a worker that is gone (no heartbeat row): procrastinate's "stalled"
        s.execute(sa.text("UPDATE procrastinate_jobs SET status = 'doing', worker_id = NULL WHERE id IN (:a, :b)"),
                  {"a": stalled_probe, "b": stalled_eval})
    twin = defer(kb, "probe_run")
    assert twin != stalled_probe
    work_once(kb, embedder, stalled=3)  # a new worker handles stalled jobs on start, then empties the queue
    states = {job: (status, attempts) for job, _, status, attempts in job_states(kb)}
    assert states[stalled_probe] == ("aborted", 1)
    assert states[twin] == ("succeeded", 1)
    assert states[stalled_eval] == ("succeeded", 2)  # the dead attempt and the retry
    assert scores_by_interaction(kb) == {interaction: 1}
    with kb.session() as s:
        runs = s.execute(sa.text("SELECT summary->>'job_id' FROM eval_runs WHERE status = 'done'")).scalars().all()
    assert runs == [str(twin)]


@pytest.mark.slow
def test_a_worker_survives_its_connections_being_cut(kb, tmp_path):
    from eval.worker.jobs import enqueue_interaction

    worker = spawn_worker(tmp_path, "cut", KAIZEN_WORKER_STALLED_SECONDS="3")
    try:
        wait_for(lambda: count(kb, "SELECT count(*) FROM procrastinate_workers") == 1, 90, "the worker")
        cut = count(kb, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'kaizen-worker') t")
        assert cut >= 1
        (interaction,) = add_interactions(kb, 1)
        assert enqueue_interaction(kb, interaction)
        try:
            wait_for(lambda: scores_by_interaction(kb) == {interaction: 1}, 60, "the job after the cut")
        except AssertionError:
            raise AssertionError(f"{job_states(kb)}\n{(tmp_path / 'cut.log').read_text()[-6000:]}") from None
        assert worker.poll() is None
    finally:
        code = stop(worker)
    assert code == 0, (tmp_path / "cut.log").read_text()


@pytest.mark.slow
def test_a_worker_without_its_database_stops_with_a_message():
    from eval.worker.jobs import Resources
    from eval.worker.runner import WorkerStopped, run_worker

    conf = settings(reconnect=0)
    nowhere = types.SimpleNamespace(url="postgresql+psycopg://kaizen@127.0.0.1:9/none")
    with pytest.raises(WorkerStopped, match="lost the database .* start `kaizen worker` again"):
        run_worker(nowhere, once=True, settings=conf, install_signal_handlers=False,
                   resources=Resources(nowhere, embedder=object(), evaluator=evaluate, settings=conf))


def test_the_worker_process_is_polite_on_two_cores():
    code = ("from eval.settings import EvalSettings; from eval.worker.runner import be_polite; import os; "
            "be_polite(EvalSettings()); "
            "print(os.nice(0), os.environ['KAIZEN_LLM_THREADS'], os.environ['KAIZEN_EMBED_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO), "KAIZEN_LLM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    nice, llm_threads, embed_threads = out.stdout.split()
    assert int(nice) >= 10 and llm_threads == "1" and embed_threads == "1"


def test_probe_schedule_is_a_cron_line():
    from eval.worker.jobs import probe_cron

    assert probe_cron(0) is None
    assert probe_cron(15) == "*/15 * * * *"
    assert probe_cron(120) == "0 */2 * * *"
    assert probe_cron(2880) == "0 0 */2 * *"
