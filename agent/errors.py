"""Known failures, turned into one line for a person instead of a traceback."""

from __future__ import annotations


def explain(exc: BaseException) -> str | None:
    from store.config import ConfigError
    from store.database import StoreUnavailable
    from store.kb_versions import EmbeddingModelMismatch, NoActiveVersion
    from store.search import SearchError
    from store.sql_console import SqlError

    if isinstance(exc, (ConfigError, StoreUnavailable, EmbeddingModelMismatch, NoActiveVersion, SearchError, SqlError)):
        return str(exc)
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.OperationalError):
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"lost the connection to the database: {detail}"
    if isinstance(exc, sa.exc.DBAPIError):
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"database error: {detail}"
    return None
