"""Query-time retrieval parameters belong to a KB version, and a person can pin one.

`kb_versions.search_params`: the values this version was tuned to by the planner's `tune_search` (fusion weights,
sentence weight, candidates); a key that is not there comes from the settings, so a fresh ingest searches exactly
as configured. `kb_pins`: a parameter a person fixed with `kaizen kb pin`; it wins over the settings and every
version's tuned value, and the tuner never varies it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE kb_versions ADD COLUMN search_params jsonb NOT NULL DEFAULT '{}'::jsonb")
    op.execute(
        """
        CREATE TABLE kb_pins (
            name       text PRIMARY KEY,
            value      jsonb NOT NULL,
            actor      text NOT NULL,
            pinned_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "COMMENT ON COLUMN kb_versions.search_params IS 'Query-time retrieval parameters this version was tuned to "
        "(fusion_alpha, cjk_fusion_alpha, sentence_weight, search_candidates); missing keys come from the settings, "
        "kb_pins win over both.'"
    )
    op.execute(
        "COMMENT ON TABLE kb_pins IS 'Retrieval parameters a person pinned (kaizen kb pin): applied over the settings "
        "and every version''s tuned values, never varied by the tuner.'"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
