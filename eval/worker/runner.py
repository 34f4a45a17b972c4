"""`kaizen worker`: a procrastinate worker over Kaizen's database, polite to the REPL on a small machine.

- Two processes that each use every core collapse on two cores, so the worker runs its model and embedder with
  `KAIZEN_WORKER_LLM_THREADS` (1) threads and at `KAIZEN_WORKER_NICE` (10) lower CPU priority.
- On start it queues again the jobs of workers that died mid-job (no heartbeat for `KAIZEN_WORKER_STALLED_SECONDS`);
  a periodic job keeps doing so while it runs.
- Its model pauses while anyone is being answered on the same database (agent.turns): before each small piece of
  a prompt and each generated token it waits for the answer to finish.
- SIGINT or SIGTERM stops it after its running job (procrastinate's graceful shutdown: no new job is fetched,
  the running one finishes and is recorded, the worker unregisters); a second one stops it at once and hands the
  running job back to the queue (`todo` again, for the next worker), stopping the embedded server first when
  this was its last user.
- When the database goes away (a restart, a network cut) the worker rides it out in the same session for up to
  `KAIZEN_WORKER_RECONNECT_SECONDS` (60): its heartbeat, job fetching, the periodic deferrer and the listener
  retry every second instead of stopping the worker, and a job that ends meanwhile has its outcome recorded once
  the database is back (otherwise the job would stay `doing` under a live worker, never retried). Keeping the
  session matters: a worker that dropped it while its job still ran would look dead to the others, who would run
  the same job a second time beside it. Past the budget it stops and starts a new session, and keeps trying for
  the same budget before it stops with a message saying so; a job interrupted that way is retried by the next
  worker (stalled-job recovery), not lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

from eval.settings import EvalSettings
from store.errors import KaizenError

from .jobs import Resources, build_app, retry_stalled_jobs

log = logging.getLogger(__name__)


class WorkerStopped(KaizenError, RuntimeError):
    """The worker gave up (database gone for too long); the message is one line for a person."""


class WorkerInterrupted(KaizenError, RuntimeError):
    """The worker stopped without being asked to; it is started again."""


def be_polite(settings: EvalSettings) -> None:
    """Before any model loads: few threads, lower priority (this process only). The thread counts go into this
    process's environment, so the store and agent settings the worker reads after this call (and its children)
    use KAIZEN_WORKER_LLM_THREADS."""
    threads = str(settings.worker_llm_threads)
    os.environ["KAIZEN_LLM_THREADS"] = threads
    os.environ["KAIZEN_EMBED_THREADS"] = threads
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", threads)
    if settings.worker_nice and hasattr(os, "nice"):
        try:
            os.nice(settings.worker_nice)
        except OSError as exc:
            log.warning("could not lower the worker's priority: %s", exc)


def _connection_errors() -> tuple[type[BaseException], ...]:
    import psycopg
    import psycopg_pool
    from procrastinate import exceptions

    return (exceptions.ConnectorException, psycopg.OperationalError, psycopg_pool.PoolTimeout, OSError)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]


class _Outage:
    """When the database was first found missing in the current outage (None: reachable); raises the error again
    once the outage has lasted longer than the budget."""

    def __init__(self, budget: float):
        self.budget = budget
        self.since: float | None = None

    def lost(self, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            log.warning("lost the database (%s) while %s; retrying for up to %ss", _reason(exc), what, self.budget)
        if now - self.since > self.budget:
            raise exc

    def back(self) -> None:
        if self.since is not None:
            log.warning("the database is back after %.1fs", time.monotonic() - self.since)
        self.since = None


def _resilient_worker_class():
    """procrastinate's Worker, riding out a database outage in the same session (see the module doc). It overrides
    procrastinate 3.x's side tasks, fetch loop and status persistence (private methods: tests/test_worker.py and
    the soak benchmark exercise them against a real restart)."""
    from procrastinate.worker import Worker

    errors = _connection_errors()

    class ResilientWorker(Worker):
        def __init__(self, *args, reconnect_seconds: float = 60.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.outage = _Outage(reconnect_seconds)

        async def _update_heartbeat(self):
            delay = self.update_heartbeat_interval
            while True:
                await asyncio.sleep(delay)
                try:
                    assert self.worker_id is not None
                    await self.app.job_manager.update_heartbeat(self.worker_id)
                except errors as exc:
                    self.outage.lost(exc, "sending its heartbeat")
                    delay = 1.0  # beat again as soon as it is back, before the others take it for dead
                else:
                    self.outage.back()
                    delay = self.update_heartbeat_interval

        async def _riding_out(self, what: str, make):
            while True:
                try:
                    return await make()
                except errors as exc:
                    self.outage.lost(exc, what)
                    await asyncio.sleep(1.0)

        async def _periodic_deferrer(self):
            return await self._riding_out("deferring periodic jobs", super()._periodic_deferrer)

        def _start_side_tasks(self):
            tasks = super()._start_side_tasks()
            for i, task in enumerate(tasks):
                if task.get_name() == "listener":  # procrastinate's listener gives up when it cannot reconnect
                    task.cancel()
                    tasks[i] = asyncio.create_task(self._riding_out(
                        "listening for new jobs", lambda: self.app.job_manager.listen_for_jobs(
                            on_notification=self._handle_notification, queues=self.queues)), name="listener")
            return tasks

        async def _fetch_and_process_jobs(self):
            try:
                await super()._fetch_and_process_jobs()
            except errors as exc:  # the next poll (fetch_job_polling_interval) tries again
                self.outage.lost(exc, "fetching a job")
                await asyncio.sleep(1.0)

        async def _persist_job_status(self, *args, **kwargs):
            while True:
                try:
                    return await super()._persist_job_status(*args, **kwargs)
                except errors as exc:
                    self.outage.lost(exc, "recording a job's outcome")
                    await asyncio.sleep(1.0)

    return ResilientWorker


async def _open_pool(conninfo: str, timeout: float):
    """The worker's connection pool, opened with a bounded wait (procrastinate's own waits 30 s)."""
    import psycopg_pool

    pool = psycopg_pool.AsyncConnectionPool(
        conninfo, min_size=1, max_size=4, open=False, check=psycopg_pool.AsyncConnectionPool.check_connection,
        kwargs={"application_name": "kaizen-worker", "connect_timeout": 5})
    try:
        await pool.open(wait=True, timeout=timeout)
    except BaseException:
        await pool.close()
        raise
    return pool


async def _run_once(app, conninfo: str, resources: Resources, *, concurrency: int, once: bool,
                    install_signal_handlers: bool, name: str, open_timeout: float) -> bool:
    """One worker session; True when it ended because it was asked to (a signal, or `once` and the queue is
    empty), False when procrastinate stopped it on its own (a side task such as the heartbeat lost the database)."""
    import contextlib

    from procrastinate import signals

    stalled = resources.settings.worker_stalled_seconds
    pool = await _open_pool(conninfo, open_timeout)
    try:
        async with app.open_async(pool):
            await retry_stalled_jobs(app, stalled)
            worker = _resilient_worker_class()(
                reconnect_seconds=float(resources.settings.worker_reconnect_seconds), app=app, name=name,
                concurrency=concurrency, wait=not once, install_signal_handlers=False,
                additional_context={"kaizen": resources}, stalled_worker_timeout=stalled,
                update_heartbeat_interval=max(1.0, stalled / 3), fetch_job_polling_interval=5.0,
                delete_jobs="never",
            )
            asked = {"stop": once}
            loop = asyncio.get_running_loop()
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            second: list[int] = []

            def hurry(signum: int) -> None:  # a second SIGINT/SIGTERM: hand the running job back, exit now
                if not second:
                    second.append(signum)
                    loop.create_task(_hand_back_and_exit(app, worker, resources.store, signum))

            def stop() -> None:  # the first SIGINT/SIGTERM finishes the running job; a second one hands it back
                # the second signal's handler first: procrastinate has just put the process's own handlers back,
                # and a second signal landing on those would raise inside the event loop instead of hurrying
                if install_signal_handlers:
                    for sig in previous:
                        loop.add_signal_handler(sig, hurry, sig)
                asked["stop"] = True
                log.warning("stopping after the running job (a second SIGINT or SIGTERM stops now and hands it "
                            "back to the queue)")
                worker.stop()

            try:
                with signals.on_stop(stop) if install_signal_handlers else contextlib.nullcontext():
                    await worker.run()
            finally:
                if asked["stop"] and install_signal_handlers:
                    for sig, handler in previous.items():
                        loop.remove_signal_handler(sig)
                        signal.signal(sig, handler)
            return asked["stop"]
    finally:
        await pool.close()


async def _hand_back_and_exit(app, worker, store, signum: int) -> None:
    """Put the jobs this worker holds back in the queue and end the process now: a job's thread cannot be stopped,
    and waiting for it is what the first signal already does. What atexit would do for the store (stop the
    embedded server when this is its last user) is done here first, since os._exit skips atexit."""
    from datetime import datetime, timezone

    try:
        held = await app.job_manager.list_jobs_async(worker_id=worker.worker_id, status="doing") \
            if worker.worker_id is not None else []
        for job in held:
            await app.job_manager.retry_job_by_id_async(job.id, retry_at=datetime.now(timezone.utc))
            log.warning("job %s (%s) handed back to the queue", job.id, job.task_name)
        if worker.worker_id is not None:
            await app.job_manager.unregister_worker(worker.worker_id)
    except Exception as exc:  # the database is gone: the job is retried once its heartbeat stops
        log.warning("could not hand the running job back (%s); it is retried when its heartbeat stops", exc)
    finally:
        store.close()
        if store.embedded:
            from store.embedded_server import release

            release()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)


def run_worker(store, *, concurrency: int = 1, once: bool = False, resources: Resources | None = None,
               settings: EvalSettings | None = None, install_signal_handlers: bool = True,
               name: str = "kaizen") -> None:
    """Process jobs until stopped (SIGINT/SIGTERM finish the running job first), or with `once` until the queue is
    empty. Raises WorkerStopped when the database stays unreachable longer than the reconnect budget."""
    from agent.llm import yield_to
    from agent.turns import PersonFirst
    from store.database import libpq_url

    settings = settings or EvalSettings()
    resources = resources or Resources(store, settings=settings)
    conninfo = libpq_url(store.url)
    # The worker's model pauses while a person is being answered (a lower priority alone does not stop two
    # processes that each use both cores from halving each other's speed).
    yield_to(PersonFirst(store).wait)
    errors = _connection_errors()
    lost_since: float | None = None
    while True:
        app = build_app(conninfo, resources.settings)
        attempt_started = time.monotonic()
        try:
            if asyncio.run(_run_once(app, conninfo, resources, concurrency=concurrency, once=once,
                                     install_signal_handlers=install_signal_handlers, name=name,
                                     open_timeout=float(min(10, max(2, settings.worker_reconnect_seconds))))):
                return
            raise WorkerInterrupted("procrastinate stopped the worker after a database error in a side task")
        except (*errors, WorkerInterrupted) as exc:
            now = time.monotonic()
            if lost_since is None or now - attempt_started > 10:  # it had been running: a new outage
                lost_since = now
            if now - lost_since >= settings.worker_reconnect_seconds:
                raise WorkerStopped(
                    f"lost the database ({_reason(exc)}) and could not reconnect for "
                    f"{settings.worker_reconnect_seconds}s; "
                    "the worker stopped: start `kaizen worker` again when the database is back "
                    "(jobs it held are retried then)") from exc
            log.warning("lost the database (%s); reconnecting", _reason(exc))
            time.sleep(min(5.0, max(0.5, settings.worker_reconnect_seconds / 10)))
            continue
