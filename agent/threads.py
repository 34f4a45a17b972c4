"""Conversations are threads checkpointed in Postgres (langgraph-checkpoint-postgres, in Kaizen's own database),
so a thread can be resumed after a restart; the list of threads comes from the `thread_overview` view."""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from store import locks


def new_thread_id() -> str:
    return "t-" + secrets.token_hex(4)


def serializer():
    """LangGraph's checkpoint serializer, told which of the state's own types it may rebuild (agent.state.Hit and
    Grade): unlisted, each one read back from a checkpoint logs a warning, and a later LangGraph refuses it."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from .state import CHECKPOINTED_TYPES

    return JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINTED_TYPES)


class Checkpoints:
    """A PostgresSaver over a small connection pool on the store's database (tables created on first use)."""

    def __init__(self, store):
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        from store.database import libpq_url

        self.pool = ConnectionPool(
            conninfo=libpq_url(store.url),
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            check=ConnectionPool.check_connection,
            open=True,
            timeout=30,
        )
        self.saver = PostgresSaver(self.pool, serde=serializer())
        # Two processes starting at once (REPL + worker) must not race the checkpointer's own migrations.
        with self.pool.connection() as conn, locks.session_lock(conn, locks.THREAD_SETUP):
            self.saver.setup()

    def close(self) -> None:
        self.pool.close()


def list_threads(store, limit: int = 20) -> list[dict]:
    with store.session() as s:
        rows = s.execute(
            sa.text("SELECT thread_id, turns, started_at, last_at, first_question FROM thread_overview "
                    "ORDER BY last_at DESC LIMIT :n"),
            {"n": limit},
        ).mappings().all()
    return [dict(r) for r in rows]


def thread_exists(store, thread_id: str) -> bool:
    with store.session() as s:
        return s.execute(sa.text("SELECT 1 FROM interactions WHERE thread_id = :t LIMIT 1"),
                         {"t": thread_id}).first() is not None


def thread_of_reply(store, question: str, reply: str) -> str | None:
    """The thread in which Kaizen answered `question` with the answer `reply` holds (a client's copy of the answer,
    which may carry more around it, such as a sources footer); the latest such turn when there are several, None
    when there is none. `kaizen serve` finds the thread of a conversation that a client sends whole with each
    question this way."""
    if not question or not reply:
        return None
    with store.session() as s:
        return s.execute(
            sa.text("SELECT thread_id FROM interactions WHERE question = :q AND btrim(answer) <> '' "
                    "AND strpos(:reply, btrim(answer)) > 0 ORDER BY id DESC LIMIT 1"),
            {"q": question.replace("\x00", " "), "reply": reply.replace("\x00", " ")},
        ).scalar()
