"""`kaizen sql`: run one statement for a person, read-only unless they ask for writes."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .database import Store
from .errors import KaizenError


class SqlError(KaizenError, ValueError):
    pass


@dataclass
class SqlResult:
    columns: list[str]
    rows: list[tuple]
    status: str


def run_sql(store: Store, statement: str, *, write: bool = False, max_rows: int = 10000) -> SqlResult:
    """Execute exactly one statement. Read-only runs in a READ ONLY transaction; the statement goes through the
    extended protocol as a prepared statement, so `COMMIT; DELETE ...` cannot smuggle a second command out."""
    if not statement.strip():
        raise SqlError("no SQL statement given")
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        import psycopg

        try:
            with raw.transaction():
                if not write:
                    raw.execute("SET TRANSACTION READ ONLY")
                cur = _vectors_as_text(raw.cursor())
                cur.execute(statement, prepare=True)
                columns = [d.name for d in cur.description] if cur.description else []
                rows = cur.fetchmany(max_rows) if cur.description else []
                status = cur.statusmessage or ""
        except psycopg.errors.ReadOnlySqlTransaction:
            raise SqlError(
                "this statement writes to the database; `kaizen sql` is read-only unless you add --write"
            ) from None
        except psycopg.Error as exc:
            message = (exc.diag.message_primary if getattr(exc, "diag", None) else None) or str(exc)
            if "multiple commands" in message:
                message = "give one statement at a time"
            raise SqlError(message) from None
    return SqlResult(columns, [tuple(r) for r in rows], status)


def _vectors_as_text(cursor):
    """Vectors shown as PostgreSQL prints them (`[0.1,0.2]`), not as the `pgvector.Vector` objects that the
    adapter registered on the store's connections (store.database) reads them into."""
    from psycopg.types.string import TextLoader

    info = cursor.adapters.types.get("vector")
    if info is not None:
        cursor.adapters.register_loader(info.oid, TextLoader)
        cursor.adapters.register_loader(info.array_oid, TextLoader)
    return cursor


def schema_markdown(store: Store) -> str:
    """The schema as Markdown, read from the database itself (tables, views, columns and their comments)."""
    with store.session() as s:
        relations = s.execute(sa.text(
            """
            SELECT c.relname, CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, obj_description(c.oid, 'pg_class')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v') AND c.relname <> 'alembic_version'
              AND c.relname NOT LIKE 'procrastinate%' AND c.relname NOT LIKE 'checkpoint%'
            ORDER BY c.relkind, c.relname
            """
        )).all()
        columns = s.execute(sa.text(
            """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = current_schema() AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY c.relname, a.attnum
            """
        )).all()
    by_table: dict[str, list] = {}
    for table, name, type_, notnull in columns:
        by_table.setdefault(table, []).append((name, type_, notnull))
    lines = []
    for name, kind, comment in relations:
        lines.append(f"### {kind} `{name}`")
        if comment:
            lines.append("")
            lines.append(comment)
        lines.append("")
        lines.append("| column | type |")
        lines.append("|---|---|")
        for col, type_, notnull in by_table.get(name, []):
            lines.append(f"| `{col}` | {type_}{' not null' if notnull and kind == 'table' else ''} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
