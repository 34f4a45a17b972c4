"""SIGTERM and SIGINT stop `kaizen` processes cleanly: real processes, real signals. A benchmark's temporary home
and its server are gone, a worker finishes (first signal) or hands back (second signal) its job, and the REPL's
thread is kept."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from tests.support.common import REPO
from tests.support.worker import CORPUS, QUESTIONS, add_interactions, job_states, reset_queue, wait_for, write_jsonl

pytestmark = pytest.mark.slow
EVALUATOR = "tests.support.worker:evaluate"


def _default_signals() -> None:
    # A suite started in the background by a shell without job control (`make test &` in a script) inherits SIGINT
    # ignored, and a process that starts with SIGINT ignored keeps ignoring it (nohup semantics, which Kaizen
    # respects): the processes under test get the disposition a terminal gives them.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kaizen(*args: str, log: Path, stdin=None, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=REPO, stdin=stdin,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, preexec_fn=_default_signals)


def server_url(pgdata: Path) -> str | None:
    """The `kaizen` database of the embedded server in `pgdata`, while it runs."""
    from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, OSError, ValueError):  # postmaster.pid half written while the server starts
        return None
    return None if info is None or not info.is_running() else info.get_uri(database="kaizen")


def query(pgdata: Path, sql: str, *params):
    import psycopg

    url = server_url(pgdata)
    if url is None:
        return None
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()
    except psycopg.Error:
        return None


def postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not psutil.pid_exists(pid)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_benchmark_leaves_no_server_and_no_temporary_home(tmp_path, sig, code):
    from pgserver.postgres_server import PostgresServer

    # Enough work that the benchmark is still busy when the signal comes: with 2 pairs it ingested 40 documents in
    # 0.6 s and failed on the missing judge model before the test's signal arrived. It ingests the gold documents
    # of the questions its pairs need, so every document gets a question and 300 pairs are asked for.
    many = [{**d, "id": f"{d['id']}-{n}"} for n in range(60) for d in CORPUS]
    asked = [{**q, "id": f"{q['id']}-{n}", "gold_passage_ids": [f"{g}-{n}" for g in q["gold_passage_ids"]]}
             for n in range(60) for q in QUESTIONS]
    corpus, questions = write_jsonl(tmp_path / "c.jsonl", many), write_jsonl(tmp_path / "q.jsonl", asked)
    # the benchmark's temporary home goes here (a short path: the server's socket lives in it), with pgserver's
    # lock where every other process has it
    temp = Path(tempfile.mkdtemp(prefix="kz-", dir="/tmp"))
    log = tmp_path / "bench.log"
    bench = kaizen("bench", "judge", "--corpus", str(corpus), "--questions", str(questions), "--pairs", "300",
                   "--interactions", "0", "--judge-model", str(tmp_path / "none.gguf"), log=log, TMPDIR=str(temp),
                   XDG_RUNTIME_DIR=str(PostgresServer.runtime_path.parent))
    try:
        home = wait_for(lambda: next(temp.glob("kaizen-bench-judge-*"), None), 60, "the temporary home")
        pgdata = home / "pgdata"
        wait_for(lambda: query(pgdata, "SELECT 1 FROM reader_role"), 60, "the migrated database")
        server = postmaster(pgdata)
        bench.send_signal(sig)
        assert bench.wait(timeout=60) == code, log.read_text()
    finally:
        if bench.poll() is None:
            bench.kill()
        left = list(temp.glob("kaizen-*"))
        shutil.rmtree(temp, ignore_errors=True)
    assert "Traceback" not in log.read_text() and "kaizen: " in log.read_text()
    assert gone(server), "the benchmark's server outlived it"
    assert left == [], "the temporary home was left behind"


def _worker(tmp_path, name: str, **env) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    return kaizen("-v", "worker", log=log, KAIZEN_INTERACTION_EVALUATOR=EVALUATOR, KAIZEN_PROBE_EVERY_MINUTES="0",
                  KAIZEN_IMPROVE_EVERY_MINUTES="0",
                  **env), log


def test_sigterm_lets_the_worker_finish_its_job(clean_store, tmp_path):
    from eval.worker.jobs import close_deferrers, enqueue_interaction

    reset_queue(clean_store)
    (interaction,) = add_interactions(clean_store, 1)
    job = enqueue_interaction(clean_store, interaction)
    close_deferrers()
    worker, log = _worker(tmp_path, "finishing", KAIZEN_TEST_EVAL_SLEEP="3")
    try:
        wait_for(lambda: (job, "evaluate_interaction", "doing", 0) in job_states(clean_store), 90, "the job")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    states = job_states(clean_store)
    assert (job, "evaluate_interaction", "succeeded", 1) in states and "doing" not in {s for _, _, s, _ in states}
    with clean_store.session() as s:
        assert s.execute(sa.text("SELECT count(*) FROM eval_scores WHERE interaction_id = :i"),
                         {"i": interaction}).scalar_one() == 1
        assert s.execute(sa.text("SELECT count(*) FROM procrastinate_workers")).scalar_one() == 0


def test_a_second_sigterm_hands_the_job_back_and_stops_the_server(tmp_path):
    """The worker alone on its own embedded server: a second SIGTERM ends it at once; its job is `todo` again and
    the server it was the last user of is stopped."""
    from eval.worker.jobs import close_deferrers, defer

    home = tmp_path / "home"
    pgdata = home / "pgdata"
    worker, log = _worker(tmp_path, "hurried", KAIZEN_HOME=str(home), KAIZEN_TEST_EVAL_SLEEP="120")
    try:
        wait_for(lambda: query(pgdata, "SELECT 1 FROM procrastinate_workers"), 90, "the worker")
        server = postmaster(pgdata)
        interaction = query(pgdata, "INSERT INTO interactions (thread_id, question, answer, model) "
                                    "VALUES ('t', 'q', 'a', 'test') RETURNING id")[0][0]
        url = server_url(pgdata).replace("postgresql://", "postgresql+psycopg://", 1)
        job = defer(types.SimpleNamespace(url=url), "evaluate_interaction", interaction_id=interaction)
        close_deferrers()
        # the grading job itself, not a minutely housekeeping job (queue_ungraded) that happens to be running
        wait_for(lambda: query(pgdata, "SELECT 1 FROM procrastinate_jobs WHERE status = 'doing' "
                                       "AND task_name = 'evaluate_interaction'"), 60, "the job")
        worker.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping after the running job" in log.read_text(), 10, "the first signal")
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 143, log.read_text()
        assert time.monotonic() - started < 15
    finally:
        close_deferrers()
        if worker.poll() is None:
            worker.kill()
    assert gone(server), "the worker's server outlived its last user"
    from store.database import Store
    from store.embedded_server import release
    from store.settings import StoreSettings

    store = Store(StoreSettings(home=home, database_url=None), migrate=False)
    try:
        states = job_states(store)
        assert (job, "evaluate_interaction", "todo", 1) in states  # back in the queue
        assert "doing" not in {s for _, _, s, _ in states}
        with store.session() as s:
            assert s.execute(sa.text("SELECT count(*) FROM procrastinate_workers")).scalar_one() == 0
    finally:
        store.close()
        release(pgdata)


def test_sigterm_keeps_the_repl_s_thread(clean_store, embedder, tmp_path):
    from tests.support.agent import build_kb, clean_agent_tables

    # A question the model answers (one the empty knowledge base would abstain on needs no model, and the REPL's
    # warm-up of the model could still be running when the signal comes).
    build_kb(clean_store, embedder, tmp_path / "kb")
    thread = f"sigterm-{os.getpid()}"
    log = tmp_path / "chat.log"
    chat = kaizen("chat", "--thread", thread, log=log, stdin=subprocess.PIPE)
    try:
        chat.stdin.write("How tall is the Kestrel Point lighthouse?\n")
        chat.stdin.flush()
        def answered():  # a session per look: an open one would hold up the checkpointer's set-up
            with clean_store.session() as s:
                return s.execute(sa.text("SELECT turns FROM thread_overview WHERE thread_id = :t"),
                                 {"t": thread}).scalar()

        wait_for(answered, 120, "the answer")
        chat.send_signal(signal.SIGTERM)  # at the prompt, the question answered
        assert chat.wait(timeout=30) == 143, log.read_text()
    finally:
        if chat.poll() is None:
            chat.kill()
    assert "stopped by SIGTERM" in log.read_text() and "Traceback" not in log.read_text()
    with clean_store.session() as s:
        assert s.execute(sa.text("SELECT turns FROM thread_overview WHERE thread_id = :t"),
                         {"t": thread}).scalar_one() == 1
        assert s.execute(sa.text("SELECT count(*) FROM checkpoints WHERE thread_id = :t"),
                         {"t": thread}).scalar_one() > 0
    clean_agent_tables(clean_store)


def test_a_stop_swallowed_by_a_callback_is_sent_again(tmp_path):
    """Python drops an exception raised in a weakref callback (or a __del__, or a ctypes callback such as a model's
    log hook) after printing it: a SIGTERM landing there must still stop the process."""
    script = (
        "import os, signal, sys, time, weakref\n"
        "from cli import main as m\n"
        "m._install_stop_handlers(); sys.unraisablehook = m._resend_swallowed(sys.unraisablehook)\n"
        "class Thing: pass\n"
        "def callback(_):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    for _ in range(1000): pass  # the handler runs here, inside the callback\n"
        "thing = Thing(); ref = weakref.ref(thing, callback); del thing\n"
        "try:\n"
        "    time.sleep(3); print('still running')\n"
        "except m.Terminated:\n"
        "    print('stopped')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "stopped", result.stderr
    assert "Traceback" not in result.stderr
