"""The background jobs, on a procrastinate queue kept in Kaizen's own PostgreSQL (tables from migration 0004).

Jobs (task names are what `procrastinate_jobs.task_name` shows):
- `evaluate_interaction(interaction_id)`: RAGAS reference-free metrics of one recorded answer (the evaluator is
  `KAIZEN_INTERACTION_EVALUATOR`, by default `eval.judging.interactions:evaluate_interaction`), then a drift check.
- `probe_run(timestamp)`: periodic (`KAIZEN_PROBE_EVERY_MINUTES`, 0 = off): gold-id probe metrics on the active KB
  version into `eval_runs` + `eval_scores`, then a drift check.
- `plan_repair(alert_id)`: hands a quality alert to the repair planner (`eval.repair.planner.run_planner`) when it
  is installed; otherwise the alert stays open.
- `improve_pass(timestamp)`: periodic (`KAIZEN_IMPROVE_EVERY_MINUTES`, 0 = off): when the worker is idle and new
  evidence has arrived, an improvement pass of the planner (eval/worker/idle.py).
- `retry_stalled_jobs(timestamp)`: every minute, jobs held by a worker whose heartbeat stopped (killed, machine
  gone) go back to the queue (procrastinate's heartbeat-based stalled-job detection).
- `queue_ungraded(timestamp)`: every minute, recorded answers whose grading was never queued (the database was
  away when they were recorded) are queued.

Several workers, on any machines sharing the database, split the queue without duplicates: procrastinate fetches
with `FOR UPDATE SKIP LOCKED`, periodic jobs are deduplicated by a unique defer row, and `lock`s keep two probe
runs from overlapping. Each job is idempotent on retry (an interaction already scored is skipped; a probe run's
scores are written in the transaction that finishes the run).
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Callable

from eval.settings import EvalSettings

log = logging.getLogger(__name__)

EVAL_QUEUE = "eval"
REPAIR_QUEUE = "repair"
DEFAULT_PLANNER = "eval.repair.planner:run_planner"


def probe_cron(minutes: int) -> str | None:
    """A cron line for "every `minutes` minutes" (rounded to what cron can say: steps of minutes within an hour,
    of hours within a day, or of days)."""
    if minutes <= 0:
        return None
    if minutes < 60:
        return f"*/{minutes} * * * *"
    if minutes < 24 * 60:
        return f"0 */{max(1, minutes // 60)} * * *"
    return f"0 0 */{max(1, minutes // (24 * 60))} * *"


def load_callable(spec: str) -> Callable:
    """`module:function` to the function (ImportError when the module or the name is missing)."""
    module_name, _, name = spec.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"{module_name} has no {name}") from None


class Resources:
    """What a worker's jobs share: the store, the embedder (loaded on first use), the interaction evaluator, and
    the evaluation settings (EvalSettings() when none are given)."""

    def __init__(self, store, *, embedder=None, evaluator: Callable | None = None,
                 settings: EvalSettings | None = None):
        self.store = store
        self._embedder = embedder
        self._evaluator = evaluator
        self.settings = settings or EvalSettings()

    @property
    def embedder(self):
        if self._embedder is None:
            from store.embeddings import store_embedder

            self._embedder = store_embedder(self.store.settings)
        return self._embedder

    @property
    def evaluator(self) -> Callable:
        if self._evaluator is None:
            self._evaluator = load_callable(self.settings.interaction_evaluator)
        return self._evaluator


def _resources(context) -> Resources:
    resources = (context.additional_context or {}).get("kaizen")
    if resources is None:
        raise RuntimeError("this job runs only in `kaizen worker` (no resources in its context)")
    return resources


def _transient_errors() -> tuple[type[Exception], ...]:
    import psycopg
    import sqlalchemy as sa

    from store.locks import LockLost

    return (sa.exc.OperationalError, psycopg.OperationalError, LockLost)


# -- the job bodies (plain functions, so tests and `kaizen eval run` call them without a queue) ----------------------

def evaluate_interaction_job(resources: Resources, interaction_id: int) -> dict:
    import sqlalchemy as sa

    with resources.store.session() as s:
        exists = s.execute(sa.text("SELECT 1 FROM interactions WHERE id = :i"), {"i": interaction_id}).first()
        scored = s.execute(sa.text("SELECT count(*) FROM eval_scores WHERE interaction_id = :i"),
                           {"i": interaction_id}).scalar_one()
    if not exists:
        return {"interaction_id": interaction_id, "skipped": "no such interaction (deleted?)"}
    if scored:  # a retry after the scores were committed: never score twice
        return {"interaction_id": interaction_id, "skipped": f"already scored ({scored} scores)"}
    rows = resources.evaluator(resources.store, interaction_id, embedder=resources.embedder)
    result = {"interaction_id": interaction_id, "scores": len(rows or [])}
    result["alerts"] = after_evaluation(resources)
    return result


def probe_run_job(resources: Resources, *, job_id: int | None = None) -> dict:
    from eval.probes.runs import run_probes

    run = run_probes(resources.store, resources.embedder, job_id=job_id)
    return {"run_id": run["run_id"], "items": run["items"], "alerts": after_evaluation(resources)}


def after_evaluation(resources: Resources) -> list[int]:
    """The drift check after each evaluation: new alerts are queued for the repair planner."""
    from .drift import check_drift

    alerts = check_drift(resources.store, resources.settings)
    for alert_id in alerts:
        defer(resources.store, "plan_repair", alert_id=alert_id)
    return alerts


def plan_repair_job(resources: Resources, alert_id: int) -> dict:
    try:
        run_planner = load_callable(DEFAULT_PLANNER)
    except ImportError as exc:
        log.warning("quality alert %s stays open: the repair planner is not installed (%s)", alert_id, exc)
        return {"alert_id": alert_id, "planned": False, "reason": f"no repair planner: {exc}"}
    outcome = run_planner(resources.store, alert_id=alert_id, embedder=resources.embedder, settings=resources.settings)
    return {"alert_id": alert_id, "planned": True, "outcome": repr(outcome)[:200]}


async def retry_stalled_jobs(app, stalled_seconds: float) -> list[int]:
    """Put the jobs of workers that stopped sending heartbeats back in the queue (procrastinate's recipe).

    A stalled job whose queueing lock a queued twin now holds (a periodic probe run deferred while the dead
    worker held the old one) cannot go back: the twin will do the same work, so the stalled job ends `aborted`,
    which frees its run lock for the twin. One job that cannot be handled does not keep the others stalled."""
    from procrastinate import exceptions, jobs

    retried = []
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds):
        try:
            await app.job_manager.retry_job(job)
        except exceptions.UniqueViolation:
            if not job.queueing_lock:
                raise
            await app.job_manager.finish_job(job, status=jobs.Status.ABORTED, delete_job=False)
            log.warning("job %s (%s) was held by a worker that stopped; a queued job with its queueing lock %r "
                        "supersedes it", job.id, job.task_name, job.queueing_lock)
            continue
        except exceptions.ConnectorException as exc:
            log.warning("job %s (%s) is stalled and could not be queued again: %s", job.id, job.task_name, exc)
            continue
        retried.append(job.id)
        log.warning("job %s (%s) was held by a worker that stopped; queued again", job.id, job.task_name)
    return retried


UNGRADED_GRACE_SECONDS = 30  # the REPL queues its answer's grading within milliseconds of recording it
UNGRADED_WINDOW_HOURS = 24
UNGRADED_BATCH = 200


# A recorded answer `i` with no grade and no grading job ever queued (the soak's drain counts these too)
NEVER_QUEUED = ("NOT EXISTS (SELECT 1 FROM eval_scores e WHERE e.interaction_id = i.id AND e.run_id IS NULL) "
                "AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.task_name = 'evaluate_interaction' "
                "AND j.args->>'interaction_id' = i.id::text)")


def queue_ungraded(store) -> list[int]:
    """Queue the grading of recorded answers that have no grade and never had a job: the REPL's enqueue is
    best-effort (an answer is never held up by the queue), so an answer recorded just before the database went
    away has none. Only answers of the last day, at least `UNGRADED_GRACE_SECONDS` old; a job that failed is
    not queued again (it stays visible as failed)."""
    import sqlalchemy as sa

    with store.session() as s:
        ids = s.execute(sa.text(
            """
            SELECT i.id FROM interactions i
            WHERE i.created_at < now() - make_interval(secs => :grace)
              AND i.created_at > now() - make_interval(hours => :window)
              AND """ + NEVER_QUEUED + """
            ORDER BY i.id LIMIT :batch"""),
            {"grace": UNGRADED_GRACE_SECONDS, "window": UNGRADED_WINDOW_HOURS, "batch": UNGRADED_BATCH}).scalars().all()
    queued = [i for i in ids if enqueue_interaction(store, i)]
    if queued:
        log.warning("queued the grading of %d recorded answer(s) that had none (their queueing had failed): %s",
                    len(queued), queued[:10])
    return queued


# -- the procrastinate app -------------------------------------------------------------------------------------------

def build_app(conninfo: str, settings: EvalSettings | None = None, *, application_name: str = "kaizen-worker"):
    """A procrastinate App on Kaizen's database with every Kaizen task (and the periodic schedule) registered.
    Without settings (an App that only defers jobs), the declared defaults."""
    from procrastinate import App, PsycopgConnector, RetryStrategy

    settings = settings or EvalSettings.defaults()
    connector = PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4,
                                 kwargs={"application_name": application_name, "connect_timeout": 5})
    app = App(connector=connector)
    transient = RetryStrategy(max_attempts=3, wait=5, retry_exceptions=set(_transient_errors()))

    @app.task(name="evaluate_interaction", queue=EVAL_QUEUE, pass_context=True, retry=transient)
    def evaluate_interaction(context, interaction_id: int) -> dict:
        return evaluate_interaction_job(_resources(context), interaction_id)

    @app.task(name="probe_run", queue=EVAL_QUEUE, pass_context=True, retry=transient, lock="probe_run",
              queueing_lock="probe_run")
    def probe_run(context, timestamp: int | None = None) -> dict:
        return probe_run_job(_resources(context), job_id=context.job.id)

    @app.task(name="plan_repair", queue=REPAIR_QUEUE, pass_context=True, retry=transient, lock="plan_repair")
    def plan_repair(context, alert_id: int) -> dict:
        return plan_repair_job(_resources(context), alert_id)

    @app.task(name="improve_pass", queue=REPAIR_QUEUE, pass_context=True, retry=transient, lock="plan_repair",
              queueing_lock="improve_pass")
    def improve_pass(context, timestamp: int | None = None) -> dict:
        from .idle import improve_pass_job

        return improve_pass_job(_resources(context))

    @app.periodic(cron="* * * * *")
    @app.task(name="retry_stalled_jobs", queue=EVAL_QUEUE, queueing_lock="retry_stalled_jobs")
    async def retry_stalled(timestamp: int) -> list[int]:
        return await retry_stalled_jobs(app, settings.worker_stalled_seconds)

    @app.periodic(cron="* * * * *")
    @app.task(name="queue_ungraded", queue=EVAL_QUEUE, pass_context=True, queueing_lock="queue_ungraded")
    def queue_ungraded_task(context, timestamp: int) -> list[int]:
        return queue_ungraded(_resources(context).store)

    cron = probe_cron(settings.probe_every_minutes)
    if cron:
        app.periodic(cron=cron)(probe_run)
    cron = probe_cron(settings.improve_every_minutes)
    if cron:
        app.periodic(cron=cron)(improve_pass)
    return app


# -- deferring from other processes (the REPL) -----------------------------------------------------------------------

_defer_apps: dict[str, Any] = {}
_defer_lock = threading.Lock()


def _defer_app(store):
    """A small App per database for deferring only (a 1-connection pool, short timeouts, opened once)."""
    with _defer_lock:
        return _defer_apps.get(store.url) or _open_defer_app(store)


def _open_defer_app(store):
    import psycopg_pool

    from store.database import libpq_url

    conninfo = libpq_url(store.url)
    app = build_app(conninfo, application_name="kaizen-defer")
    pool = psycopg_pool.ConnectionPool(conninfo, min_size=1, max_size=1, open=False, timeout=3,
                                       kwargs={"application_name": "kaizen-defer", "connect_timeout": 3},
                                       check=psycopg_pool.ConnectionPool.check_connection)
    pool.open(wait=False)
    app.open(pool)
    _defer_apps[store.url] = app
    return app


def defer(store, task: str, **kwargs) -> int:
    """Queue one job (returns its id). Raises if the database refuses; `enqueue_interaction` never does."""
    return _defer_app(store).configure_task(task, allow_unknown=False).defer(**kwargs)


def enqueue_interaction(store, interaction_id: int | None) -> int | None:
    """Queue the evaluation of a recorded interaction, for the REPL and `kaizen ask`: returns at once with the
    job id, or None (logged) when the queue is unavailable; the answer never waits on the worker."""
    if not interaction_id:
        return None
    try:
        return defer(store, "evaluate_interaction", interaction_id=int(interaction_id))
    except Exception as exc:  # the queue is optional for answering
        log.warning("could not queue interaction %s for evaluation: %s", interaction_id, exc)
        return None


def close_deferrers() -> None:
    while _defer_apps:
        _, app = _defer_apps.popitem()
        try:
            pool = app.connector.get_sync_connector().pool
            app.close()
            pool.close()
        except Exception:  # closing is best effort
            pass
