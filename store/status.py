"""What `kaizen status` reports about the store: where the database is, the counts, the active KB version."""

from __future__ import annotations

import sqlalchemy as sa


def has_documents(store) -> bool:
    """Whether the knowledge base holds any document (`kaizen ingest --if-empty`)."""
    with store.session() as s:
        return bool(s.execute(sa.text("SELECT count(*) FROM documents")).scalar_one())


def own_documents(store) -> int:
    """Active documents a person put in (`kaizen ingest --sample` loads only when there are none): not the sample,
    not the pages of the older sample (store/sample_kb), not a /bad correction (`kaizen://feedback/ID`)."""
    from .ingest import LEGACY_SAMPLE_URI_PATTERN, SAMPLE_URI_PREFIX

    with store.session() as s:
        return s.execute(sa.text(
            "SELECT count(*) FROM documents WHERE status = 'active' AND NOT starts_with(source_uri, :sample) "
            "AND NOT starts_with(source_uri, 'kaizen://feedback/') AND source_uri NOT LIKE :legacy"
        ), {"sample": SAMPLE_URI_PREFIX, "legacy": LEGACY_SAMPLE_URI_PATTERN}).scalar_one()


def status_data(store) -> dict:
    """`kaizen status --json`: the database, the counts, the active KB version and the models."""
    from .database import describe_url
    from .embeddings import MODEL_NAME
    from .kb_versions import active_version
    from .lexical import CURRENT_SCHEME
    from .roles import inspect_reader

    with store.session() as s:
        reader = inspect_reader(s.connection())
        shared_buffers = s.execute(sa.text("SELECT current_setting('shared_buffers')")).scalar_one()
        version = active_version(s)
        docs = dict(s.execute(sa.text("SELECT status, count(*) FROM documents GROUP BY status")).all())
        chunks = s.execute(sa.text("SELECT count(*) FROM active_chunks")).scalar_one()
        # Chunks indexed before sentence vectors (migration 0006) are scored by their chunk vector alone.
        without_sentences = s.execute(sa.text(
            "SELECT count(*) FROM active_chunks a JOIN chunks c USING (id) WHERE c.sentence_embeddings IS NULL"
        )).scalar_one()
        versions = dict(s.execute(sa.text("SELECT status, count(*) FROM kb_versions GROUP BY status")).all())
        retired_chunks = s.execute(sa.text(
            "SELECT count(*) FROM chunks c JOIN kb_versions v ON v.id = c.kb_version AND v.status = 'retired'"
        )).scalar_one()
    caps = store.capabilities
    return {
        "database": {
            "embedded": store.embedded,
            "location": str(store.settings.pgdata) if store.embedded else None,
            "url": describe_url(store.url),
            "server_version": caps.server_version,
            "pgvector_version": caps.pgvector_version,
            "iterative_index_scans": caps.iterative_index_scans,
            # the page cache: what a search at scale reads from memory (KAIZEN_PG_SHARED_BUFFERS_MB when embedded)
            "shared_buffers": shared_buffers,
            # the role `kaizen sql` reads as without --write (store/roles.py); problem: why it cannot be used
            # (the fix, which holds its password, is what `kaizen sql` prints)
            "reader_role": None if reader is None else {
                "name": reader.role, "ready": reader.ready, "problem": reader.problem},
        },
        "kaizen_home": str(store.settings.home),
        "documents": {"active": docs.get("active", 0), "missing": docs.get("missing", 0)},
        "active_chunks": chunks,
        "active_chunks_without_sentence_vectors": without_sentences,
        "kb_versions": versions,
        "retired_chunks": retired_chunks,
        "active_kb_version": None if version is None else {
            "id": version.id, "reason": version.reason, "embedding_model": version.embedding_model,
            "embedding_dim": version.embedding_dim, "text_search_config": version.text_search_config,
            "chunk_tokens": version.chunk_tokens, "chunk_overlap": version.chunk_overlap,
            "lexical_scheme": version.lexical_scheme,
            # A version indexed with an older scheme still searches correctly; `kaizen reindex` upgrades it.
            "lexical_scheme_current": version.lexical_scheme == CURRENT_SCHEME,
        },
        "models": {"embedding": f"{MODEL_NAME} ({store.settings.embedder} runtime)"},
    }
