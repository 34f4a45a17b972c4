"""PostgreSQL advisory lock keys, one per purpose, all in one place so that two purposes never share a key.

(They once did: the drift check's alert lock was the reindex lock, so a worker's drift check waited for a whole
`kaizen reindex` or repair to finish.)"""

MIGRATIONS = 7234001  # store.database: one process runs the migrations
FIRST_VERSION = 7234002  # store.kb_versions: two first ingests create one KB version
ABANDONED_VERSIONS = 7234003  # store.reindex: clean versions left `building` by a crash
REINDEX = 7234004  # store.reindex (whole rebuild), the repair planner while it builds, reverts, prunes
PLANNER = 7234005  # eval.repair.planner: one planner at a time; reverts and prunes
THREAD_SETUP = 7234006  # agent.threads: the checkpointer's tables are created once
DRIFT_ALERTS = 7234007  # eval.drift: two workers raise one alert


def hold(session, *keys: int) -> None:
    """Take these transaction-level advisory locks, in order, in the session's (or connection's) transaction."""
    import sqlalchemy as sa

    for key in keys:
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
