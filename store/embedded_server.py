"""The zero-setup database: a real PostgreSQL 16 + pgvector from the `pgserver` wheel, under $KAIZEN_HOME.

Several processes (a REPL and a worker) attach to the same server; pgserver counts its users in a handle file
and stops the server when the last one exits. A process killed with SIGKILL never removes itself from that
file, which would keep the server alive for ever (or, worse, make a later process think it is not the last),
so stale pids are pruned under pgserver's own inter-process lock before attaching.

pgserver does its part at exit (atexit), which Python's default SIGTERM skips; the CLI turns SIGTERM into an
exception for that reason (cli.main). `release` does the same part sooner: a benchmark's store deletes its
temporary server when it is closed, and a worker stopping at once (os._exit) detaches before it goes.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

DATABASE_NAME = "kaizen"


def _prune_stale_handles(pgdata: Path, *, keep_self: bool = False) -> list[int]:
    """Remove the pids of processes that no longer run from pgserver's handle file (and this process's own,
    before it attaches, unless `keep_self`); returns the removed ones."""
    import psutil

    handle_file = pgdata / ".handle_pids.json"
    if not handle_file.exists():
        return []
    try:
        pids = json.loads(handle_file.read_text() or "[]")
    except (OSError, ValueError):
        pids = []
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p) and (keep_self or p != os.getpid())]
    stale = [p for p in pids if p not in alive]
    if stale:
        handle_file.write_text(json.dumps(alive))
        log.info("removed stale pgserver handles %s", stale)
    return stale


def _prune_before_exit(pgdata: Path) -> None:
    from pgserver.postgres_server import PostgresServer

    try:
        with PostgresServer._lock:
            _prune_stale_handles(pgdata, keep_self=True)
    except Exception:  # never stand in the way of the process exiting
        log.debug("could not prune pgserver handles at exit", exc_info=True)


@contextmanager
def _sigterm_held() -> Iterator[None]:
    held = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if held:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def release(pgdata: Path | None = None) -> None:
    """Detach this process now from the embedded server in `pgdata` (default: every one it attached to), as its
    exit would: a server whose last user this was is stopped, and an ephemeral one's data directory deleted."""
    from pgserver.postgres_server import PostgresServer

    wanted = None if pgdata is None else Path(pgdata).expanduser().resolve()
    for path, server in list(PostgresServer._instances.items()):
        if wanted is None or path == wanted:
            _prune_before_exit(path)
            server._cleanup()


def start(pgdata: Path, *, ephemeral: bool = False) -> str:
    """Start (or attach to) the embedded server; return a SQLAlchemy URL of the `kaizen` database.
    An ephemeral server (benchmarks) is stopped and its data directory deleted when the process exits."""
    pgdata = Path(pgdata).expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    import pgserver
    from pgserver.postgres_server import PostgresServer

    if pgdata.exists():
        with PostgresServer._lock:
            _prune_stale_handles(pgdata)
    # A SIGTERM while pgserver starts the server, before it counts this process as a user, would leave a server
    # that nobody stops: the signal waits until the start is over (its handler then raises as usual).
    with _sigterm_held():
        server = pgserver.get_server(pgdata, cleanup_mode="delete" if ephemeral else "stop")
        # pgserver stops the server at exit when this process is its last user; a user killed with SIGKILL
        # meanwhile would still be counted. atexit runs last-registered first: this prunes just before pgserver.
        atexit.register(_prune_before_exit, pgdata)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        try:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        except Exception:  # another process created it between the check and here
            log.debug("CREATE DATABASE raced", exc_info=True)
    uri = server.get_uri(DATABASE_NAME)
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)
