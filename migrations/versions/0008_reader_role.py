"""The read-only role: `kaizen sql` without --write logs in as `kaizen_reader`, which can only read.

This revision creates the table `reader_role` (the reader's name and the password Kaizen logs in with, generated
here) and nothing else: the role itself, and its SELECT on every table and view, are made by store.roles.
ensure_reader, which migrations/env.py runs after every upgrade, so tables created later (by a later revision, or
by the checkpointer at run time, through ALTER DEFAULT PRIVILEGES) are covered too. An owner that may not create
roles still migrates; `kaizen sql` then says what a superuser can run (store/roles.py explains the roles).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from store.roles import new_password, reader_name

    op.execute(
        """
        CREATE TABLE reader_role (
            role        name PRIMARY KEY,
            password    text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "COMMENT ON TABLE reader_role IS 'The read-only role `kaizen sql` logs in as without --write (one row): its "
        "name and the password Kaizen logs in with. The owner role (the application, `kaizen sql --write`) owns "
        "every table; this role may only SELECT from them (store/roles.py).'"
    )
    database = op.get_bind().execute(sa.text("SELECT current_database()")).scalar_one()
    op.get_bind().execute(sa.text("INSERT INTO reader_role (role, password) VALUES (:r, :p)"),
                          {"r": reader_name(database), "p": new_password()})


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
