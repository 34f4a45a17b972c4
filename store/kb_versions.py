"""KB versions: every chunk belongs to one; exactly one is active; switching is one transaction.

Each version gets its own partial HNSW index over `embedding::vector(dim)`, so versions built with different
embedding models (or a candidate beside the active one) never mix in one index and never dilute each other's
approximate nearest-neighbour results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import locks
from .errors import KaizenError
from .lexical import BIGRAMS, CURRENT_SCHEME
from .settings import StoreSettings


class EmbeddingModelMismatch(KaizenError, RuntimeError):
    pass


class NoActiveVersion(KaizenError, RuntimeError):
    pass


@dataclass(frozen=True)
class KBVersion:
    id: int
    status: str
    reason: str
    parent_id: int | None
    embedding_model: str
    embedding_dim: int
    text_search_config: str
    chunk_tokens: int
    chunk_overlap: int
    lexical_scheme: str = BIGRAMS
    search_params: dict = field(default_factory=dict, compare=False)  # tuned values (store.search_params)
    pins: dict = field(default_factory=dict, compare=False)  # a person's pins, the same for every version


_COLUMNS = ("id, status, reason, parent_id, embedding_model, embedding_dim, text_search_config::text, chunk_tokens, "
            "chunk_overlap, lexical_scheme, search_params, "
            "(SELECT coalesce(jsonb_object_agg(name, value), '{}'::jsonb) FROM kb_pins)")


def get_version(session: Session, version_id: int) -> KBVersion:
    row = session.execute(sa.text(f"SELECT {_COLUMNS} FROM kb_versions WHERE id = :id"), {"id": version_id}).one()
    return KBVersion(*row)


def active_version(session: Session) -> KBVersion | None:
    row = session.execute(sa.text(f"SELECT {_COLUMNS} FROM kb_versions WHERE status = 'active'")).first()
    return KBVersion(*row) if row else None


def require_active(session: Session) -> KBVersion:
    version = active_version(session)
    if version is None:
        raise NoActiveVersion("the knowledge base is empty: add documents with `kaizen ingest PATH`")
    return version


def check_embedding_model(version: KBVersion, name: str, dim: int) -> None:
    if version.embedding_model != name or version.embedding_dim != dim:
        raise EmbeddingModelMismatch(
            f"KB version {version.id} was embedded with {version.embedding_model} ({version.embedding_dim} dims) "
            f"but Kaizen is now configured with {name} ({dim} dims); run `kaizen reindex` to re-embed "
            "the knowledge base with the new model"
        )


def index_name(version_id: int) -> str:
    return f"chunks_embedding_v{int(version_id)}"


# The HNSW graph's build parameters. pgvector's default ef_construction (64) found 0.927 of the exact top ten at
# ef_search 640 on a million synthetic vectors; 128 finds 0.964 at 160 and 0.984 at 320 (p95 5-6 ms) for a build
# 20% longer (kaizen bench scale --n 1000000 --ef-construction 128; docs/scaling.md).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


def create_vector_index(session: Session, version_id: int, dim: int, build_mb: int | None = None) -> None:
    """The HNSW index of a version's chunks, in the caller's transaction. `build_mb` (KAIZEN_INDEX_BUILD_MB) is the
    memory the build may use where the version already holds its chunks: pgvector builds the graph in
    maintenance_work_mem (PostgreSQL's default is 64 MB) and, once it no longer fits, inserts the rest on disk."""
    if build_mb:
        session.execute(sa.text(f"SET LOCAL maintenance_work_mem = '{int(build_mb)}MB'"))
    session.execute(
        sa.text(
            f"CREATE INDEX IF NOT EXISTS {index_name(version_id)} ON chunks "
            f"USING hnsw ((embedding::vector({int(dim)})) vector_cosine_ops) "
            f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
            f"WHERE kb_version = {int(version_id)}"
        )
    )


def drop_version_chunks(session: Session, version_id: int) -> int:
    """Delete a version's chunks and its vector index, in the caller's transaction; the number of chunks."""
    deleted = session.execute(sa.text("DELETE FROM chunks WHERE kb_version = :v"), {"v": int(version_id)}).rowcount
    session.execute(sa.text(f"DROP INDEX IF EXISTS {index_name(version_id)}"))
    return deleted


def create_version(
    session: Session,
    *,
    reason: str,
    status: str,
    embedding_model: str,
    embedding_dim: int,
    settings: StoreSettings,
    parent_id: int | None = None,
    with_index: bool = True,
    lexical_scheme: str = CURRENT_SCHEME,
    search_params: dict | None = None,
) -> KBVersion:
    """A new version; its tsvectors are to be made with `lexical_scheme` (a candidate derived from a version
    and sharing its chunks passes that version's scheme), and it searches with `search_params` (tuned values,
    store.search_params; a version derived from a tuned one keeps them)."""
    version_id = session.execute(
        sa.text(
            "INSERT INTO kb_versions (parent_id, reason, status, embedding_model, embedding_dim, "
            "text_search_config, chunk_tokens, chunk_overlap, lexical_scheme, search_params, activated_at) "
            "VALUES (:parent, :reason, :status, :model, :dim, CAST(:cfg AS regconfig), :tokens, :overlap, :scheme, "
            "CAST(:params AS jsonb), CASE WHEN :status = 'active' THEN now() END) RETURNING id"
        ),
        {
            "parent": parent_id,
            "reason": reason,
            "status": status,
            "model": embedding_model,
            "dim": embedding_dim,
            "cfg": settings.text_search_config,
            "tokens": settings.chunk_tokens,
            "overlap": settings.chunk_overlap,
            "scheme": lexical_scheme,
            "params": json.dumps(search_params or {}),
        },
    ).scalar_one()
    if with_index:
        create_vector_index(session, version_id, embedding_dim)
    return get_version(session, version_id)


def ensure_active_version(
    session: Session, embedding_model: str, embedding_dim: int, settings: StoreSettings
) -> KBVersion:
    """The active version, created on first use; refuses a KB embedded with another model."""
    # Two first ingests create one version.
    locks.hold(session, locks.FIRST_VERSION)
    version = active_version(session)
    if version is None:
        version = create_version(
            session,
            reason="first ingest",
            status="active",
            embedding_model=embedding_model,
            embedding_dim=embedding_dim,
            settings=settings,
        )
        record_change(session, kind="version_created", kb_version=version.id, target=f"kb_version:{version.id}",
                      after={"status": "active", "reason": "first ingest"}, actor="kaizen ingest")
    check_embedding_model(version, embedding_model, embedding_dim)
    return version


def activate(session: Session, version_id: int, *, actor: str, reason: str, metrics: dict | None = None) -> None:
    """Make `version_id` the active version and retire the previous one, in the caller's transaction."""
    previous = active_version(session)
    session.execute(sa.text("UPDATE kb_versions SET status = 'retired' WHERE status = 'active'"))
    session.execute(
        sa.text("UPDATE kb_versions SET status = 'active', activated_at = now() WHERE id = :id"), {"id": version_id}
    )
    record_change(
        session,
        kind="version_activated",
        kb_version=version_id,
        target=f"kb_version:{version_id}",
        before={"active": previous.id if previous else None},
        after={"active": version_id, "reason": reason},
        metrics_after=metrics,
        actor=actor,
    )


def record_change(session: Session, *, kind: str, actor: str, kb_version: int | None = None,
                  document_id: int | None = None, target: str | None = None, before: dict | None = None,
                  after: dict | None = None, metrics_before: dict | None = None,
                  metrics_after: dict | None = None, decision: str = "applied") -> None:
    session.execute(
        sa.text(
            "INSERT INTO kb_changes (kind, kb_version, document_id, target, before, after, metrics_before, "
            "metrics_after, decision, actor) VALUES (:kind, :v, :doc, :target, CAST(:before AS jsonb), "
            "CAST(:after AS jsonb), CAST(:mb AS jsonb), CAST(:ma AS jsonb), :decision, :actor)"
        ),
        {
            "kind": kind,
            "v": kb_version,
            "doc": document_id,
            "target": target,
            "before": json.dumps(before) if before is not None else None,
            "after": json.dumps(after) if after is not None else None,
            "mb": json.dumps(metrics_before) if metrics_before is not None else None,
            "ma": json.dumps(metrics_after) if metrics_after is not None else None,
            "decision": decision,
            "actor": actor,
        },
    )
