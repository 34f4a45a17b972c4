"""Chunks carry one vector per sentence beside their own.

Search scores a chunk by its best sentence as well as by its whole text (store/search.py); the chunk's own vector
is the normalised mean of its sentence vectors (store/indexing.py). Chunks of KB versions built before this
revision have no sentence vectors (NULL) and are scored by their chunk vector alone until `kaizen reindex`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE chunks ADD COLUMN sentence_embeddings vector[]")
    op.execute(
        "COMMENT ON COLUMN chunks.sentence_embeddings IS 'One embedding per sentence of search_text "
        "(store/sentences.py), "
        "each sentence embedded with the document title; embedding is their normalised mean. NULL in KB versions "
        "built before sentence vectors.'"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
