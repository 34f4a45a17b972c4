"""The background worker's job queue: procrastinate's own schema (tables procrastinate_*), in Kaizen's database.

The SQL is the one the installed procrastinate ships (`SchemaManager.get_schema()`), applied here so the queue
comes up with the other tables through the same append-only chain. A later procrastinate release that changes its
schema needs a new revision applying that release's migration files (procrastinate/sql/migrations).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    import procrastinate
    from procrastinate.schema import SchemaManager

    # PL/pgSQL bodies hold `%` and `:` that SQLAlchemy's text() or a parameterised call would try to bind, so the
    # script goes to psycopg without parameters (one simple-protocol script, inside the migration's transaction).
    driver = op.get_bind().connection.driver_connection
    driver.execute(SchemaManager.get_schema())
    note = (f"Background jobs (procrastinate {procrastinate.__version__} schema, applied by Kaizen migration 0004)"
            ": one row per job; the worker that holds it, its status, attempts.")
    driver.execute(f"COMMENT ON TABLE procrastinate_jobs IS '{note}'")


def downgrade() -> None:
    raise NotImplementedError("Kaizen's migrations are append-only")
