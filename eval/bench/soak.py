"""`kaizen bench soak`: everything at once for a fixed time, with faults injected, then the books are checked.

In a temporary embedded database (or --home), with the corpus ingested and its questions imported as probes:

- a client: a real `kaizen chat` process fed one question at a time through a pipe (each followed by `/new`,
  whose "new thread" line says the answer is over), with `pause_seconds` between questions as a person would;
- two workers: real `kaizen worker` processes grading every recorded answer (`metrics`, KAIZEN_EVAL_METRICS),
  running the periodic probe runs and the repair planner.

The faults, at fixed shares of the run (`SCHEDULE`): the KB is degraded on purpose (eval.bench.degrade) and a
probe run queued, so the workers' drift check raises a quality alert and a worker's planner builds candidate
versions and promotes or rolls them back; one worker is killed with SIGKILL (preferably while it holds a job) and
a replacement started; the PostgreSQL server is stopped under everyone, left down `down_seconds`, and started
again (store.embedded_server.restart); the client gets SIGTERM and a new one continues with the next question.
At the end the client's input is closed, the queue is left to drain (`drain_seconds` at most) and the workers get
SIGTERM (each finishes its job).

Then the checks, each a count (the targets are all zero):
- interactions: every recorded answer has exactly one grade per configured metric. `duplicate_grades` counts
  extra rows, `missing_grades` answers with a metric ungraded and no job left to grade it (`pending_grades`:
  ungraded, but their job is still queued: legitimately waiting). The client's side: every answer it saw end
  without an error is recorded (`acknowledged_not_recorded`), and no question is recorded more often than sent.
- jobs (procrastinate_jobs and its events): `lost` = failed, aborted, or still `doing` once every worker has
  stopped (held by nobody); `superseded` = a dead worker's job that ended `aborted` because a later job of the
  same task holds its queueing lock and did (or will do) the same work, so not lost; `queued` = `todo`
  (waiting, or a retry waiting its turn: legitimate, the next worker runs it). `run_twice` = a job with more
  than one end event (succeeded/failed/aborted), or started more often than it was handed back plus ended (two
  runs at once), or a probe-run job with two finished runs.
- KB versions: exactly one active version; every active document has chunks in it; no rolled-back version keeps
  chunks; no `building`/`candidate` version is left; and no hit of store.search (over `search_checks` of the
  questions) is a chunk of any other version than the active one.
- faults: when each was injected, and whether it was survived (see `_survival`).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import sqlalchemy as sa

# (share of the run, fault): the KB degradation first, so the planner has time to run before the end.
SCHEDULE = ((0.10, "quality_drop"), (0.30, "worker_kill"), (0.45, "database_restart"), (0.60, "client_sigterm"))
_STARTING = re.compile(r"Starting job \S+?\[(\d+)\]")
_ENDED = re.compile(r"Job \S+?\[(\d+)\].* ended with status: (\S[^,]*)")


def _kaizen(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


class Worker:
    """A `kaizen worker` process; its log (job starts and ends) is read to know what it holds."""

    def __init__(self, name: str, env: dict, log_dir: Path):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.output = open(log_dir / f"{name}.out", "w", encoding="utf-8")
        self.started_at = time.time()
        self.proc = subprocess.Popen(_kaizen("worker", "--log", str(self.log)), env=env, stdout=self.output,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def jobs(self) -> tuple[list[int], dict[int, str]]:
        """(job ids started, {job id: last outcome}) from its log."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return [int(m) for m in _STARTING.findall(text)], {int(j): o.strip() for j, o in _ENDED.findall(text)}

    def why(self, job_id: int, lines: int = 30) -> str | None:
        """What its log says about how this job ended badly: the end line and the traceback after it, plus the
        warnings and errors logged while it ran (None when this worker never ended it)."""
        if not self.log.exists():
            return None
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        start = next((i for i, line in enumerate(text) if re.search(rf"Starting job \S+?\[{job_id}\]", line)), None)
        end = next((i for i, line in enumerate(text) if re.search(rf"Job \S+?\[{job_id}\].* ended with status", line)),
                   None)
        if end is None:
            return None
        during = [line for line in text[(start or end):end] if " WARNING " in line or " ERROR " in line][-10:]
        return "\n".join([*during, *text[end:end + lines]])

    def holding(self) -> int | None:
        started, ended = self.jobs()
        running = [j for j in started if j not in ended]
        return running[-1] if running else None

    def alive(self) -> bool:
        return self.proc.poll() is None


class Client:
    """A `kaizen chat` process fed questions through its stdin, one at a time, until `finish` is set."""

    def __init__(self, name: str, env: dict, log_dir: Path, next_question, pause_seconds: float):
        self.name = name
        self.next_question = next_question
        self.pause = pause_seconds
        self.asked: list[dict] = []
        self.finish = threading.Event()
        self.log = open(log_dir / f"{name}.out", "w", encoding="utf-8")
        self.started_at = time.time()
        self.proc = subprocess.Popen(_kaizen("chat"), env={**env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     encoding="utf-8", errors="replace")
        self.thread = threading.Thread(target=self._drive, name=name, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        try:
            while not self.finish.is_set():
                question = " ".join(self.next_question().split())
                entry = {"client": self.name, "question": question, "sent_at": time.time(), "done_at": None,
                         "errors": [], "interrupted": False}
                self.asked.append(entry)
                try:
                    self.proc.stdin.write(question + "\n/new\n")
                    self.proc.stdin.flush()
                except OSError:
                    entry["interrupted"] = True
                    return
                while True:
                    line = self.proc.stdout.readline()
                    if line == "":
                        entry["interrupted"] = True
                        return
                    self.log.write(line)
                    if line.startswith("error:"):
                        entry["errors"].append(line.strip()[:300])
                    if line.startswith("new thread "):
                        entry["done_at"] = time.time()
                        break
                self.finish.wait(self.pause)
            try:
                self.proc.stdin.close()  # end of input: the REPL leaves
            except OSError:
                pass
            for line in self.proc.stdout:
                self.log.write(line)
        finally:
            self.log.flush()

    def stop_asking(self, timeout: float) -> int | None:
        self.finish.set()
        self.thread.join(timeout)
        try:
            return self.proc.wait(timeout=max(1.0, timeout / 4))
        except subprocess.TimeoutExpired:
            return None


def _stop(proc: subprocess.Popen, timeout: float, second_timeout: float = 30.0) -> int:
    """SIGTERM (a worker finishes its job), then a second one (it hands its job back), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGTERM, second_timeout), (signal.SIGKILL, 30.0)):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def _queue_busy(store) -> int:
    """Jobs running or waiting, plus answers whose grading was never queued (the workers' minutely
    `queue_ungraded` will queue them): the queue has drained when both are zero."""
    from eval.worker.jobs import NEVER_QUEUED

    with store.session() as s:
        return s.execute(sa.text(
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' "
            "        OR (status = 'todo' AND task_name NOT IN ('retry_stalled_jobs', 'queue_ungraded')))"
            f"     + (SELECT count(*) FROM interactions i WHERE {NEVER_QUEUED})")).scalar_one()


# -- the checks ------------------------------------------------------------------------------------------------------

def check_interactions(store, metrics: list[str], asked: list[dict]) -> dict:
    with store.session() as s:
        rows = s.execute(sa.text(
            """
            SELECT i.id, i.question, extract(epoch FROM i.created_at) AS at,
                   count(e.id) AS grade_rows, coalesce(array_agg(DISTINCT e.metric) FILTER (WHERE e.id IS NOT NULL),
                   '{}') AS graded,
                   (SELECT count(*) FROM procrastinate_jobs j WHERE j.task_name = 'evaluate_interaction'
                      AND (j.args->>'interaction_id')::bigint = i.id) AS jobs,
                   (SELECT count(*) FROM procrastinate_jobs j WHERE j.task_name = 'evaluate_interaction'
                      AND (j.args->>'interaction_id')::bigint = i.id AND j.status IN ('todo', 'doing')) AS waiting
            FROM interactions i LEFT JOIN eval_scores e ON e.interaction_id = i.id AND e.run_id IS NULL
            GROUP BY i.id ORDER BY i.id""")).all()
    expected = set(metrics)
    duplicate = sum(r.grade_rows - len(r.graded) for r in rows)
    ungraded = [r for r in rows if not expected <= set(r.graded)]
    pending = [r.id for r in ungraded if r.waiting]
    missing = [r.id for r in ungraded if not r.waiting]
    recorded: dict[str, int] = {}
    for r in rows:
        key = " ".join(r.question.split())
        recorded[key] = recorded.get(key, 0) + 1
    sent: dict[str, int] = {}
    acknowledged: dict[str, int] = {}
    for a in asked:
        sent[a["question"]] = sent.get(a["question"], 0) + 1
        if a["done_at"] and not a["errors"]:
            acknowledged[a["question"]] = acknowledged.get(a["question"], 0) + 1
    return {
        "recorded": len(rows),
        "graded": len(rows) - len(ungraded),
        "metrics": sorted(expected),
        "grade_rows": sum(r.grade_rows for r in rows),
        "duplicate_grades": duplicate,
        "pending_grades": len(pending),
        "missing_grades": len(missing),
        "missing_ids": missing[:20],
        "evaluation_jobs_per_answer_above_one": sum(1 for r in rows if r.jobs > 1),
        "answers_without_evaluation_job": sum(1 for r in rows if r.jobs == 0),
        "questions_sent": len(asked),
        "answers_acknowledged": sum(acknowledged.values()),
        "answers_with_errors": sum(1 for a in asked if a["errors"]),
        "answers_interrupted": sum(1 for a in asked if a["interrupted"]),
        "acknowledged_not_recorded": sum(max(0, n - recorded.get(q, 0)) for q, n in acknowledged.items()),
        "recorded_more_than_sent": sum(max(0, n - sent.get(q, 0)) for q, n in recorded.items()),
        "_created": [float(r.at) for r in rows],
    }


def check_jobs(store, workers_running: bool = False) -> dict:
    with store.session() as s:
        rows = s.execute(sa.text(
            """
            SELECT j.id, j.task_name, j.status::text AS status, j.attempts, j.queueing_lock,
                   EXISTS (SELECT 1 FROM procrastinate_jobs later WHERE later.id > j.id
                           AND later.task_name = j.task_name AND later.queueing_lock = j.queueing_lock
                           AND later.status IN ('todo', 'doing', 'succeeded')) AS taken_over,
                   count(e.id) FILTER (WHERE e.type = 'started') AS starts,
                   count(e.id) FILTER (WHERE e.type = 'deferred_for_retry') AS retries,
                   count(e.id) FILTER (WHERE e.type IN ('succeeded', 'failed', 'aborted')) AS ends
            FROM procrastinate_jobs j LEFT JOIN procrastinate_events e ON e.job_id = j.id
            GROUP BY j.id ORDER BY j.id""")).all()
        probe_runs = dict(s.execute(sa.text(
            "SELECT (summary->>'job_id')::bigint, count(*) FROM eval_runs WHERE summary ? 'job_id' "
            "AND status = 'done' GROUP BY 1")).all())
    by_status: dict[str, int] = {}
    by_task: dict[str, dict[str, int]] = {}
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        task = by_task.setdefault(r.task_name, {})
        task[r.status] = task.get(r.status, 0) + 1
    superseded = [r for r in rows if r.status == "aborted" and r.queueing_lock and r.taken_over]
    lost = [r for r in rows if (r.status in ("failed", "aborted", "cancelled") and r not in superseded)
            or (r.status == "doing" and not workers_running)]
    twice = [r for r in rows if r.ends > 1 or (r.status != "doing" and r.starts > r.retries + r.ends)
             or (r.status == "doing" and r.starts > r.retries + 1) or probe_runs.get(r.id, 0) > 1]
    return {
        "jobs": len(rows),
        "by_status": by_status,
        "by_task": by_task,
        "succeeded": by_status.get("succeeded", 0),
        "queued": by_status.get("todo", 0),
        "lost": len(lost),
        "superseded": len(superseded),
        "superseded_jobs": [r.id for r in superseded][:20],
        "lost_jobs": [{"id": r.id, "task": r.task_name, "status": r.status} for r in lost][:20],
        "run_twice": len(twice),
        "run_twice_jobs": [{"id": r.id, "task": r.task_name, "starts": r.starts, "retries": r.retries,
                            "ends": r.ends} for r in twice][:20],
        "retried": sum(1 for r in rows if r.retries),
        "started_more_than_once": sum(1 for r in rows if r.starts > 1),
    }


def check_kb(store, embedder, questions: list[str]) -> dict:
    from store.kb_versions import index_name
    from store.search import search

    with store.session() as s:
        statuses = dict(s.execute(sa.text("SELECT status, count(*) FROM kb_versions GROUP BY status")).all())
        active = s.execute(sa.text("SELECT id FROM kb_versions WHERE status = 'active'")).scalars().all()
        version = active[0] if len(active) == 1 else None
        without_chunks = s.execute(sa.text(
            "SELECT count(*) FROM documents d WHERE d.status = 'active' AND NOT EXISTS "
            "(SELECT 1 FROM chunks c WHERE c.document_id = d.id AND c.kb_version = :v)"), {"v": version or -1}
        ).scalar_one()
        leftover = s.execute(sa.text(
            "SELECT count(*) FROM chunks c JOIN kb_versions v ON v.id = c.kb_version "
            "WHERE v.status = 'rolled_back'")).scalar_one()
        unfinished = s.execute(sa.text(
            "SELECT count(*) FROM kb_versions WHERE status IN ('building', 'candidate')")).scalar_one()
        chunks = s.execute(sa.text("SELECT count(*) FROM chunks WHERE kb_version = :v"), {"v": version or -1}
                           ).scalar_one()
        has_index = bool(version) and bool(s.execute(sa.text(
            "SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": index_name(version or 0)}).first())
    foreign_hits = searched = 0
    for question in questions:
        with store.session() as s:
            hits = search(s, embedder, question, k=10)
            ids = [h.chunk_id for h in hits]
            versions = s.execute(sa.text("SELECT kb_version FROM chunks WHERE id = ANY(:ids)"), {"ids": ids}
                                 ).scalars().all()
        searched += 1
        foreign_hits += sum(1 for v in versions if v != version) + (len(ids) - len(versions))
    inconsistencies = ((len(active) != 1) + without_chunks + leftover + unfinished + foreign_hits
                       + (0 if has_index else 1))
    return {
        "versions_by_status": statuses,
        "active_version": version,
        "active_versions": len(active),
        "active_chunks": chunks,
        "active_version_indexed": has_index,
        "active_documents_without_chunks": without_chunks,
        "rolled_back_chunks_left": leftover,
        "unfinished_versions": unfinished,
        "searches": searched,
        "hits_outside_the_active_version": foreign_hits,
        "inconsistencies": inconsistencies,
    }


def check_repair(store, degraded_version: int | None) -> dict:
    with store.session() as s:
        alerts = s.execute(sa.text("SELECT id, metric, status FROM quality_alerts ORDER BY id")).all()
        decisions = dict(s.execute(sa.text(
            "SELECT decision, count(*) FROM kb_changes WHERE kind LIKE 'repair:%' GROUP BY decision")).all())
        plans = dict(s.execute(sa.text(
            "SELECT status::text, count(*) FROM procrastinate_jobs WHERE task_name = 'plan_repair' GROUP BY status"
        )).all())
        active = s.execute(sa.text("SELECT id FROM kb_versions WHERE status = 'active'")).scalar()
    return {"alerts": [{"id": a.id, "metric": a.metric, "status": a.status} for a in alerts],
            "planner_jobs": plans, "decisions": decisions, "degraded_version": degraded_version,
            "active_version_after": active,
            "active_changed_since_degrading": degraded_version is not None and active != degraded_version}


def _events_after(store, at: float) -> dict:
    with store.session() as s:
        jobs = s.execute(sa.text(
            "SELECT count(*) FROM procrastinate_events WHERE type = 'succeeded' AND extract(epoch FROM at) > :t"),
            {"t": at}).scalar_one()
        answers = s.execute(sa.text("SELECT count(*) FROM interactions WHERE extract(epoch FROM created_at) > :t"),
                            {"t": at}).scalar_one()
    return {"jobs_succeeded_after": jobs, "answers_recorded_after": answers}


def _survival(fault: dict, store, jobs_by_id: dict, workers: dict, repair: dict) -> tuple[bool, dict]:
    """Whether the system came through the fault, and the evidence."""
    kind = fault["fault"]
    after = _events_after(store, fault.get("done_at", fault["at"]))
    if kind == "quality_drop":
        plans = repair["planner_jobs"]
        ok = bool(repair["alerts"]) and plans.get("succeeded", 0) >= 1 and not (
            set(plans) - {"succeeded", "todo"})
        return ok, {"alerts": len(repair["alerts"]), "planner_jobs": plans, "decisions": repair["decisions"]}
    if kind == "worker_kill":
        held = fault.get("job_in_flight")
        held_status = jobs_by_id.get(held) if held else None
        replacement = workers.get(fault.get("replacement"))
        ran = bool(replacement) and any(o.startswith("Success") for o in replacement.jobs()[1].values())
        ok = fault.get("exit_code") == -signal.SIGKILL and ran and (
            held is None or held_status in ("succeeded", "todo", "superseded"))
        return ok, {"job_in_flight_final_status": held_status, "replacement_ran_jobs": ran, **after}
    if kind == "database_restart":
        survivors = fault.get("alive_after", {})
        ok = all(survivors.values()) and after["jobs_succeeded_after"] > 0 and after["answers_recorded_after"] > 0
        return ok, {"processes_alive_after": survivors, **after}
    if kind == "client_sigterm":
        ok = fault.get("exit_code") is not None and after["answers_recorded_after"] > 0
        return ok, {"exit_code": fault.get("exit_code"), **after}
    return False, {}


# -- the run ---------------------------------------------------------------------------------------------------------

def run(corpus: str, questions: str, minutes: float = 10.0, home: str | None = None, limit: int | None = None,
        metrics: str = "answer_relevancy", pause_seconds: float = 5.0, down_seconds: float = 5.0,
        drain_seconds: float | None = None, probe_every_minutes: int = 2, stalled_seconds: int = 15,
        fragment_tokens: int = 24, noise_share: float = 0.2, heldout_share: float | None = None,
        search_checks: int = 30, extra_env: dict | None = None, progress=None) -> dict:
    from eval.bench.answer import load_questions as load_asked
    from eval.bench.recovery import _write_probe_file
    from eval.probes.runs import run_probes
    from eval.probes.sets import HELDOUT_SHARE, import_probes
    from eval.worker.jobs import close_deferrers, defer
    from store import embedded_server

    from .corpus import bench_store, ingest_corpus, load_average
    from .degrade import degrade

    say = progress or (lambda message: None)
    duration = float(minutes) * 60.0
    drain = float(drain_seconds if drain_seconds is not None else max(120.0, duration / 2))
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    with bench_store(home, "kaizen-bench-soak-") as (store, embedder, home_dir):
        log_dir = home_dir / "soak-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        report = ingest_corpus(store, embedder, corpus)
        probes = import_probes(store, _write_probe_file(questions, limit, home_dir),
                               probe_set=Path(questions).parent.name or "bench",
                               heldout_share=heldout_share or HELDOUT_SHARE)
        run_probes(store, embedder, split="train", baseline=True)  # what the drift check compares against
        setup_seconds = round(time.perf_counter() - t, 1)
        asked_pool = [q["question"] for q in load_asked(questions, None)]
        counter = itertools.count()
        lock = threading.Lock()

        def next_question() -> str:
            with lock:
                return asked_pool[next(counter) % len(asked_pool)]

        env = {**os.environ, "KAIZEN_HOME": str(home_dir), "KAIZEN_EVAL_METRICS": ",".join(metric_names),
               "KAIZEN_PROBE_EVERY_MINUTES": str(probe_every_minutes), "KAIZEN_IMPROVE_EVERY_MINUTES": "0",
               "KAIZEN_WORKER_STALLED_SECONDS": str(stalled_seconds),
               "KAIZEN_WORKER_RECONNECT_SECONDS": str(max(120, int(down_seconds * 4))), **(extra_env or {})}
        env.pop("KAIZEN_DATABASE_URL", None)
        workers: dict[str, Worker] = {}
        clients: list[Client] = []
        faults: list[dict] = []
        degraded_version = None
        exit_codes: dict[str, int | None] = {}

        def start_worker() -> Worker:
            w = Worker(f"worker-{len(workers) + 1}", env, log_dir)
            workers[w.name] = w
            return w

        def start_client() -> Client:
            c = Client(f"client-{len(clients) + 1}", env, log_dir, next_question, pause_seconds)
            clients.append(c)
            return c

        started = time.time()
        try:
            start_worker()
            start_worker()
            start_client()
            say(f"soak: 2 workers and a client started; {minutes} min")
            for share, kind in SCHEDULE:
                time.sleep(max(0.0, started + share * duration - time.time()))
                fault = {"fault": kind, "at": time.time(), "at_seconds": round(time.time() - started, 1)}
                say(f"soak: {kind} at {fault['at_seconds']}s")
                if kind == "quality_drop":
                    damage = degrade(store, embedder, fragment_tokens=fragment_tokens, noise_share=noise_share)
                    degraded_version = damage["version"]
                    try:
                        fault["probe_job"] = defer(store, "probe_run", timestamp=int(time.time()))
                    except Exception as exc:  # a periodic probe run is already queued: it does the same
                        fault["probe_job"] = f"not queued: {type(exc).__name__}"
                    close_deferrers()
                    fault["detail"] = damage
                elif kind == "worker_kill":
                    live = [w for w in workers.values() if w.alive()]
                    deadline = time.time() + min(60.0, duration * 0.1)
                    victim = None
                    while victim is None and time.time() < deadline:
                        victim = next((w for w in live if w.holding() is not None), None)
                        if victim is None:
                            time.sleep(0.5)
                    victim = victim or live[0]
                    fault["worker"] = victim.name
                    fault["job_in_flight"] = victim.holding()
                    victim.proc.send_signal(signal.SIGKILL)
                    fault["exit_code"] = victim.proc.wait(timeout=30)
                    fault["replacement"] = start_worker().name
                elif kind == "database_restart":
                    running = {w.name: w for w in workers.values() if w.alive()}
                    running.update({c.name: c for c in clients if c.proc.poll() is None})
                    fault["detail"] = embedded_server.restart(store.settings.pgdata, down_seconds=down_seconds)
                    fault["down_seconds"] = round(fault["detail"]["started_at"] - fault["detail"]["stopped_at"], 1)
                    time.sleep(min(20.0, duration * 0.05))
                    fault["alive_after"] = {n: p.proc.poll() is None for n, p in running.items()}
                elif kind == "client_sigterm":
                    client = clients[-1]
                    fault["client"] = client.name
                    fault["in_flight"] = next((a["question"] for a in reversed(client.asked)
                                               if not a["done_at"]), None)
                    client.proc.send_signal(signal.SIGTERM)
                    try:
                        fault["exit_code"] = client.proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        fault["exit_code"] = None
                    client.finish.set()
                    fault["replacement"] = start_client().name
                fault["done_at"] = time.time()
                faults.append(fault)
            time.sleep(max(0.0, started + duration - time.time()))
            say("soak: time is up; the client finishes its question, the queue drains")
            for c in clients:
                exit_codes[c.name] = c.stop_asking(timeout=300.0)
            drained_at = None
            deadline = time.time() + drain
            while time.time() < deadline:
                try:
                    if _queue_busy(store) == 0:
                        drained_at = time.time()
                        break
                except sa.exc.OperationalError:
                    pass
                time.sleep(2.0)
            for w in workers.values():
                if w.alive():
                    w.proc.send_signal(signal.SIGTERM)
            for name, w in workers.items():
                exit_codes[name] = _stop(w.proc, timeout=300.0) if w.proc.returncode is None else w.proc.returncode
        finally:
            for p in [*(w.proc for w in workers.values()), *(c.proc for c in clients)]:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for w in workers.values():
                w.output.close()
        ended = time.time()

        asked = [a for c in clients for a in c.asked]
        interactions = check_interactions(store, metric_names, asked)
        interactions.pop("_created")
        jobs = check_jobs(store)
        for lost in jobs["lost_jobs"]:  # the workers' own words about each lost job
            lost["log"] = next((why for w in workers.values() if (why := w.why(lost["id"]))), None)
        kb = check_kb(store, embedder, asked_pool[:search_checks])
        repair = check_repair(store, degraded_version)
        with store.session() as s:
            statuses = dict(s.execute(sa.text("SELECT id, status::text FROM procrastinate_jobs")).all())
        for job in jobs["superseded_jobs"]:  # given up for its queued twin, which ran: not lost
            statuses[job] = "superseded"
        for fault in faults:
            fault["survived"], fault["evidence"] = _survival(fault, store, statuses, workers, repair)
            for key in ("at", "done_at"):
                fault.pop(key, None)
        processes = {name: {"exit_code": code} for name, code in exit_codes.items()}
        for f in faults:
            if f["fault"] == "worker_kill":
                processes[f["worker"]] = {"exit_code": f["exit_code"], "killed": True}
            if f["fault"] == "client_sigterm":
                processes[f["client"]] = {"exit_code": f["exit_code"], "stopped_by": "SIGTERM"}
        result = {
            "benchmark": "soak",
            "corpus": str(corpus),
            "questions": str(questions),
            "minutes": minutes,
            "documents": report.added + report.updated + report.unchanged,
            "probes": probes,
            "settings": {"metrics": metric_names, "pause_seconds": pause_seconds, "down_seconds": down_seconds,
                         "drain_seconds": drain, "probe_every_minutes": probe_every_minutes,
                         "stalled_seconds": stalled_seconds, "chat_model": env.get("KAIZEN_CHAT_MODEL"),
                         "judge_model": env.get("KAIZEN_JUDGE_MODEL")},
            "seconds": {"setup": setup_seconds, "soak": round(duration, 1),
                        "drained_after_end": round(drained_at - started - duration, 1) if drained_at else None,
                        "total": round(ended - started, 1)},
            "queue_drained": drained_at is not None,
            "faults": faults,
            "processes": processes,
            "interactions": interactions,
            "jobs": jobs,
            "kb": kb,
            "repair": repair,
            "load_average": load_average(),
        }
        result["summary"] = {
            "lost_jobs": jobs["lost"],
            "jobs_run_twice": jobs["run_twice"],
            "duplicate_grades": interactions["duplicate_grades"],
            "missing_grades": interactions["missing_grades"],
            "acknowledged_not_recorded": interactions["acknowledged_not_recorded"],
            "kb_inconsistencies": kb["inconsistencies"],
            "faults_survived": f"{sum(1 for f in faults if f['survived'])}/{len(faults)}",
        }
        result["ok"] = (jobs["lost"] == 0 and jobs["run_twice"] == 0 and interactions["duplicate_grades"] == 0
                        and interactions["missing_grades"] == 0 and interactions["acknowledged_not_recorded"] == 0
                        and interactions["recorded_more_than_sent"] == 0 and kb["inconsistencies"] == 0
                        and all(f["survived"] for f in faults) and len(faults) == len(SCHEDULE))
        return result
