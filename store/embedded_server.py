"""The zero-setup database: a real PostgreSQL 16 + pgvector from the `pgserver` wheel, under $KAIZEN_HOME.

Several processes (a REPL and a worker) attach to the same server; pgserver counts its users in a handle file
and stops the server when the last one exits. A process killed with SIGKILL never removes itself from that
file, which would keep the server alive for ever (or, worse, make a later process think it is not the last),
so stale pids are pruned under pgserver's own inter-process lock before attaching.

pgserver does its part at exit (atexit), which Python's default SIGTERM skips; the CLI turns SIGTERM into an
exception for that reason (cli.main). `release` does the same part sooner: a benchmark's store deletes its
temporary server when it is closed, and a worker stopping at once (os._exit) detaches before it goes.

`restart` stops the server and starts it again on the same socket (the soak benchmark's database fault): the
processes attached to it keep their URL and reconnect (their pools check connections). pgserver remembers the
postmaster it first saw, and at exit would not stop one started since; each process looks again just before its
exit, so the last user still stops the server it leaves.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import threading
import time
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


def _refresh_postmaster(pgdata: Path) -> None:
    """Point this process's pgserver handle at the postmaster running now (after a restart underneath it)."""
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import PostmasterInfo

    server = PostgresServer._instances.get(pgdata)
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if server is not None and info is not None and info.is_running():
        server._postmaster_info = info


def _prune_before_exit(pgdata: Path) -> None:
    from pgserver.postgres_server import PostgresServer

    try:
        with PostgresServer._lock:
            _prune_stale_handles(pgdata, keep_self=True)
            _refresh_postmaster(pgdata)
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


def _system_user(pgdata: Path) -> str | None:
    """The OS user pgserver runs the server as (`pgserver` when it runs as root)."""
    from pgserver.postgres_server import PostgresServer

    server = PostgresServer._instances.get(pgdata)
    if server is not None:
        return server.system_user
    return "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _wait_ready(pgdata: Path, timeout: float):
    from pgserver.utils import PostmasterInfo

    deadline = time.monotonic() + timeout
    while True:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is not None and info.is_running() and info.status == "ready":
            return info
        if time.monotonic() > deadline:
            raise RuntimeError(f"the PostgreSQL server in {pgdata} did not come back within {timeout:.0f}s")
        time.sleep(0.2)


def restart(pgdata: Path, *, down_seconds: float = 0.0, timeout: float = 60.0) -> dict:
    """Stop the embedded server in `pgdata` (fast shutdown: every connection is cut), keep it down for
    `down_seconds`, and start it again on the same socket directory, under the processes using it. Returns
    {"stopped_at", "started_at"} (time.time()) and "started_by": "restart", or "another process" when one that
    attached meanwhile started it (pgserver starts a server it finds stopped)."""
    from pgserver._commands import pg_ctl
    from pgserver.postgres_server import PostgresServer
    from pgserver.utils import PostmasterInfo

    pgdata = Path(pgdata).expanduser().resolve()
    user = _system_user(pgdata)
    with PostgresServer._lock:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            raise RuntimeError(f"no PostgreSQL server runs in {pgdata}")
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=timeout)
    stopped_at = time.time()
    time.sleep(max(0.0, down_seconds))
    started_by = "another process"
    with PostgresServer._lock:
        now = PostmasterInfo.read_from_pgdata(pgdata)
        if now is None or not now.is_running():
            if info.socket_dir is not None:
                listen = ["-o", '-h ""', "-o", f"-k {info.socket_dir}"]
            else:
                listen = ["-o", f'-h "{info.hostname}"', "-o", f"-p {info.port}"]
            pg_ctl(["-w", *listen, "-l", str(pgdata / "log"), "start"], pgdata=pgdata, user=user, timeout=timeout)
            started_by = "restart"
        _wait_ready(pgdata, timeout)
        _refresh_postmaster(pgdata)
    return {"stopped_at": stopped_at, "started_at": time.time(), "started_by": started_by}


def configure(engine, shared_buffers_mb: int) -> str | None:
    """Give the embedded server `shared_buffers_mb` of shared buffers from its next start (ALTER SYSTEM, kept in
    pgdata/postgresql.auto.conf; the server stops when its last user leaves, so that is the next session).
    Returns a line for the log when the running server has another size, else None."""
    import sqlalchemy as sa

    wanted = f"{int(shared_buffers_mb)}MB"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        running_mb = conn.execute(sa.text(
            "SELECT setting::bigint * pg_size_bytes(unit) / 1048576 FROM pg_settings WHERE name = 'shared_buffers'"
        )).scalar_one()
        pending = conn.execute(sa.text(
            "SELECT setting FROM pg_file_settings WHERE name = 'shared_buffers' AND applied IS NOT NULL "
            "ORDER BY seqno DESC LIMIT 1"
        )).scalar()
        if pending != wanted and not (pending is None and running_mb == shared_buffers_mb):
            conn.execute(sa.text(f"ALTER SYSTEM SET shared_buffers = '{wanted}'"))
    if running_mb != shared_buffers_mb:
        return f"the embedded server runs with {running_mb} MB of shared buffers; {wanted} from its next start"
    return None


def start(pgdata: Path, *, ephemeral: bool = False) -> str:
    """Start (or attach to) the embedded server; return a SQLAlchemy URL of the `kaizen` database.
    An ephemeral server (benchmarks) is stopped and its data directory deleted when the process exits."""
    pgdata = Path(pgdata).expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    import pgserver
    from pgserver.postgres_server import PostgresServer

    if pgdata.exists():
        with PostgresServer._lock:
            # A second Store of this process on the same server must keep this process's handle: pgserver hands
            # back the instance it has and would not count this process again.
            _prune_stale_handles(pgdata, keep_self=pgdata in PostgresServer._instances)
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
