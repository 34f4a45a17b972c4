"""Engine and sessions: the embedded server by default, or any PostgreSQL with pgvector via KAIZEN_DATABASE_URL.

Opening the store runs the Alembic migrations (append-only, in `migrations/`) and checks the server and
pgvector versions; newer pgvector features are detected and reported in `Capabilities`, never assumed.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from . import locks
from .errors import KaizenError
from .settings import StoreSettings

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 14
MIN_PGVECTOR = (0, 5, 0)


class StoreUnavailable(KaizenError, RuntimeError):
    """The database cannot be reached or is not usable; the message is one line meant for a person."""


@dataclass(frozen=True)
class Capabilities:
    server_version: str
    pgvector_version: str
    iterative_index_scans: bool  # pgvector >= 0.8
    halfvec: bool  # pgvector >= 0.7


ITERATIVE_SCAN_VERSION = (0, 8)  # pgvector's hnsw.iterative_scan


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and use the psycopg 3 driver for them."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise StoreUnavailable(f"KAIZEN_DATABASE_URL must be a postgresql:// URL, got {parsed.drivername}://")
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The store's SQLAlchemy URL (`postgresql+psycopg://...`) as a plain libpq URL, for psql and for psycopg
    pools opened beside SQLAlchemy (the LangGraph checkpointer, the job queue)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def describe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


class Store:
    """One process's handle on the knowledge store."""

    def __init__(self, settings: StoreSettings | None = None, *, migrate: bool = True, ephemeral: bool = False):
        self.settings = settings or StoreSettings()
        self.embedded = self.settings.database_url is None
        self.ephemeral = ephemeral
        if self.embedded:
            from . import embedded_server

            try:
                url = embedded_server.start(self.settings.pgdata, ephemeral=ephemeral)
            except Exception as exc:  # pgserver raises several kinds; the person needs one line
                raise StoreUnavailable(
                    f"could not start the embedded PostgreSQL in {self.settings.pgdata}: {exc}"
                ) from exc
        else:
            url = normalise_url(self.settings.database_url)
        self.url = url
        self.engine: Engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        self._vector_unregistered = False
        sa.event.listen(self.engine, "connect", self._register_vector)
        self.capabilities = self._check_server()
        # Only a size a person chose is written: left unset, a size set by hand (ALTER SYSTEM) stays.
        if self.embedded and "pg_shared_buffers_mb" in self.settings.model_fields_set:
            try:
                note = embedded_server.configure(self.engine, self.settings.pg_shared_buffers_mb)
            except sa.exc.SQLAlchemyError as exc:  # the server still works with the size it has
                note = f"could not set the embedded server's shared buffers: {str(exc).splitlines()[0]}"
            if note:
                log.info(note)
        # Each session carries what the server can do, so search need not ask it again (store.search).
        self._sessions = sessionmaker(self.engine, expire_on_commit=False,
                                      info={"capabilities": self.capabilities})
        if migrate:
            self.migrate()

    def _register_vector(self, dbapi_connection, _record) -> None:
        """pgvector's psycopg adapter on every new connection: a numpy array is sent as a `vector` (binary), a
        list of them as a `vector[]`, and both come back as `pgvector.Vector`. A database not migrated yet has
        no vector type to register: `migrate` then closes the connections opened before it created one."""
        import psycopg
        from pgvector.psycopg import register_vector

        try:
            register_vector(dbapi_connection)
        except psycopg.ProgrammingError:  # "vector type not found in the database"
            self._vector_unregistered = True

    # -- connection checks -------------------------------------------------------------------------------
    def _check_server(self) -> Capabilities:
        try:
            with self.engine.connect() as conn:
                server_num = conn.execute(sa.text("SHOW server_version_num")).scalar_one()
                server_version = conn.execute(sa.text("SHOW server_version")).scalar_one()
                available = conn.execute(
                    sa.text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
                ).scalar()
                installed = conn.execute(
                    sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                ).scalar()
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise StoreUnavailable(f"cannot reach the database at {describe_url(self.url)}: {reason}") from exc
        if int(server_num) < MIN_SERVER_VERSION * 10000:
            raise StoreUnavailable(
                f"PostgreSQL {server_version} is too old: Kaizen needs {MIN_SERVER_VERSION} or newer"
            )
        version = installed or available
        if not version:
            raise StoreUnavailable(
                f"the database at {describe_url(self.url)} has no pgvector extension available: install pgvector >= 0.5"
            )
        if version_tuple(version) < MIN_PGVECTOR:
            raise StoreUnavailable(f"pgvector {version} is too old: Kaizen needs 0.5 or newer")
        return Capabilities(
            server_version=server_version,
            pgvector_version=version,
            iterative_index_scans=version_tuple(version) >= ITERATIVE_SCAN_VERSION,
            halfvec=version_tuple(version) >= (0, 7, 0),
        )

    # -- migrations ----------------------------------------------------------------------------------------
    _migrate_lock = threading.Lock()

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.util.exc import CommandError

        import migrations

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
        cfg.attributes["engine"] = self.engine
        with self._migrate_lock, self.engine.begin() as conn:
            # Concurrent starters (REPL + worker) serialise on an advisory lock instead of racing DDL.
            locks.hold(conn, locks.MIGRATIONS)
            cfg.attributes["connection"] = conn
            try:
                command.upgrade(cfg, "head")
            except CommandError as exc:
                if "Can't locate revision" not in str(exc):
                    raise
                current = conn.execute(sa.text("SELECT string_agg(version_num, ', ') FROM alembic_version")).scalar()
                raise StoreUnavailable(
                    f"the database at {describe_url(self.url)} has schema revision {current}, which this Kaizen "
                    "does not know: a newer Kaizen migrated it. Upgrade Kaizen, or point KAIZEN_HOME or "
                    "KAIZEN_DATABASE_URL at another database") from exc
        if self._vector_unregistered:  # the pool's connections predate the vector type: open new ones
            self._vector_unregistered = False
            self.engine.dispose()

    # -- sessions ------------------------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any error."""
        with self._sessions() as session:
            with session.begin():
                yield session

    def close(self) -> None:
        """Close the connections; an ephemeral embedded server (a benchmark's) is stopped and deleted now, when this
        process was its last user, rather than at exit."""
        self.engine.dispose()
        if self.embedded and self.ephemeral:
            from . import embedded_server

            embedded_server.release(self.settings.pgdata)
