"""KB versions can be pruned: a retired version's chunks and vector index are deleted, its row stays.

Every `kaizen reindex` and every promoted repair retires the previous version with all its chunks (they are what
`kaizen kb revert` re-activates), so without pruning the chunks table grows by one knowledge base per change.
`kaizen kb prune` deletes the chunks of older retired versions and marks them `pruned`; their kb_versions row,
their kb_changes history and the retrievals that named their chunks (chunk_id set to NULL, ranks and scores kept)
stay.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE kb_versions DROP CONSTRAINT kb_versions_status_check")
    op.execute(
        "ALTER TABLE kb_versions ADD CONSTRAINT kb_versions_status_check "
        "CHECK (status IN ('building', 'candidate', 'active', 'retired', 'rolled_back', 'pruned'))"
    )
    op.execute(
        "COMMENT ON COLUMN kb_versions.status IS 'building -> candidate -> active -> retired -> pruned (chunks "
        "deleted by `kaizen kb prune`), or rolled_back (a candidate or an interrupted build; chunks deleted)'"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
