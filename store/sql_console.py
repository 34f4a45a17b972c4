"""`kaizen sql`: run statements for a person, as the read-only role unless they ask for writes.

Without --write the session logs in as the reader role (store.roles): PostgreSQL itself refuses anything but
reading Kaizen's tables and views. Where that role cannot be used (an owner that may not create roles, a server
that refuses the reader's login), a non-superuser owner runs in a read-only transaction instead, with a notice
saying so and what would fix it; a superuser owner is refused (a read-only transaction does not stop a superuser
from reading server files or running programs), and --write runs as it knowingly. With --write: the owner role,
as the application. Each statement goes through the extended protocol as a prepared statement, so
`COMMIT; DELETE ...` cannot smuggle a second command out of its transaction."""

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


@dataclass(frozen=True)
class SqlLogin:
    """Who `kaizen sql` runs as and how it connects: `conninfo` is a libpq URL without the password, which travels
    apart (PGPASSWORD for psql, so it never shows in a process list). `notice` is one line for the person when the
    session is read-only without the reader role."""

    conninfo: str
    password: str | None
    role: str
    read_only: bool
    options: str = ""
    notice: str | None = None

    def connect(self):
        import psycopg

        extra = {"password": self.password} if self.password else {}
        return psycopg.connect(self.conninfo, autocommit=True, options=self.options, connect_timeout=10,
                               application_name="kaizen-sql", **extra)

    def environment(self) -> dict[str, str]:
        """What psql needs beside `conninfo` (its PGOPTIONS add to any already set)."""
        env = {"PGOPTIONS": self.options} if self.options else {}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def _option(name: str, value: str) -> str:
    return f"-c {name}=" + value.replace("\\", "\\\\").replace(" ", "\\ ")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def sql_login(store: Store, *, write: bool = False) -> SqlLogin:
    """The login of a `kaizen sql` session (raises SqlError when a read-only one cannot be had safely)."""
    from sqlalchemy.engine import make_url

    from .roles import inspect_reader, quote_ident

    owner_url = make_url(store.url).set(drivername="postgresql")
    password = owner_url.password
    with store.engine.connect() as conn:
        owner, superuser, schema = conn.execute(sa.text(
            "SELECT current_user, rolsuper, current_schema() FROM pg_roles WHERE rolname = current_user")).one()
        reader = None if write else inspect_reader(conn)
    owner_conninfo = owner_url.set(password=None).render_as_string(hide_password=False)
    if write:
        return SqlLogin(owner_conninfo, password, owner, read_only=False)
    read_only = _option("default_transaction_read_only", "on")
    if reader is not None and reader.ready:
        login = SqlLogin(owner_url.set(username=reader.role, password=None).render_as_string(hide_password=False),
                         reader.password, reader.role, read_only=True,
                         options=f"{read_only} {_option('search_path', quote_ident(schema))}")
        import psycopg

        try:
            login.connect().close()
            return login
        except psycopg.OperationalError as exc:
            problem, fix = f"could not log in as the read-only role {reader.role} ({_first_line(exc)})", None
    elif reader is None:
        problem, fix = "this database has no read-only role", None
    else:
        problem, fix = reader.problem, reader.fix
    if superuser:
        raise SqlError(f"{problem}; without it `kaizen sql` would read as the superuser {owner}, whom a read-only "
                       f"transaction does not keep from server files and programs, so it refuses: use --write to "
                       f"run as {owner} knowingly" + (f"; {fix}" if fix else ""))
    return SqlLogin(owner_conninfo, password, owner, read_only=True, options=read_only,
                    notice=f"{problem}, so this session runs as {owner} in a read-only transaction"
                           + (f"; {fix}" if fix else ""))


class SqlConsole:
    """One `kaizen sql` session: one connection, each statement in its own transaction."""

    def __init__(self, login: SqlLogin):
        self.login = login
        self._conn = None

    def __enter__(self) -> "SqlConsole":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def run(self, statement: str, *, max_rows: int = 10000) -> SqlResult:
        """Execute exactly one statement; read-only sessions in a READ ONLY transaction as well."""
        import psycopg

        if not statement.strip():
            raise SqlError("no SQL statement given")
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self.login.connect()
            with self._conn.transaction():
                if self.login.read_only:
                    self._conn.execute("SET TRANSACTION READ ONLY")
                cur = self._conn.cursor()
                cur.execute(statement, prepare=True)
                columns = [d.name for d in cur.description] if cur.description else []
                rows = cur.fetchmany(max_rows) if cur.description else []
                status = cur.statusmessage or ""
        except psycopg.errors.ReadOnlySqlTransaction:
            raise SqlError(
                "this statement writes to the database; `kaizen sql` is read-only unless you add --write"
            ) from None
        except psycopg.Error as exc:
            message = (exc.diag.message_primary if getattr(exc, "diag", None) else None) or _first_line(exc)
            if "multiple commands" in message:
                message = "give one statement at a time"
            elif isinstance(exc, psycopg.errors.InsufficientPrivilege) and self.login.read_only:
                message += (f" (`kaizen sql` reads as the read-only role {self.login.role}, which may only read "
                            "Kaizen's tables and views; --write runs as the owner)")
            raise SqlError(message) from None
        return SqlResult(columns, [tuple(r) for r in rows], status)


def run_sql(store: Store, statement: str, *, write: bool = False, max_rows: int = 10000) -> SqlResult:
    """One statement in a session of its own (`kaizen sql STATEMENT`)."""
    with SqlConsole(sql_login(store, write=write)) as console:
        return console.run(statement, max_rows=max_rows)


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
