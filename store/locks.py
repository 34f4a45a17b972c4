"""PostgreSQL advisory lock keys, one per purpose, all in one place so that two purposes never share a key.

(They once did: the drift check's alert lock was the reindex lock, so a worker's drift check waited for a whole
`kaizen reindex` or repair to finish.)

`hold` takes transaction-level locks (released with the transaction); `session_lock` holds a session-level one
for a block, on a connection of its own."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from .errors import KaizenError

log = logging.getLogger(__name__)

MIGRATIONS = 7234001  # store.database: one process runs the migrations
FIRST_VERSION = 7234002  # store.kb_versions: two first ingests create one KB version
ABANDONED_VERSIONS = 7234003  # store.reindex: clean versions left `building` by a crash
REINDEX = 7234004  # store.reindex (whole rebuild), the repair planner while it builds, reverts, prunes
PLANNER = 7234005  # eval.repair.planner: one planner at a time; reverts and prunes
THREAD_SETUP = 7234006  # agent.threads: the checkpointer's tables are created once
DRIFT_ALERTS = 7234007  # eval.worker.drift: two workers raise one alert
ANSWERING = 7234008  # agent.turns: held shared while a person is being answered; the worker's model waits for it


def hold(session, *keys: int) -> None:
    """Take these transaction-level advisory locks, in order, in the session's (or connection's) transaction."""
    import sqlalchemy as sa

    for key in keys:
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


@contextmanager
def session_lock(connection, key: int, *, wait: bool = True) -> Iterator[bool]:
    """Hold a session-level advisory lock for the block, on a connection of its own (a SQLAlchemy connection, or a
    psycopg one), across as many transactions as the block runs elsewhere; it is released when the block ends,
    also by an exception. Yields whether the lock was taken: always with `wait`, which waits for it; without,
    False at once when another session holds it (the block then runs without the lock, to report that)."""
    if wait:
        _scalar(connection, "pg_advisory_lock", key)
        held = True
    else:
        held = bool(_scalar(connection, "pg_try_advisory_lock", key))
    try:
        yield held
    finally:
        if held:
            try:
                _scalar(connection, "pg_advisory_unlock", key)
            except Exception:
                # The server dropped the session (a restart, a cut connection), and its locks went with it:
                # nothing to release, and the error that stopped the block is the one worth raising.
                if not connection_lost(connection):
                    raise
                log.warning("advisory lock %s: the connection was lost, so the server has already released it", key)


class LockLost(KaizenError):
    """A session-level lock this process held went with its session (a restart, a cut connection): whatever the
    lock guarded must not be committed, and the work may simply run again."""


def still_held(connection) -> bool:
    """Whether the session behind this connection is alive, so the session-level locks taken on it still hold."""
    import sqlalchemy as sa

    try:
        connection.execute(sa.text("SELECT 1"))
    except Exception:
        if connection_lost(connection):
            return False
        raise
    return True


def connection_lost(connection) -> bool:
    """Whether this SQLAlchemy or psycopg connection has seen its session end (invalidated, broken or closed)."""
    return bool(getattr(connection, "invalidated", False) or getattr(connection, "broken", False)
                or getattr(connection, "closed", False))


def take_shared(connection, key: int) -> None:
    """Take a session-level advisory lock in shared mode (any number of holders; a session may take it again)."""
    _scalar(connection, "pg_advisory_lock_shared", key)


def release_shared(connection, key: int) -> None:
    _scalar(connection, "pg_advisory_unlock_shared", key)


def is_held(connection, key: int) -> bool:
    """Whether any session holds this advisory lock (in either mode), read from pg_locks without taking it."""
    import sqlalchemy as sa

    value = connection.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((classid::bigint << 32) | objid::bigint) = :k)"), {"k": key}).scalar()
    connection.commit()
    return bool(value)


def _scalar(connection, function: str, key: int):
    """`SELECT function(key)`, committed, so that the lock's connection is never left idle in a transaction."""
    import sqlalchemy as sa

    if isinstance(connection, sa.Connection):
        value = connection.execute(sa.text(f"SELECT {function}(:k)"), {"k": key}).scalar()
        connection.commit()
    else:  # psycopg (whatever row factory the connection has)
        from psycopg.rows import tuple_row

        with connection.cursor(row_factory=tuple_row) as cursor:
            value = cursor.execute(f"SELECT {function}(%s)", (key,)).fetchone()[0]
        if not connection.autocommit:
            connection.commit()
    return value
