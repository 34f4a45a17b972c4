"""KB versions record their lexical scheme: how text was turned into the terms of their tsvectors.

Versions made before this revision were indexed with CJK character bigrams alone ('cjk-bigram'); new versions get
the scheme current when they are created (store.lexical.CURRENT_SCHEME). Search prepares a query with its
version's scheme, so an old KB keeps matching until `kaizen reindex` rebuilds it with the current scheme.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE kb_versions ADD COLUMN lexical_scheme text NOT NULL DEFAULT 'cjk-bigram'")
    op.execute(
        "COMMENT ON COLUMN kb_versions.lexical_scheme IS 'How text became tsvector terms (store/lexical.py): "
        "cjk-bigram = CJK runs as character bigrams; cjk-bigram-words = bigrams plus marked Japanese content words. "
        "Queries are prepared with their version''s scheme.'"
    )
    op.execute(
        "COMMENT ON TABLE chunks IS 'Chunks of documents, per KB version. text is shown and cited; search_text (text "
        "plus title and any enrichment) is what is embedded and indexed; tsv holds its lexemes (CJK as character "
        "bigrams, plus Japanese content words under their version''s lexical_scheme).'"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
