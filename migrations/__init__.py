"""Alembic migrations. Append-only: never edit a released revision, add a new one."""
