"""Known failures, turned into one line for a person instead of a traceback."""

from __future__ import annotations

from store.errors import KaizenError


def explain(exc: BaseException) -> str | None:
    """The one-line message for a failure Kaizen knows: its own (every `KaizenError` carries one), and the
    database, driver and LangGraph exceptions below. None for anything else: a bug, which keeps its traceback."""
    if isinstance(exc, KaizenError):
        return str(exc)
    from langgraph.errors import GraphRecursionError

    if isinstance(exc, GraphRecursionError):
        return "the answer took more steps than its caps allow (KAIZEN_MAX_REWRITES / KAIZEN_MAX_REGENERATIONS)"
    import psycopg
    import psycopg_pool

    # The checkpointer's own pool talks to psycopg directly; the store goes through SQLAlchemy.
    if isinstance(exc, (psycopg.OperationalError, psycopg_pool.PoolTimeout)):
        return f"lost the connection to the database: {_first_line(exc)}"
    if isinstance(exc, psycopg.Error):
        return f"database error: {_first_line(exc)}"
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.OperationalError):
        return f"lost the connection to the database: {_first_line(getattr(exc, 'orig', exc))}"
    if isinstance(exc, sa.exc.DBAPIError):
        return f"database error: {_first_line(getattr(exc, 'orig', exc))}"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
