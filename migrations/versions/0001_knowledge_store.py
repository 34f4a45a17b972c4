"""Knowledge store: KB versions, documents, versioned chunks with vectors and full text, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        CREATE TABLE kb_versions (
            id                 serial PRIMARY KEY,
            parent_id          integer REFERENCES kb_versions(id),
            reason             text NOT NULL,
            status             text NOT NULL
                               CHECK (status IN ('building', 'candidate', 'active', 'retired', 'rolled_back')),
            embedding_model    text NOT NULL,
            embedding_dim      integer NOT NULL CHECK (embedding_dim > 0),
            text_search_config regconfig NOT NULL,
            chunk_tokens       integer NOT NULL,
            chunk_overlap      integer NOT NULL,
            metrics            jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at         timestamptz NOT NULL DEFAULT now(),
            activated_at       timestamptz
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX kb_versions_one_active ON kb_versions ((true)) WHERE status = 'active'")
    op.execute(
        """
        CREATE TABLE documents (
            id            bigserial PRIMARY KEY,
            source_uri    text NOT NULL UNIQUE,
            source_path   text NOT NULL,
            source_id     text,
            title         text NOT NULL DEFAULT '',
            content_hash  text NOT NULL,
            body          text NOT NULL,
            metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
            status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'missing')),
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX documents_source_path ON documents (source_path)")
    # `embedding` has no fixed dimension so that a re-index into another model can live beside the old version;
    # each KB version gets its own partial HNSW index on embedding::vector(dim) (store/kb_versions.py).
    op.execute(
        """
        CREATE TABLE chunks (
            id              bigserial PRIMARY KEY,
            document_id     bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            kb_version      integer NOT NULL REFERENCES kb_versions(id) ON DELETE CASCADE,
            ordinal         integer NOT NULL,
            text            text NOT NULL,
            search_text     text NOT NULL,
            embedding       vector NOT NULL,
            tsv             tsvector NOT NULL,
            lexical_length  integer NOT NULL,
            token_count     integer NOT NULL,
            origin          text NOT NULL DEFAULT 'original'
                            CHECK (origin IN ('original', 'rewritten', 'enrichment', 'user')),
            derived_from    bigint REFERENCES chunks(id) ON DELETE SET NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            UNIQUE (kb_version, document_id, ordinal)
        )
        """
    )
    op.execute("CREATE INDEX chunks_tsv ON chunks USING gin (tsv)")
    op.execute("CREATE INDEX chunks_document ON chunks (document_id)")
    op.execute(
        """
        CREATE TABLE ingest_runs (
            id           bigserial PRIMARY KEY,
            kb_version   integer REFERENCES kb_versions(id) ON DELETE SET NULL,
            paths        text[] NOT NULL,
            added        integer NOT NULL DEFAULT 0,
            updated      integer NOT NULL DEFAULT 0,
            unchanged    integer NOT NULL DEFAULT 0,
            missing      integer NOT NULL DEFAULT 0,
            failed       integer NOT NULL DEFAULT 0,
            chunks       integer NOT NULL DEFAULT 0,
            errors       jsonb NOT NULL DEFAULT '[]'::jsonb,
            started_at   timestamptz NOT NULL DEFAULT now(),
            finished_at  timestamptz
        )
        """
    )
    op.execute(
        """
        CREATE TABLE kb_changes (
            id              bigserial PRIMARY KEY,
            kind            text NOT NULL,
            kb_version      integer REFERENCES kb_versions(id) ON DELETE SET NULL,
            document_id     bigint REFERENCES documents(id) ON DELETE SET NULL,
            target          text,
            before          jsonb,
            after           jsonb,
            metrics_before  jsonb,
            metrics_after   jsonb,
            decision        text NOT NULL DEFAULT 'applied',
            actor           text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX kb_changes_created ON kb_changes (created_at)")
    # Views meant for people at the SQL console.
    op.execute(
        """
        CREATE VIEW active_chunks AS
        SELECT c.id, c.document_id, d.source_uri, d.title, c.ordinal, c.origin, c.token_count, c.text,
               c.kb_version
        FROM chunks c
        JOIN kb_versions v ON v.id = c.kb_version AND v.status = 'active'
        JOIN documents d ON d.id = c.document_id AND d.status = 'active'
        """
    )
    op.execute(
        """
        CREATE VIEW document_overview AS
        SELECT d.id, d.source_uri, d.title, d.status, d.updated_at,
               count(c.id) AS active_chunks, coalesce(sum(c.token_count), 0) AS active_tokens
        FROM documents d
        LEFT JOIN chunks c ON c.document_id = d.id
             AND c.kb_version = (SELECT id FROM kb_versions WHERE status = 'active')
        GROUP BY d.id
        """
    )
    op.execute(
        """
        CREATE VIEW kb_version_overview AS
        SELECT v.id, v.status, v.reason, v.parent_id, v.embedding_model, v.created_at, v.activated_at,
               (SELECT count(*) FROM chunks c WHERE c.kb_version = v.id) AS chunks,
               (SELECT count(DISTINCT c.document_id) FROM chunks c WHERE c.kb_version = v.id) AS documents,
               v.metrics
        FROM kb_versions v
        """
    )

    comments = {
        "kb_versions": "Versions of the knowledge base. Exactly one is active; candidates are built beside it and "
        "switched in one transaction. Each has its own partial HNSW index chunks_embedding_v<id>.",
        "documents": "One row per source (a file, or a line of a .jsonl corpus). body is the full text; status "
        "'missing' means the source vanished on a later ingest.",
        "chunks": "Chunks of documents, per KB version. text is shown and cited; search_text (text plus title and "
        "any enrichment) is what is embedded and indexed; tsv holds its lexemes (CJK as character bigrams).",
        "ingest_runs": "One row per `kaizen ingest` run with its counts and the per-source errors.",
        "kb_changes": "Audit log of every change Kaizen made to the knowledge base: ingests, re-indexes, version "
        "switches, repairs, with metrics before and after and the decision taken.",
        "active_chunks": "The chunks a question is answered from: active KB version, active documents.",
        "document_overview": "Each document with its number of chunks and tokens in the active KB version.",
        "kb_version_overview": "Each KB version with its chunk and document counts.",
    }
    for name, text in comments.items():
        kind = "VIEW" if name.endswith(("_chunks", "_overview")) else "TABLE"
        quoted = text.replace("'", "''")
        op.execute(f"COMMENT ON {kind} {name} IS '{quoted}'")


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
