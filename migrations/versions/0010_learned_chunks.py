"""Chunks whose indexed text learned the questions they answered: origin `learned` (eval/repair/learning.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE chunks DROP CONSTRAINT chunks_origin_check")
    op.execute("ALTER TABLE chunks ADD CONSTRAINT chunks_origin_check "
               "CHECK (origin IN ('original', 'rewritten', 'enrichment', 'user', 'learned'))")
    op.execute(
        "COMMENT ON COLUMN chunks.origin IS 'Where the indexed text came from: original, rewritten or enrichment "
        "(by the repair model), user (a /bad correction), learned (questions it answered appended by "
        "learn_from_traffic; the shown text is unchanged).'"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
