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
    agent_message = _explain_agent(exc)
    if agent_message is not None:
        return agent_message
    import sqlalchemy as sa

    if isinstance(exc, sa.exc.OperationalError):
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"lost the connection to the database: {detail}"
    if isinstance(exc, sa.exc.DBAPIError):
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"database error: {detail}"
    return None


def _explain_agent(exc: BaseException) -> str | None:
    """The answering side: model files and settings, questions, feedback, the checkpointer's own connection."""
    from .model_files import ModelFileError

    if isinstance(exc, ModelFileError):
        return str(exc)
    from .llm import LLMError

    if isinstance(exc, LLMError):
        return str(exc)
    from .graph import QuestionError
    from .recorder import FeedbackError

    if isinstance(exc, (QuestionError, FeedbackError)):
        return str(exc)
    from langgraph.errors import GraphRecursionError

    if isinstance(exc, GraphRecursionError):
        return "the answer took more steps than its caps allow (KAIZEN_MAX_REWRITES / KAIZEN_MAX_REGENERATIONS)"
    import psycopg
    import psycopg_pool

    if isinstance(exc, (psycopg.OperationalError, psycopg_pool.PoolTimeout)):
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"lost the connection to the database: {detail}"
    if isinstance(exc, psycopg.Error):
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"database error: {detail}"
    return None
