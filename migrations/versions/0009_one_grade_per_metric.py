"""One worker grade per interaction and metric: a retried or doubled `evaluate_interaction` job cannot write a
second set of scores.

The grades of recorded answers (`eval_scores` rows with an interaction and no run) get a unique index on
(interaction_id, metric); eval.judging.scores writes them with ON CONFLICT, so grading an interaction again
(a job retried after its first attempt committed, two workers on one job, `kaizen eval score` by hand) replaces
the grade instead of adding one. Scores inside an evaluation run (run_id set) are not affected. Duplicates an
earlier version may have written are removed first, keeping the latest of each.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DELETE FROM eval_scores a USING eval_scores b
        WHERE a.run_id IS NULL AND b.run_id IS NULL AND a.interaction_id IS NOT NULL
          AND a.interaction_id = b.interaction_id AND a.metric = b.metric AND a.id < b.id
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX eval_scores_one_grade ON eval_scores (interaction_id, metric) "
        "WHERE interaction_id IS NOT NULL AND run_id IS NULL"
    )
    op.execute(
        "COMMENT ON INDEX eval_scores_one_grade IS 'One grade of a recorded answer per metric (outside evaluation "
        "runs): grading it again replaces the grade (eval.judging.scores).'"
    )


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
